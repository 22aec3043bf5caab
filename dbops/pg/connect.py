"""Connections to the managed PostgreSQL, with failures turned into one clear, redacted line."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from dbops.errors import ConfigError, ConnectionFailed
from dbops.redact import MASK, redact, redact_url, register_secret

CONNECT_TIMEOUT_S = 10
SCHEMES = ("postgresql://", "postgres://")
# No "password:" in this text: redaction would take what follows for a password and mask the "%".
ENCODING_FIX = ("percent-encode special characters in the user name and the password (% as %25, @ as %40,"
                " / as %2F, ? as %3F, # as %23, & as %26, = as %3D)")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class PgUrl:
    """A PostgreSQL URL split the way libpq splits it, so what dbops reads is what libpq connects to.

    The raw (percent-encoded) pieces are kept to rebuild variants (another database, no password); ``values`` are
    libpq's own decoded keywords. The password is left out of ``repr`` and of :meth:`bare`.
    """

    scheme: str
    user_raw: str | None
    hostport: str
    database_raw: str | None
    params: tuple[tuple[str, str], ...]  # raw key/value pairs of the query string, password and dbname removed
    dbname_param: str | None  # a raw ``dbname=`` parameter (libpq lets it override the path)
    password: str | None = field(repr=False)
    values: Mapping[str, str] = field(repr=False)

    @property
    def user(self) -> str | None:
        return self.values.get("user")

    @property
    def host(self) -> str | None:
        return self.values.get("host")

    @property
    def port(self) -> int | None:
        first = (self.values.get("port") or "").split(",")[0]
        return int(first) if first else None

    @property
    def database(self) -> str | None:
        return self.values.get("dbname")

    def compose(self, *, password: str | None, database_raw: str | None = None, hostport: str | None = None) -> str:
        """The URL again, with ``password`` (None: none at all, in any form) and optionally another database or
        host."""
        userinfo = self.user_raw or ""
        if password is not None:
            userinfo += ":" + (password if password == MASK else quote(password, safe=""))
        auth = userinfo + "@" if userinfo or self.user_raw is not None else ""
        db = database_raw if database_raw is not None else self.database_raw
        params = list(self.params)
        if database_raw is None and self.dbname_param is not None:
            params.append(("dbname", self.dbname_param))
        out = f"{self.scheme}{auth}{self.hostport if hostport is None else hostport}"
        if db is not None:
            out += "/" + db
        if params:
            out += "?" + "&".join(f"{k}={v}" for k, v in params)
        return out

    def bare(self) -> str:
        """The URL without its password (neither ``user:password@`` nor ``?password=``): safe on a command line."""
        return self.compose(password=None)

    def full(self) -> str:
        return self.compose(password=self.password)

    def redacted(self) -> str:
        return self.compose(password=MASK if self.password is not None else None)

    def with_database(self, database: str) -> str:
        return self.compose(password=self.password, database_raw=quote(database, safe=""))

    def with_address(self, host: str, port: int) -> str:
        shown = f"[{host}]" if ":" in host else quote(host, safe="")
        return self.compose(password=self.password, hostport=f"{shown}:{port}")


def _malformed(url: str, why: str, fix: str = ENCODING_FIX) -> ConfigError:
    return ConfigError(f"malformed database URL {redact_url(url)}: {why}", fix)


def _libpq_reason(message: str, names_are_safe: bool = False) -> str:
    """libpq's complaint without the token it quotes (that token can be a piece of the password)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if first.startswith("invalid URI query parameter"):
        # It quotes a parameter name; after "password=a&b" that "name" is the rest of the password.
        return first if names_are_safe else "a parameter libpq does not know (or a password with an unencoded '&')"
    if first.startswith("extra key/value separator"):
        return "a parameter value contains an unencoded '='"
    if first.startswith("unexpected spaces"):
        return "it contains a space (write %20 in the user name or password; nowhere else may a space stand)"
    if "percent-encoded" in first:
        return "a '%' is not followed by two hex digits"
    if "port" in first:
        return "the port is not a number"
    return "libpq cannot read it"


def parse_url(url: str) -> PgUrl:
    """The one reader of PostgreSQL URLs in dbops: validates, registers the password with :mod:`dbops.redact`, and
    splits exactly like libpq (the user part ends at the first "@" before any "/"). Any problem is one
    :class:`ConfigError` line that shows no part of the password."""
    if not url or not url.strip():
        raise ConfigError("the database URL is empty", "set DBOPS_DATABASE_URL=postgresql://user@host:port/dbname")
    scheme = next((s for s in SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ConfigError(f"database URL {redact_url(url)} does not start with postgresql://",
                          "use postgresql://user:password@host:port/dbname")
    rest = url[len(scheme):]
    user_raw = password_raw = None
    stop = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=-1)
    if stop >= 0 and rest[stop] == "@":
        userinfo, rest = rest[:stop], rest[stop + 1:]
        user_raw, _, password_raw = userinfo.partition(":")
        if ":" not in userinfo:
            password_raw = None
        if password_raw is not None:
            register_secret(unquote(password_raw))
            register_secret(password_raw)
            if _BAD_PERCENT.search(password_raw):
                raise _malformed(url, "the password has a '%' not followed by two hex digits")
        if _BAD_PERCENT.search(user_raw):
            raise _malformed(url, "the user name has a '%' not followed by two hex digits")
    head, _, query = rest.partition("?")
    hostport, slash, database_raw = head.partition("/")
    if "@" in hostport:
        raise _malformed(url, "more than one '@' before the host")
    params: list[tuple[str, str]] = []
    dbname_param = None
    query_password = None
    for pair in query.split("&") if query else []:
        key, _, value = pair.partition("=")
        if key == "password":
            query_password = value
            register_secret(unquote(value))
            register_secret(value)
        elif key == "dbname":
            dbname_param = value
        else:
            params.append((key, value))
    for item in hostport.split(","):
        port = item.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in item.rsplit("]", 1)[-1] else ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise _malformed(url, "the port is not a number from 1 to 65535")  # never quoted: it may be password
    if query_password is not None and _BAD_PERCENT.search(query_password):
        raise _malformed(url, "the password parameter has a '%' not followed by two hex digits")
    try:
        values = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise _malformed(url, _libpq_reason(str(exc), names_are_safe=query_password is None)) from None
    password = values.get("password")
    register_secret(password)
    return PgUrl(scheme, user_raw, hostport, database_raw if slash else None, tuple(params), dbname_param,
                 password, values)


def check_url(url: str) -> str:
    """Validate a PostgreSQL URL up front so a typo gives a precise message rather than a libpq riddle."""
    parse_url(url)
    return url


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without any password (safe on a command line) and the password (for PGPASSWORD)."""
    parsed = parse_url(url)
    return parsed.bare(), parsed.password


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return parse_url(url).with_database(database)


def with_address(url: str, host: str, port: int) -> str:
    """The same URL (user, password, database, parameters) pointing at another server."""
    return parse_url(url).with_address(host, port)


def database_name(url: str) -> str:
    values = parse_url(url).values
    return values.get("dbname") or values.get("user") or "postgres"


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
    except psycopg.ProgrammingError as exc:  # libpq refused the conninfo: its text may quote the password
        raise _malformed(url, _libpq_reason(str(exc))) from None


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
