"""Version numbers of new migrations (index advice, the hardening plan): after the highest version a target has,
applied or baselined (its history table), pending (its migrations folder) or already written for review, spelled in
the target's own style: ``V021__`` after ``V020__`` (zero padding kept), ``V9__`` after ``V8__``, ``V1.3__`` after
``V1.2__``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.migrate.files import MigrationError, Version

_FILE_VERSION = re.compile(r"^V(\d+(?:[._]\d+)*)__.+\.sql$")


class HistoryUnreadable(DbopsError):
    """The target's migration history cannot be read, so a new migration cannot be numbered safely."""


def folder_versions(*folders: Path | None) -> list[str]:
    """The versions of the ``V<version>__*.sql`` files under ``folders`` (recursively, as Flyway finds them),
    spelled as the files spell them."""
    out = []
    for folder in folders:
        if folder and Path(folder).is_dir():
            for path in Path(folder).rglob("V*__*.sql"):
                match = _FILE_VERSION.match(path.name)
                if match:
                    out.append(match.group(1))
    return out


def history_versions(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """Every version the history table records (applied, failed or baseline rows), as written; none when the table
    does not exist."""
    ident = sql.Identifier(schema, table)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ident.as_string(conn),)).fetchone()
    if not exists or not exists[0]:
        return []
    try:
        rows = conn.execute(sql.SQL("SELECT version FROM {} WHERE version IS NOT NULL").format(ident)).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise HistoryUnreadable(f"cannot read the migration history {schema}.{table} to number the review migration",
                                f"grant SELECT on {schema}.{table} to the role dbops connects as") from exc
    return [str(r[0]).strip() for r in rows]


def _parse(text: str) -> Version | None:
    try:
        return Version.parse(text)
    except MigrationError:
        return None


def next_version(versions: Iterable[str]) -> str:
    """The version after the highest of ``versions``, in their style: its last part plus one, zero-padded as wide
    as the padded versions of the same shape are (``020`` -> ``021``, ``8`` -> ``9``, ``1.2`` -> ``1.3``,
    ``099`` -> ``100``); ``1`` when there is none."""
    parsed = [(v, text) for text in versions if (v := _parse(text)) is not None]
    if not parsed:
        return "1"
    _, text = max(parsed, key=lambda p: (p[0], len(p[1])))  # of equal versions, the spelling with padding
    parts = re.split(r"([._])", text)
    shape = len(parts)
    padded = [len(re.split(r"[._]", t)[-1]) for _, t in parsed
              if len(re.split(r"([._])", t)) == shape and re.split(r"[._]", t)[-1].startswith("0")]
    width = max([len(parts[-1]) if parts[-1].startswith("0") else 0, *padded])
    parts[-1] = str(int(parts[-1]) + 1).zfill(width)
    return "".join(parts)
