"""Per-table and per-index health of the managed database: wraparound (per table, TOAST included, and multixact),
sequences, invalid / duplicate / unused indexes, bloat estimates, dead tuples, vacuum and analyze age, rows in
DEFAULT partitions.

Read from the catalog and the statistics views only: no user table is scanned, but for the DEFAULT partitions, each
read with a LIMIT. One query per figure group (no per-table round trip), so a database of thousands of tables
samples in one go. Nothing here waits on a lock another session holds: sizes come from ``pg_class.relpages`` (as of
the last VACUUM, ANALYZE or CREATE INDEX), not from ``pg_relation_size()``, and index expressions and predicates are
compared as stored node trees, not through ``pg_get_expr()`` / ``pg_get_indexdef()``: those lock the table, and the
sampling session gives up on a lock after 100 ms, so a single ``ACCESS EXCLUSIVE`` (a migration, VACUUM FULL, an
ATTACH PARTITION) would lose the sample. Sequences and DEFAULT partitions, which must be read, are skipped while
``pg_locks`` shows another session holding them in a blocking mode (see below). A
group whose query is cancelled (lock or statement timeout) or refused (privileges) is left out of that sample, its
figures' details saying why; every other group is still sampled, and the database is not reported down for it.

Every figure is in every sample (0 when nothing qualifies): one is missing only when it could not be sampled, its
detail saying why. ``details[figure]`` names the worst offenders (at most 3, schema-qualified, redacted).

Choices and limits:

- Wraparound: ``relkind`` r, m and t of every schema, catalogs included; a TOAST table is named after its owner with
  "(TOAST)". Other sessions' temporary tables count too (autovacuum cannot vacuum them).
- ``freeze_max_age_headroom``: ``autovacuum_freeze_max_age`` of the table as autovacuum applies it: the table's
  reloption can only lower the server's (``Min`` in autovacuum.c), and a TOAST table without reloptions of its own
  uses its owner's. Negative when the anti-wraparound vacuum is overdue.
- Sequences: the range of a sequence owned by a column (serial, identity: ``pg_depend`` 'a' / 'i') ends at the
  column type's limit when that is nearer (int2, int4); a sequence only used by a ``DEFAULT nextval()`` without
  OWNED BY is judged by its own range. The used fraction is measured from the range's start (``min_value`` going up,
  ``max_value`` going down), so a sequence started near its end shows how little is left. Cycling sequences count
  too (their column may not take the values again). A sequence never used (or set with ``setval(.., false)``) is 0.
  A sequence the sampling role may not read (no SELECT or USAGE; an unlogged one on a standby) is counted in
  ``sequences_unreadable`` instead (``pg_sequences`` shows both unread and unreadable ones as NULL: the privilege
  check tells them apart). Reading a sequence locks it until the end of the statement, as ``pg_sequences`` does.
- Duplicate indexes: key columns (or expressions), operator classes and collations of one index are a leading prefix
  of another's on the same table, with the same access method and predicate, and its INCLUDE columns are among the
  other's columns. A unique or constraint index counts only when the other has exactly the same keys and is unique
  too; of two identical ones the constraint's, then the unique, then the older index is kept. Invalid indexes are
  left to ``invalid_indexes``. Sort order (DESC, NULLS FIRST) is ignored.
- Unused indexes: ``idx_scan`` <= 50 since the statistics reset (``pg_stat_user_indexes``: user schemas), not
  unique, not backing a PK / UNIQUE / EXCLUDE constraint, and not the only (non-partial) index whose leading columns
  are a foreign key's columns. Right after a statistics reset every index looks unused: the target's ``for: 7d``
  is there for that. Indexes of partitioned tables themselves have no scan counts and are left out (their partitions'
  indexes are judged).
- Bloat: an estimate, not a measurement (pgstattuple reads every page; this reads the statistics). Expected size =
  rows (``reltuples``) x the average tuple (line pointer + tuple header with null bitmap, then each column's
  ``avg_width`` weighted by ``1 - null_frac`` with its type's alignment; short varlenas unaligned; MAXALIGN 8) packed
  to the fillfactor in pages of ``block_size`` (page header 24 bytes; B-tree special space 16 bytes, leaf fillfactor
  90 unless set, plus internal pages and the metapage). Bloat = pages beyond that. Limits: relations under 10 MB are
  0; the main fork only (TOAST and free-space-map not counted); ``avg_width`` and ``reltuples`` are only as fresh as
  the last ANALYZE and ``relpages`` as the last VACUUM / ANALYZE / CREATE INDEX (a table loaded and never analyzed
  has ``relpages`` 0 and is not seen); the alignment of a column after a NULL is approximated; B-tree deduplication
  (PostgreSQL 13+) and suffix truncation make real indexes smaller than the estimate, so they under-report;
  non-B-tree indexes are not estimated. A table (or index) of 10 MB or more whose columns have no statistics
  (never analyzed, or columns the role may not read) is skipped and its table counted in
  ``bloat_unestimated_tables``, unless the columns without statistics are of fixed width (taken at their width,
  never NULL).
- Vacuum and analyze age: ordinary tables and materialized views of the user schemas with rows (``n_live_tup`` or
  ``reltuples`` > 0), temporary ones left out; partitioned tables are left out (VACUUM does nothing to them and
  autovacuum never analyzes them). A table never vacuumed counts from the database's statistics reset, else the
  server's start.
- DEFAULT partitions: ``count(*)`` of at most 10,001 rows each, the partitions the role may read (the others are
  named in the detail); a default partition that is itself partitioned also counts the rows of its own default. When
  another session holds one ACCESS EXCLUSIVE (an ATTACH PARTITION checking it, a TRUNCATE), counting would wait: the
  figure is left out of that sample instead of showing a false 0. A sequence another session holds locked (ALTER
  SEQUENCE, a DROP in an open transaction) would make reading it wait as well: it is counted as unreadable for
  that sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbops.health.figures import Figures
from dbops.redact import redact

WRAPAROUND_LIMIT = 2**31
BLOAT_MIN_BYTES = 10 * 1024 * 1024
DEAD_TUPLES_MIN = 10_000
UNUSED_MAX_SCANS = 50
SEQUENCE_NEAR = 0.9
DEFAULT_PARTITION_CAP = 10_001
DETAIL_MAX = 3

TABLE_METRICS: dict[str, str] = {
    "table_wraparound_transactions_left": "transactions left before the oldest table (TOAST included) reaches the"
                                          " wraparound limit (2^31 - max age(relfrozenxid))",
    "multixact_wraparound_left": "multixact IDs left before multixact wraparound (2^31 - max mxid_age of the database"
                                 " and its tables)",
    "freeze_max_age_headroom": "transactions left before the nearest table reaches its autovacuum_freeze_max_age"
                               " (an anti-wraparound vacuum)",
    "sequence_used_ratio_max": "largest used fraction of a sequence's range (up to its column type's limit)",
    "sequences_near_exhaustion": "sequences that have used more than 90 % of their range",
    "sequences_unreadable": "sequences the sampling role may not read (no SELECT or USAGE), or another session"
                            " holds locked",
    "invalid_indexes": "indexes that are INVALID (a failed CREATE INDEX CONCURRENTLY or REINDEX)",
    "duplicate_indexes": "indexes whose leading columns, method and predicate another index of the table covers",
    "unused_indexes": "non-unique indexes no constraint or foreign key needs, scanned at most 50 times since the"
                      " statistics reset",
    "table_bloat_ratio_max": "largest estimated bloat share of a table of 10 MB or more",
    "index_bloat_ratio_max": "largest estimated bloat share of a B-tree index of 10 MB or more",
    "table_bloat_bytes": "estimated bloat of the tables of 10 MB or more, in bytes",
    "index_bloat_bytes": "estimated bloat of the B-tree indexes of 10 MB or more, in bytes",
    "bloat_unestimated_tables": "tables of 10 MB or more (or with an index of 10 MB or more) without the statistics"
                                " a bloat estimate needs",
    "dead_tuple_ratio_max": "largest n_dead_tup / (n_live_tup + n_dead_tup) of a table with more than 10,000 dead"
                            " tuples",
    "vacuum_age_seconds_max": "seconds since the least recently vacuumed table with rows was vacuumed",
    "analyze_age_seconds_max": "seconds since the least recently analyzed table with rows was analyzed",
    "default_partition_rows": "rows in DEFAULT partitions (each counted up to 10,001)",
}

# A relation's qualified name; a TOAST table by its owner's name.
_WRAPAROUND_SQL = """
WITH rel AS (
  SELECT format('%s.%s', n.nspname, coalesce(o.relname, c.relname))
           || CASE WHEN c.relkind = 't' THEN ' (TOAST)' ELSE '' END AS name,
         age(c.relfrozenxid)::bigint AS xid_age,
         mxid_age(c.relminmxid)::bigint AS mxid_age,
         least(current_setting('autovacuum_freeze_max_age')::bigint,
               (SELECT option_value::bigint
                  FROM pg_options_to_table(CASE WHEN c.relkind = 't' AND c.reloptions IS NULL THEN o.reloptions
                                                ELSE c.reloptions END)
                 WHERE option_name = 'autovacuum_freeze_max_age')) AS freeze_max_age
  FROM pg_class c
  LEFT JOIN pg_class o ON c.relkind = 't' AND o.reltoastrelid = c.oid
  JOIN pg_namespace n ON n.oid = coalesce(o.relnamespace, c.relnamespace)
  WHERE c.relkind IN ('r', 'm', 't')
)
SELECT
  (SELECT mxid_age(datminmxid)::bigint FROM pg_database WHERE datname = current_database()) AS db_mxid_age,
  current_database() AS db,
  (SELECT json_agg(x) FROM (SELECT name, xid_age FROM rel ORDER BY xid_age DESC, name LIMIT 3) x) AS by_xid,
  (SELECT json_agg(x) FROM (SELECT name, mxid_age FROM rel ORDER BY mxid_age DESC, name LIMIT 3) x) AS by_mxid,
  (SELECT json_agg(x) FROM (SELECT name, xid_age, freeze_max_age, freeze_max_age - xid_age AS headroom FROM rel
                            ORDER BY freeze_max_age - xid_age, name LIMIT 3) x) AS by_headroom
