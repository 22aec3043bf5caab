"""Connections to the managed PostgreSQL, with failures turned into one clear, redacted line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from dbops.errors import ConfigError, ConnectionFailed
from dbops.redact import redact, redact_url, register_secret

CONNECT_TIMEOUT_S = 10


def check_url(url: str) -> str:
    """Validate a PostgreSQL URL up front so a typo gives a precise message rather than a libpq riddle."""
    if not url or not url.strip():
        raise ConfigError("the database URL is empty", "set DBOPS_DATABASE_URL=postgresql://user@host:port/dbname")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"malformed database URL {redact_url(url)}: {exc}", "fix the port or quoting") from exc
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"database URL {redact_url(url)} does not start with postgresql://",
            "use postgresql://user:password@host:port/dbname",
        )
    if parts.password:
        register_secret(parts.password)
    return url


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password (safe on a command line) and the password (for PGPASSWORD)."""
    from urllib.parse import unquote, urlunsplit

    parts = urlsplit(check_url(url))
    if parts.password is None:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    bare = urlunsplit((parts.scheme, f"{user}@{netloc[1]}", parts.path, parts.query, parts.fragment))
    return bare, unquote(parts.password)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_name(url: str) -> str:
    path = urlsplit(url).path.lstrip("/")
    return path or (urlsplit(url).username or "postgres")


def describe_failure(url: str, exc: Exception) -> ConnectionFailed:
    """Map libpq's message to a cause and a fix."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    lowered = message.lower()
    where = redact_url(url)
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        fix = "check the user and password in DBOPS_DATABASE_URL (or the embedded server's password file)"
    elif "connection refused" in lowered or "no such file or directory" in lowered or "timeout" in lowered:
        fix = "is the server running? start it with `dbops db up`, or fix host/port in DBOPS_DATABASE_URL"
    elif "does not exist" in lowered and "database" in lowered:
        fix = "create the database or fix its name in the URL (`dbops db up` creates the embedded ones)"
    elif "could not translate host name" in lowered:
        fix = "fix the host name in DBOPS_DATABASE_URL"
    else:
        fix = "check DBOPS_DATABASE_URL and that the server accepts connections"
    return ConnectionFailed(f"cannot connect to {where}: {message}", fix)


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg 3 connection; every failure becomes a :class:`ConnectionFailed`."""
    check_url(url)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    kwargs.setdefault("application_name", "dbops")
    try:
        return psycopg.connect(url, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise describe_failure(url, exc) from exc


@contextmanager
def connection(url: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def ensure_database(server_url: str, name: str, owner: str | None = None) -> bool:
    """Create database ``name`` on the server of ``server_url`` if missing; return True when created now."""
    with connection(with_database(server_url, "postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
        conn.execute(stmt)
        return True


def drop_database(server_url: str, name: str) -> None:
    with connection(with_database(server_url, "postgres")) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]


def server_major(url: str) -> int:
    with connection(url) as conn:
        return server_version_num(conn) // 10000
