"""Restores and restore drills: prove a backup brings the data back, and measure how long it takes.

``verify`` proves every object of a backup before anything is touched; ``logical`` restores a pg_dump backup into a
database, ``physical`` a base backup chain into a data directory (with WAL replay to a point in time); ``drill`` does
either into a scratch copy, compares it with the backup and times it; ``cli`` is `dbops restore` and `dbops drill`.
"""