"""

# Relations another session holds (or waits for) in a mode that blocks reading a sequence (RowExclusiveLock).
_SEQUENCES_SQL = """
WITH locked AS MATERIALIZED (
  SELECT DISTINCT l.relation FROM pg_locks l
  WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
)
SELECT format('%s.%s', n.nspname, c.relname) AS name,
       s.seqmin, s.seqmax, s.seqincrement,
       r.readable, p.locked,
       CASE WHEN r.readable THEN pg_sequence_last_value(c.oid) END AS last_value,
       col.name AS column_name, col.type_name, col.type_oid
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
  SELECT coalesce(has_sequence_privilege(c.oid, 'SELECT,USAGE'), false)
         AND (c.relpersistence <> 'u' OR NOT pg_is_in_recovery()) AS allowed,
         c.oid IN (SELECT relation FROM locked) AS locked) p
CROSS JOIN LATERAL (SELECT p.allowed AND NOT p.locked AS readable) r
LEFT JOIN LATERAL (
  SELECT format('%s.%s.%s', tn.nspname, t.relname, a.attname) AS name,
         format_type(a.atttypid, a.atttypmod) AS type_name, a.atttypid::bigint AS type_oid
  FROM pg_depend d
  JOIN pg_class t ON t.oid = d.refobjid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
    AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
  LIMIT 1) col ON true
