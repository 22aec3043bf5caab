"""Step ``maintain``: what a database needs done to it every day to stay healthy, plain Python (no Dagster).

``partitions``: range partitions kept ahead of time, rows in DEFAULT partitions found and moved, old partitions
retired only when a verified backup covers them. ``matviews``: materialized views refreshed and their age known.
"""
