"""Query profile, table facts and index advice verified by measurement on a scratch copy.

Modules: ``statements`` (pg_stat_statements snapshots and deltas), ``plans`` (EXPLAIN and anti-patterns), ``tables``
(cache, vacuum, wraparound, sequences, bloat), ``indexes`` (unused, duplicate, unindexed foreign keys), ``candidates``
(indexes derived from the top queries with pglast), ``verify`` (build on a scratch copy and re-measure), ``review``
(migration files for review), ``report`` (the tables the CLI prints and Dagster shows).
"""