WHERE c.relkind = 'S' AND NOT pg_is_other_temp_schema(c.relnamespace)
"""

# Every valid index of the user schemas, and every invalid index of any schema ("system": catalogs, TOAST, temporary).
# Expressions and predicates are compared as stored node trees without their (textual) locations: pg_get_expr() and
# pg_get_indexdef() lock the table, which a migration holding ACCESS EXCLUSIVE would make time out.
_INDEXES_SQL = """
WITH idx AS (
  SELECT i.indexrelid::bigint AS oid, i.indrelid::bigint AS table_oid,
         format('%s.%s', n.nspname, ic.relname) AS name, format('%s.%s', n.nspname, tc.relname) AS table_name,
         ic.relam::bigint AS am, i.indisvalid AND i.indisready AS valid, i.indisunique AS is_unique,
         i.indnkeyatts AS nkey,
         (i.indkey::int2[])::int[] AS attnums,
         (i.indclass::oid[])::bigint[] AS opclasses,
         (i.indcollation::oid[])::bigint[] AS collations,
         regexp_replace(i.indexprs::text, ' :location -?[0-9]+', '', 'g') AS expressions,
         regexp_replace(i.indpred::text, ' :location -?[0-9]+', '', 'g') AS predicate,
         EXISTS (SELECT 1 FROM pg_constraint k
                 WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
           AS backs_constraint,
         ic.relpages::bigint * current_setting('block_size')::bigint AS bytes,
         s.idx_scan,
         n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname LIKE 'pg\\_toast%'
           OR n.nspname LIKE 'pg\\_temp%' AS system
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_class tc ON tc.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = tc.relnamespace
  LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
)
SELECT * FROM idx WHERE NOT valid OR NOT system
"""

_FOREIGN_KEYS_SQL = """
SELECT k.conrelid::bigint AS table_oid, (k.conkey::int2[])::int[] AS columns
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""

# Tables and B-tree indexes of 10 MB or more, with what the estimate needs of each column, in attnum order.
_BLOAT_SQL = """
WITH bs AS (SELECT current_setting('block_size')::bigint AS block_size)
SELECT 'table' AS kind, format('%%s.%%s', n.nspname, c.relname) AS name,
       format('%%s.%%s', n.nspname, c.relname) AS table_name, c.relpages::bigint AS pages,
       c.reltuples::float8 AS tuples, c.relnatts::int AS natts,
       coalesce((SELECT option_value::int FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'fillfactor'), 100) AS fillfactor,
       (SELECT json_agg(json_build_object('width', s.avg_width, 'null_frac', s.null_frac, 'len', t.typlen,
                                          'align', t.typalign) ORDER BY a.attnum)
          FROM pg_attribute a
          JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                              AND NOT s.inherited
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN bs
WHERE c.relkind IN ('r', 'm') AND c.relpages::bigint * bs.block_size >= %(min_bytes)s
  AND NOT pg_is_other_temp_schema(c.relnamespace)
UNION ALL
SELECT 'index', format('%%s.%%s', n.nspname, ic.relname), format('%%s.%%s', n.nspname, tc.relname),
       ic.relpages::bigint, ic.reltuples::float8,
       i.indnatts::int,
       coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions)
                 WHERE option_name = 'fillfactor'), 90),
       (SELECT json_agg(json_build_object('width', s.avg_width, 'null_frac', s.null_frac, 'len', t.typlen,
                                          'align', t.typalign) ORDER BY ia.attnum)
          FROM pg_attribute ia
          JOIN pg_type t ON t.oid = ia.atttypid
          LEFT JOIN pg_attribute ta ON ta.attrelid = i.indrelid AND ta.attnum = (i.indkey::int2[])[ia.attnum - 1]
          LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND NOT s.inherited
               AND ((ta.attname IS NOT NULL AND s.tablename = tc.relname AND s.attname = ta.attname)
                    OR (ta.attname IS NULL AND s.tablename = ic.relname AND s.attname = ia.attname))
          WHERE ia.attrelid = i.indexrelid AND ia.attnum > 0)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = tc.relnamespace
JOIN pg_am am ON am.oid = ic.relam
CROSS JOIN bs
WHERE am.amname = 'btree' AND ic.relkind = 'i' AND i.indisvalid
  AND ic.relpages::bigint * bs.block_size >= %(min_bytes)s AND NOT pg_is_other_temp_schema(tc.relnamespace)
"""

_VACUUM_SQL = """
WITH t AS (
  SELECT format('%%s.%%s', s.schemaname, s.relname) AS name, s.n_live_tup, s.n_dead_tup,
         extract(epoch FROM now() - coalesce(greatest(s.last_vacuum, s.last_autovacuum), b.since))::float8
           AS vacuum_age,
         greatest(s.last_vacuum, s.last_autovacuum) IS NULL AS never_vacuumed,
         extract(epoch FROM now() - coalesce(greatest(s.last_analyze, s.last_autoanalyze), b.since))::float8
           AS analyze_age,
         greatest(s.last_analyze, s.last_autoanalyze) IS NULL AS never_analyzed,
         (s.n_live_tup > 0 OR c.reltuples > 0) AND c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AS has_rows
  FROM pg_stat_user_tables s
  JOIN pg_class c ON c.oid = s.relid
  CROSS JOIN (SELECT coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                              pg_postmaster_start_time()) AS since) b
)
SELECT
  (SELECT json_agg(x) FROM (
     SELECT name, n_dead_tup, n_live_tup, n_dead_tup::float8 / (n_live_tup + n_dead_tup) AS ratio FROM t
     WHERE n_dead_tup > %(dead_min)s ORDER BY 4 DESC, name LIMIT 3) x) AS dead,
  (SELECT json_agg(x) FROM (SELECT name, vacuum_age AS age, never_vacuumed AS never FROM t WHERE has_rows
                            ORDER BY vacuum_age DESC, name LIMIT 3) x) AS vacuum,
  (SELECT json_agg(x) FROM (SELECT name, analyze_age AS age, never_analyzed AS never FROM t WHERE has_rows
                            ORDER BY analyze_age DESC, name LIMIT 3) x) AS analyze
"""

_DEFAULT_PARTITIONS_SQL = """
SELECT d.oid::bigint AS oid, dn.nspname AS schema, d.relname AS relname,
       format('%s.%s', dn.nspname, d.relname) AS name, format('%s.%s', pn.nspname, p.relname) AS parent,
       coalesce(has_table_privilege(d.oid, 'SELECT'), false) AS allowed,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'relation' AND l.relation = d.oid AND l.mode = 'AccessExclusiveLock'
                 AND l.pid <> pg_backend_pid()
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS locked
FROM pg_partitioned_table pt
JOIN pg_class p ON p.oid = pt.partrelid
JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class d ON d.oid = pt.partdefid
JOIN pg_namespace dn ON dn.oid = d.relnamespace
WHERE pt.partdefid <> 0 AND NOT pg_is_other_temp_schema(d.relnamespace)
ORDER BY 4
"""

# Column types whose range ends before a bigint sequence's: int2 and int4 (by type OID).
_TYPE_RANGE = {21: (-(2**15), 2**15 - 1), 23: (-(2**31), 2**31 - 1)}
# Errors that mean "not this time" (a lock or statement timeout, a privilege, a relation dropped meanwhile), not
# "the database is down": the group is left out of this sample.
_SKIPPABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege,
              psycopg.errors.UndefinedTable, psycopg.errors.ObjectNotInPrerequisiteState)

