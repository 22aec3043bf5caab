"""The application's statements as pg_stat_statements recorded them: read, filtered of dbops' own, and ranked.

Shared by the steps that replay production's own statements (the load test's ``replay`` profile, the migration
rehearsal's query check). Only this database's top-level statements that ran at least once; the roles a caller
excludes, the load test's own roles (``dbops_loadtest_*``) and roles dropped since are left out, and so is every
statement carrying a ``dbops:`` marker comment (each dbops step marks the queries it runs; PostgreSQL 18 drops a
statement's leading comments from the text it records, so a marker that must survive goes after the first keyword,
``SELECT /* dbops:x */ ...``). Texts are redacted as they are read: pg_stat_statements keeps utility statements
verbatim, password literals included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dbops.redact import redact

LOADTEST_ROLES = "dbops\\_loadtest\\_%"  # a LIKE pattern: every role a load test creates (and drops)
_MARKER = re.compile(r"(?:/\*|--)\s*dbops:")

_SUMMED = (
    "/* dbops:statements */ SELECT s.queryid::text, min(s.query), sum(s.calls)::bigint,"
    " sum(s.total_exec_time + s.total_plan_time)::float8, ''"
    " FROM pg_stat_statements(true) AS s JOIN pg_database AS d ON d.oid = s.dbid"
    " LEFT JOIN pg_roles AS r ON r.oid = s.userid"
    " WHERE d.datname = current_database() AND s.toplevel AND s.queryid IS NOT NULL AND s.calls > 0"
    "  AND r.rolname <> ALL(%s) AND r.rolname NOT LIKE %s"
    " GROUP BY s.queryid ORDER BY 3 DESC, 4 DESC"
)
_PER_ROLE = (
    "/* dbops:statements */ SELECT s.queryid::text, s.query, s.calls::bigint,"
    " (s.total_exec_time + s.total_plan_time)::float8, r.rolname::text"
    " FROM pg_stat_statements(true) AS s JOIN pg_database AS d ON d.oid = s.dbid"
    " JOIN pg_roles AS r ON r.oid = s.userid"
    " WHERE d.datname = current_database() AND s.toplevel AND s.queryid IS NOT NULL AND s.calls > 0"
    "  AND r.rolname <> ALL(%s) AND r.rolname NOT LIKE %s"
    " ORDER BY 3 DESC, 4 DESC"
)


@dataclass
class Candidate:
    """One statement of pg_stat_statements (summed over its roles, or of one ``role``)."""

    queryid: str
    query: str
    calls: int
    total_ms: float
    role: str = ""  # empty when summed over the roles that ran it

    @property
    def key(self) -> str:
        """Unique within one reading: the query id, with the role when read per role."""
        return f"{self.queryid}/{self.role}" if self.role else self.queryid


def has_marker(text: str) -> bool:
    """Whether ``text`` carries a ``dbops:`` marker comment (``/* dbops:... */`` or ``-- dbops:...``)."""
    return bool(_MARKER.search(text))


def top_statements(conn: psycopg.Connection[Any], exclude_roles: Sequence[str] = (), *,
                   per_role: bool = False) -> list[Candidate]:
    """Every application statement of this database in pg_stat_statements, most called first: summed over the
    roles that ran it, or one per (statement, role) with ``per_role``. Needs the extension in this database."""
    rows = conn.execute(_PER_ROLE if per_role else _SUMMED, [list(exclude_roles), LOADTEST_ROLES]).fetchall()
    out = []
    for queryid, text, calls, total, role in rows:
        if not text:
            continue
        clean = redact(text)
        if not has_marker(clean):
            out.append(Candidate(queryid, clean, int(calls), float(total), str(role or "")))
    return out


def rank(candidates: list[Candidate], limit: int) -> list[Candidate]:
    """The top ``limit`` by calls and by total time: each statement at its better rank of the two."""
    by_calls = {c.key: i for i, c in enumerate(sorted(candidates, key=lambda c: (-c.calls, -c.total_ms)))}
    by_time = {c.key: i for i, c in enumerate(sorted(candidates, key=lambda c: (-c.total_ms, -c.calls)))}
    ordered = sorted(candidates, key=lambda c: (min(by_calls[c.key], by_time[c.key]), by_calls[c.key]))
    return ordered[:limit]
