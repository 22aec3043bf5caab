"""A throw-away login role for one load test run.

The migrations create the application roles without passwords, and changing ``dbops_app_rw``'s password would cut
off the real application. So each run creates ``dbops_loadtest_<random>``: a member of ``dbops_app_rw`` (same grants,
same row-level security, no superuser, no BYPASSRLS), with a random 256-bit password whose SCRAM verifier is computed
here, so the plain password never reaches the server or its logs. The role is dropped after the run, and every row it
audited is identifiable by ``changed_by``.

On a database dbops did not create (the operator's own scripts, the replay profile) there is no ``dbops_app_rw``: the
role is then a member of PostgreSQL's predefined ``pg_read_all_data`` (and ``pg_write_all_data`` when a script
writes), which read (write) every table without owning any, and without bypassing row-level security; it is given
CONNECT on the database itself (a database may have revoked it from PUBLIC), revoked again before the role is dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from dbops.errors import DbopsError
from dbops.pg.connect import connection
from dbops.redact import register_secret

APP_ROLE = "dbops_app_rw"
# PBKDF2 stretching protects guessable passwords; this one is 256 random bits, so the count adds no security and
# a low one lets 10,000 clients log in within seconds (each login costs the client `iterations` HMAC pairs).
SCRAM_ITERATIONS = 256


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL and PgBouncer store (RFC 5802/7677)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


@dataclass(frozen=True)
class LoadTestRole:
    name: str
    password: str
    verifier: str


@contextmanager
def loadtest_role(admin_url: str, member_of: str | tuple[str, ...] = APP_ROLE, *,
                  grant_connect: bool = False) -> Iterator[LoadTestRole]:
    """Create the run's login role (as a member of the app role, or of ``member_of``; with CONNECT on the database
    when ``grant_connect``) and drop it afterwards."""
    roles = (member_of,) if isinstance(member_of, str) else tuple(member_of)
    password = secrets.token_urlsafe(32)
    register_secret(password)
    expiry = datetime.now(UTC) + timedelta(days=1)  # a role left by a killed run cannot log in for long
    role = LoadTestRole(f"dbops_loadtest_{secrets.token_hex(4)}", password, scram_verifier(password))
    with connection(admin_url) as conn:
        for name in roles:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
            if not exists and name == APP_ROLE:
                raise DbopsError(f"role {name} does not exist", "run `dbops migrate` to create the reference roles")
            if not exists:
                raise DbopsError(f"role {name} does not exist", "the load test needs PostgreSQL 14 or later")
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT "
                                 "PASSWORD {} VALID UNTIL {} IN ROLE {}").format(
                sql.Identifier(role.name), sql.Literal(role.verifier), sql.Literal(expiry.isoformat()),
                sql.SQL(", ").join(sql.Identifier(name) for name in roles)))
        except Exception as exc:
            raise DbopsError(f"cannot create the load test role: {str(exc).splitlines()[0]}",
                             f"connect as a role with CREATEROLE and ADMIN on {', '.join(roles)} (or a superuser)"
                             ) from exc
        if grant_connect:
            try:
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(conn.info.dbname), sql.Identifier(role.name)))
            except Exception as exc:
                drop_role(admin_url, role.name)
                raise DbopsError(f"cannot let the load test role connect: {str(exc).splitlines()[0]}",
                                 "connect as the database's owner or a superuser") from exc
    try:
        yield role
    finally:
        drop_role(admin_url, role.name)


def drop_role(admin_url: str, name: str) -> None:
    with connection(admin_url) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(name)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
        for _ in range(50):
            row: Any = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [name]).fetchone()
            if not row[0]:
                break
            import time

            time.sleep(0.1)
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