_ALIGN = {"c": 1, "s": 2, "i": 4, "d": 8}
MAXALIGN = 8
PAGE_HEADER = 24
BTREE_SPECIAL = 16
HEAP_TUPLE_HEADER = 23
INDEX_TUPLE_HEADER = 8
INDEX_NULL_BITMAP = 4
LINE_POINTER = 4
MAX_HEAP_TUPLES_PER_PAGE_DIVISOR = MAXALIGN * 3 + LINE_POINTER  # MaxHeapTuplesPerPage: MAXALIGN(header) + pointer
SHORT_VARLENA_MAX = 126  # a varlena this short gets a 1-byte header and no alignment


def table_figures(conn: psycopg.Connection[Any]) -> Figures:
    """All the per-table and per-index figures of the database ``conn`` is connected to (autocommit)."""
    figures = Figures()
    groups: list[tuple[tuple[str, ...], Callable[[psycopg.Connection[Any]], Figures]]] = [
        (("table_wraparound_transactions_left", "multixact_wraparound_left", "freeze_max_age_headroom"),
         _wraparound),
        (("sequence_used_ratio_max", "sequences_near_exhaustion", "sequences_unreadable"), _sequences),
        (("invalid_indexes", "duplicate_indexes", "unused_indexes"), _indexes),
        (("table_bloat_ratio_max", "index_bloat_ratio_max", "table_bloat_bytes", "index_bloat_bytes",
          "bloat_unestimated_tables"), _bloat),
        (("dead_tuple_ratio_max", "vacuum_age_seconds_max", "analyze_age_seconds_max"), _vacuum),
        (("default_partition_rows",), _default_partitions),
    ]
    for names, group in groups:
        try:
            found = group(conn)
        except _SKIPPABLE as exc:
            reason = redact(f"not sampled: {_first_line(exc)}")
            figures.details.update(dict.fromkeys(names, reason))
            continue
        figures.metrics.update(found.metrics)
        figures.details.update({k: redact(v) for k, v in found.details.items()})
    return figures


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rows(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _join(parts: list[str]) -> str:
    return "; ".join(parts[:DETAIL_MAX])


def _size(n: float) -> str:
    units = ["bytes", "kB", "MB", "GB", "TB"]
    while n >= 1024 and len(units) > 1:
        n /= 1024
        units.pop(0)
    return f"{n:,.0f} {units[0]}" if units[0] == "bytes" else f"{n:,.1f} {units[0]}"


# ---- wraparound ---------------------------------------------------------------------------------------------------

def _wraparound(conn: psycopg.Connection[Any]) -> Figures:
    [row] = _rows(conn, _WRAPAROUND_SQL)
    f = Figures()
    by_xid, by_mxid, by_headroom = row["by_xid"] or [], row["by_mxid"] or [], row["by_headroom"] or []
    oldest = by_xid[0]["xid_age"] if by_xid else 0
    f.metrics["table_wraparound_transactions_left"] = float(WRAPAROUND_LIMIT - oldest)
    if by_xid:
        f.details["table_wraparound_transactions_left"] = _join([f"{r['name']} age {r['xid_age']:,}" for r in by_xid])
    db_age = int(row["db_mxid_age"] or 0)
    table_age = by_mxid[0]["mxid_age"] if by_mxid else 0
    f.metrics["multixact_wraparound_left"] = float(WRAPAROUND_LIMIT - max(db_age, table_age))
    f.details["multixact_wraparound_left"] = _join(
        [f"database {row['db']} multixact age {db_age:,}"] + [f"{r['name']} multixact age {r['mxid_age']:,}"
                                                             for r in by_mxid[:2]])
    if by_headroom:
        f.metrics["freeze_max_age_headroom"] = float(by_headroom[0]["headroom"])
        f.details["freeze_max_age_headroom"] = _join(
            [f"{r['name']} {r['headroom']:,} left (age {r['xid_age']:,} of autovacuum_freeze_max_age"
             f" {r['freeze_max_age']:,})" for r in by_headroom])
    else:
        server = conn.execute("SELECT current_setting('autovacuum_freeze_max_age')::bigint").fetchone()
        f.metrics["freeze_max_age_headroom"] = float(server[0] if server else 0)
    return f


# ---- sequences ----------------------------------------------------------------------------------------------------

def sequence_used_ratio(minimum: int, maximum: int, increment: int, last: int | None,
                        column_type: int | None = None) -> float:
    """Used fraction of a sequence's range: the values given out (``last`` included) of all the values from its
    start side to the nearer of its own end and its column type's (``column_type``: the owning column's type OID)."""
    if last is None:
        return 0.0
    low, high = _TYPE_RANGE.get(column_type or 0, (minimum, maximum))
    if increment > 0:
        end = min(maximum, high)
        used, span = last - minimum + 1, end - minimum + 1
    else:
        end = max(minimum, low)
        used, span = maximum - last + 1, maximum - end + 1
    if span <= 0:
        return 1.0
    return min(max(used / span, 0.0), 1.0)


def _sequences(conn: psycopg.Connection[Any]) -> Figures:
    rows = _rows(conn, _SEQUENCES_SQL)
    f = Figures()
    judged, unreadable = [], []
    for r in rows:
        if not r["readable"]:
            unreadable.append(f"{r['name']} (locked by another session)" if r["locked"] else r["name"])
            continue
        ratio = sequence_used_ratio(r["seqmin"], r["seqmax"], r["seqincrement"], r["last_value"], r["type_oid"])
        judged.append((ratio, r))
    judged.sort(key=lambda x: (-x[0], x[1]["name"]))
    f.metrics["sequence_used_ratio_max"] = judged[0][0] if judged else 0.0
    near = [(ratio, r) for ratio, r in judged if ratio > SEQUENCE_NEAR]
    f.metrics["sequences_near_exhaustion"] = float(len(near))
    f.metrics["sequences_unreadable"] = float(len(unreadable))
    if judged and judged[0][0] > 0:
        f.details["sequence_used_ratio_max"] = _join([_sequence_text(ratio, r) for ratio, r in judged if ratio > 0])
    if near:
        f.details["sequences_near_exhaustion"] = _join([_sequence_text(ratio, r) for ratio, r in near])
    if unreadable:
        f.details["sequences_unreadable"] = _join(sorted(unreadable)) + (
            f" (+{len(unreadable) - DETAIL_MAX} more)" if len(unreadable) > DETAIL_MAX else "")
    return f


def _sequence_text(ratio: float, r: dict[str, Any]) -> str:
    column = f" -> {r['column_name']} ({r['type_name']})" if r["column_name"] else ""
    return f"{r['name']}{column} {ratio * 100:.0f} %"


# ---- indexes ------------------------------------------------------------------------------------------------------

@dataclass
class _Index:
    oid: int
    table_oid: int
    name: str
    table_name: str
    am: int
    valid: bool
    is_unique: bool
    nkey: int
    attnums: list[int]  # key columns then INCLUDE columns; 0 for an expression
    opclasses: list[int]
    collations: list[int]
    expressions: str | None  # the node trees of the expression columns, in order: "({...} {...})"
    predicate: str | None
    backs_constraint: bool
    bytes: int
    idx_scan: int | None
    system: bool

    @property
    def keys(self) -> tuple[tuple[int, int, int], ...]:
        n = self.nkey
        return tuple(zip(self.attnums[:n], self.opclasses[:n], self.collations[:n], strict=True))

    @property
    def included(self) -> set[int]:
        return set(self.attnums[self.nkey:])

    @property
    def rank(self) -> tuple[bool, bool, int]:
        """Of two identical indexes the higher rank is kept: a constraint's, then a unique one, then the older."""
        return (self.backs_constraint, self.is_unique, -self.oid)


def _expressions_prefix(small: str | None, big: str | None) -> bool:
    """True when the expression list ``small`` ("({a} {b})") is a leading part of ``big``'s."""
    if not small:
        return True
    if not big:
        return False
    head = small[:-1]  # without the closing parenthesis of the list
    return big == small or (big.startswith(head) and big[len(head):len(head) + 1] == " ")


def covers(big: _Index, small: _Index) -> bool:
    """True when ``big`` makes ``small`` redundant (see the module docstring)."""
    if big.oid == small.oid or big.table_oid != small.table_oid or big.am != small.am or not big.valid:
        return False
    if big.predicate != small.predicate:
        return False
    if big.keys[:len(small.keys)] != small.keys or not _expressions_prefix(small.expressions, big.expressions):
        return False
    if not small.included <= set(big.attnums):
        return False
    same = big.keys == small.keys and big.expressions == small.expressions
    if (small.is_unique or small.backs_constraint) and not (same and big.is_unique):
        return False
    if same and small.included == big.included:
        return small.rank < big.rank
    return True


def _indexes(conn: psycopg.Connection[Any]) -> Figures:
    indexes = [_Index(**r) for r in _rows(conn, _INDEXES_SQL)]
    foreign_keys = _rows(conn, _FOREIGN_KEYS_SQL)
    f = Figures()
    invalid = sorted((i for i in indexes if not i.valid), key=lambda i: i.name)
    f.metrics["invalid_indexes"] = float(len(invalid))
    if invalid:
        f.details["invalid_indexes"] = _join([f"{i.name} on {i.table_name}" for i in invalid])

    by_table: dict[int, list[_Index]] = {}
    for i in indexes:
        if i.valid and not i.system:
            by_table.setdefault(i.table_oid, []).append(i)
    duplicates: list[tuple[_Index, _Index]] = []
    for group in by_table.values():
        for small in group:
            cover = next((big for big in sorted(group, key=lambda b: b.rank, reverse=True) if covers(big, small)),
                         None)
            if cover is not None:
                duplicates.append((small, cover))
    duplicates.sort(key=lambda d: (-d[0].bytes, d[0].name))
    f.metrics["duplicate_indexes"] = float(len(duplicates))
    if duplicates:
        f.details["duplicate_indexes"] = _join([f"{a.name} covered by {b.name}" for a, b in duplicates])

    needed: set[int] = set()
    for fk in foreign_keys:
        columns = set(fk["columns"])
        serving = [i for i in by_table.get(fk["table_oid"], [])
                   if i.predicate is None and i.nkey >= len(columns) and set(i.attnums[:len(columns)]) == columns]
        if len(serving) == 1:
            needed.add(serving[0].oid)
    unused = sorted(
        (i for group in by_table.values() for i in group
         if not i.is_unique and not i.backs_constraint and i.oid not in needed
         and i.idx_scan is not None and i.idx_scan <= UNUSED_MAX_SCANS),
        key=lambda i: (-i.bytes, i.name))
    f.metrics["unused_indexes"] = float(len(unused))
    if unused:
        f.details["unused_indexes"] = _join([f"{i.name} on {i.table_name} ({i.idx_scan} scans, {_size(i.bytes)})"
                                             for i in unused])
    return f


# ---- bloat --------------------------------------------------------------------------------------------------------

def _maxalign(n: float) -> float:
    return math.ceil(n / MAXALIGN) * MAXALIGN


def _data_width(columns: list[dict[str, Any]]) -> float | None:
    """Expected width of a tuple's data: each column at its alignment, weighted by how often it is not NULL; None
    when a variable-width column has no statistics."""
    offset = 0.0
    for col in columns:
        width, null_frac, length = col["width"], col["null_frac"], col["len"]
        if width is None:
            if length is None or length < 0:
                return None
            width, null_frac = length, 0.0
        align = _ALIGN.get(col["align"], MAXALIGN)
        if length == -1 and width <= SHORT_VARLENA_MAX:
            align = 1
        placed = math.ceil(offset / align) * align + width
        offset = (1 - null_frac) * placed + null_frac * offset
    return offset


def estimated_pages(kind: str, tuples: float, natts: int, fillfactor: int, columns: list[dict[str, Any]],
                    block_size: int) -> float | None:
    """Pages the relation would take without bloat (see the module docstring); None when it cannot be estimated."""
    data = _data_width(columns)
    if data is None or not columns:
        return None
    has_nulls = any((c["null_frac"] or 0) > 0 for c in columns)
    tuples = max(tuples, 0.0)
    if kind == "table":
        header = _maxalign(HEAP_TUPLE_HEADER + (math.ceil(natts / 8) if has_nulls else 0))
        tuple_size = _maxalign(header + data) + LINE_POINTER
        usable = (block_size - PAGE_HEADER) - block_size * (100 - fillfactor) / 100
        per_page = max(min(math.floor(usable / tuple_size),
                           (block_size - PAGE_HEADER) // MAX_HEAP_TUPLES_PER_PAGE_DIVISOR), 1)
        return math.ceil(tuples / per_page)
    header = _maxalign(INDEX_TUPLE_HEADER + (INDEX_NULL_BITMAP if has_nulls else 0))
    tuple_size = _maxalign(header + data) + LINE_POINTER
    usable = (block_size - PAGE_HEADER - BTREE_SPECIAL) * fillfactor / 100
    per_page = max(math.floor(usable / tuple_size), 2)
    leaves = math.ceil(tuples / per_page)
    pages, level = leaves, leaves
    while level > 1:  # internal levels, their pages filled to 70 % (BTREE_NONLEAF_FILLFACTOR)
        level = math.ceil(level / max(math.floor((block_size - PAGE_HEADER - BTREE_SPECIAL) * 0.7 / tuple_size), 2))
        pages += level
    return pages + 1  # the metapage


def _bloat(conn: psycopg.Connection[Any]) -> Figures:
    block_size_row = conn.execute("SELECT current_setting('block_size')::int").fetchone()
    block_size = int(block_size_row[0]) if block_size_row else 8192
    f = Figures()
    found: dict[str, list[tuple[float, float, str]]] = {"table": [], "index": []}
    unestimated: set[str] = set()  # tables (an index without statistics names its table)
    for r in _rows(conn, _BLOAT_SQL, {"min_bytes": BLOAT_MIN_BYTES}):
        columns = r["columns"] or []
        expected = None
        if r["tuples"] is not None and r["tuples"] >= 0:
            expected = estimated_pages(r["kind"], r["tuples"], r["natts"], r["fillfactor"], columns, block_size)
        if expected is None:
            unestimated.add(r["table_name"])
            continue
        extra = max(r["pages"] - expected, 0)
        ratio = extra / r["pages"] if r["pages"] else 0.0
        found[r["kind"]].append((ratio, float(extra * block_size), r["name"]))
    for kind in ("table", "index"):
        rows = sorted(found[kind], key=lambda x: (-x[0], x[2]))
        f.metrics[f"{kind}_bloat_ratio_max"] = rows[0][0] if rows else 0.0
        f.metrics[f"{kind}_bloat_bytes"] = float(sum(b for _, b, _ in rows))
        worst = [f"{name} {ratio * 100:.0f} % ({_size(b)})" for ratio, b, name in rows if b > 0]
        if worst:
            f.details[f"{kind}_bloat_ratio_max"] = _join(worst)
            f.details[f"{kind}_bloat_bytes"] = _join(
                [f"{name} {_size(b)}" for _, b, name in sorted(rows, key=lambda x: -x[1]) if b > 0])
    f.metrics["bloat_unestimated_tables"] = float(len(unestimated))
    if unestimated:
        f.details["bloat_unestimated_tables"] = _join(sorted(unestimated)) + " (no statistics: ANALYZE it)"
    return f


# ---- vacuum, analyze, dead tuples ---------------------------------------------------------------------------------

def _vacuum(conn: psycopg.Connection[Any]) -> Figures:
    [row] = _rows(conn, _VACUUM_SQL, {"dead_min": DEAD_TUPLES_MIN})
    f = Figures()
    dead = row["dead"] or []
    f.metrics["dead_tuple_ratio_max"] = float(dead[0]["ratio"]) if dead else 0.0
    if dead:
        f.details["dead_tuple_ratio_max"] = _join(
            [f"{r['name']} {r['ratio'] * 100:.0f} % dead ({r['n_dead_tup']:,} dead, {r['n_live_tup']:,} live)"
             for r in dead])
    for figure, key, verb in (("vacuum_age_seconds_max", "vacuum", "vacuumed"),
                              ("analyze_age_seconds_max", "analyze", "analyzed")):
        rows = row[key] or []
        f.metrics[figure] = max(float(rows[0]["age"]), 0.0) if rows else 0.0
        if rows:
            f.details[figure] = _join(
                [f"{r['name']} never {verb} ({r['age']:,.0f} s since the statistics reset or server start)"
                 if r["never"] else f"{r['name']} {verb} {r['age']:,.0f} s ago" for r in rows])
    return f


# ---- DEFAULT partitions -------------------------------------------------------------------------------------------

def _default_partitions(conn: psycopg.Connection[Any]) -> Figures:
    """Rows of every DEFAULT partition. One another session holds ACCESS EXCLUSIVE (an ATTACH PARTITION checking
    it, a TRUNCATE) would make the count wait: then the figure is left out of this sample, rather than shown as 0."""
    partitions = _rows(conn, _DEFAULT_PARTITIONS_SQL)
    f = Figures()
    locked = [p["name"] for p in partitions if p["allowed"] and p["locked"]]
    if locked:
        f.details["default_partition_rows"] = f"not sampled: locked by another session: {_join(locked)}"
        return f
    readable = [p for p in partitions if p["allowed"]]
    counts: dict[int, int] = {}
    if readable:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::bigint, count(*) FROM (SELECT 1 FROM {} LIMIT {}) s").format(
                sql.Literal(p["oid"]), sql.Identifier(p["schema"], p["relname"]), sql.Literal(DEFAULT_PARTITION_CAP))
            for p in readable)
        counts = {int(oid): int(n) for oid, n in conn.execute(query).fetchall()}
    with_rows = sorted((p for p in readable if counts.get(p["oid"], 0) > 0),
                       key=lambda p: (-counts[p["oid"]], p["name"]))
    f.metrics["default_partition_rows"] = float(sum(counts.values()))
    parts = [f"{p['name']} (DEFAULT of {p['parent']}) "
             f"{'over ' if counts[p['oid']] >= DEFAULT_PARTITION_CAP else ''}{counts[p['oid']]:,} rows"
             for p in with_rows][:DETAIL_MAX]
    unread = [p["name"] for p in partitions if not p["allowed"]]
    if unread:
        parts.append(f"not readable by this role, not counted: {_join(unread)}")
    if parts:
        f.details["default_partition_rows"] = "; ".join(parts)
    return f
