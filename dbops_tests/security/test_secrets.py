"""Secrets on real servers: a password with URL-special characters never reaches a command line, a malformed URL is
one line without the password, and `dbops db up` keeps its files private, its parents untouched and the ``postgres``
and ``dagster`` databases closed to PUBLIC."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
from psycopg import sql

from dbops.backup.keys import generate_key
from dbops.errors import ConfigError
from dbops.pg.connect import connection, database_name, parse_url, split_password, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.redact import redact
from dbops_tests.conftest import dbops_env, make_test_dir, run_dbops

SPECIAL = "p%w@d?x&y=z#"  # every character that means something in a URL


def special_password() -> str:
    return f"{SPECIAL}{uuid.uuid4().hex[:10]}"


def forms_of(password: str) -> list[str]:
    """Every way the password could show up: as is, percent-encoded, and its distinctive random tail."""
    return [password, quote(password, safe=""), quote(password), password[len(SPECIAL):]]


def test_one_parser_reads_what_libpq_reads_and_bare_urls_carry_no_password() -> None:
    password = special_password()
    encoded = quote(password, safe="")
    for url in (f"postgresql://app:{encoded}@db.example:6432/shop?sslmode=require",
                f"postgresql://app@db.example:6432/shop?sslmode=require&password={encoded}"):
        parsed = parse_url(url)
        assert (parsed.user, parsed.password, parsed.host, parsed.port) == ("app", password, "db.example", 6432)
        bare, secret = split_password(url)
        assert secret == password and bare == "postgresql://app@db.example:6432/shop?sslmode=require"
        assert parse_url(with_database(url, "other")).password == password
        assert database_name(with_database(url, "other db")) == "other db"
        assert not any(form in redact(url) for form in forms_of(password))


def _leaked(text: str, password: str) -> list[str]:
    return [form for form in forms_of(password) if form in text]


def test_a_backup_never_puts_the_password_on_a_command_line(pg_server: EmbeddedServer, server_url: str,
                                                            tmp_path: Path) -> None:
    """While pg_dump runs (held on a lock), no process on the machine shows the password in its command line."""
    role, password = f"secret_{uuid.uuid4().hex[:8]}", special_password()
    database = f"t_{uuid.uuid4().hex[:12]}"
    with connection(server_url) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    parts = parse_url(server_url)
    url = f"postgresql://{role}@{parts.hostport}/{database}?password={quote(password, safe='')}"
    try:
        with connection(url) as conn:
            conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 1000) AS g")
        env = dbops_env(pg_server, url, tmp_path, DBOPS_BACKUP_KEY=generate_key(),
                        DBOPS_BACKUP_DIR=str(tmp_path / "store"))
        result: dict[str, object] = {}
        with connection(with_database(server_url, database), autocommit=False) as blocker:
            blocker.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")  # pg_dump waits here, visible to ps
            thread = threading.Thread(target=lambda: result.update(done=run_dbops(["backup", "run"], env)))
            thread.start()
            seen: list[str] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not seen:
                seen = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline", "name"])
                        if p.info["name"] == "pg_dump" and database in " ".join(p.info["cmdline"] or [])]
                time.sleep(0.1)
            everything = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
            blocker.rollback()
        thread.join(timeout=300)
        assert seen, "pg_dump never showed up"
        assert "--dbname=" in seen[0] and role in seen[0], seen
        assert [line for line in everything if _leaked(line, password)] == []
        done = result["done"]
        assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
        assert _leaked(done.stdout + done.stderr, password) == []  # type: ignore[attr-defined]
    finally:
        with connection(server_url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("template", [
    "postgresql://app:{pw}%zz@127.0.0.1:{port}/db",     # a bare '%' (not followed by two hex digits)
    "postgresql://app:{pw}@x@127.0.0.1:{port}/db",      # an unencoded '@'
    "postgresql://app:{pw}/x@127.0.0.1:{port}/db",      # an unencoded '/'
    "postgresql://app@127.0.0.1:{port}/db?password={pw}&x=1",  # '&' splits the password parameter
    "postgresql://app@127.0.0.1:{port}/db?password={pw}=x",    # an unencoded '=' in it
])
def test_a_malformed_url_is_one_line_without_the_password(pg_server: EmbeddedServer, tmp_path: Path,
                                                          template: str) -> None:
    secret = f"Sekr{uuid.uuid4().hex[:12]}"
    url = template.format(pw=secret, port=pg_server.port)
    env = dbops_env(pg_server, url, tmp_path)
    done = run_dbops(["profile"], env, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output  # a configuration mistake (dbops config check exits 2 too)
    assert "Traceback" not in output and secret not in output and secret[4:] not in output, output
    assert len(done.stderr.strip().splitlines()) == 1 and "malformed database URL" in done.stderr, done.stderr
    assert "(% as %25, @ as %40" in done.stderr, done.stderr  # the fix itself survives redaction
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert secret not in str(caught.value)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _not_private(root: Path) -> list[str]:
    """Folders that are not 0700 and files that are not 0600 under ``root`` (sockets and symlinks aside)."""
    wrong = []
    for folder, _dirs, files in os.walk(root):
        if _mode(Path(folder)) != 0o700:
            wrong.append(f"{folder} {oct(_mode(Path(folder)))}")
        for name in files:
            path = Path(folder) / name
            kind = path.lstat().st_mode
            if stat.S_ISREG(kind) and _mode(path) != 0o600:
                wrong.append(f"{path} {oct(_mode(path))}")
    return wrong


def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DBOPS_DATABASE_URL", "DBOPS_DAGSTER_DATABASE_URL")}
    env.update(DBOPS_HOME=str(home), DBOPS_PG_PORT=str(free_port()), DAGSTER_TELEMETRY_DISABLED="1")
    return env


def test_db_up_keeps_files_private_parents_untouched_and_closes_postgres_and_dagster() -> None:
    parent = make_test_dir("home-parent")
    try:
        parent.chmod(0o755)  # a parent others may traverse, as /var/lib or a project folder usually is
        home = parent / "dbops-home"
        env = embedded_env(home)
        up = run_dbops(["db", "up"], env, timeout=300)
        try:
            assert up.returncode == 0, up.stderr
            assert _mode(parent) == 0o755  # never widened, never narrowed
            assert _not_private(home) == []
            server = EmbeddedServer(home, int(env["DBOPS_PG_PORT"]))
            with connection(server.url("postgres")) as conn:
                for db in ("postgres", "dagster"):
                    for privilege in ("CONNECT", "TEMPORARY"):
                        allowed = conn.execute("SELECT has_database_privilege('public', %s, %s)",
                                               (db, privilege)).fetchone()[0]
                        assert allowed is False, (db, privilege)
                name = f"nobody_{uuid.uuid4().hex[:6]}"
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
                try:  # an ordinary role has no way into them; dbops itself (the superuser) still has
                    assert conn.execute("SELECT has_database_privilege(%s, 'dagster', 'CONNECT')",
                                        (name,)).fetchone()[0] is False
                finally:
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
            with connection(server.url("dagster")) as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
            again = run_dbops(["db", "up"], env, timeout=120)  # the second run is harmless
            assert again.returncode == 0 and "already running" in again.stdout, again.stderr
        finally:
            run_dbops(["db", "down"], env, timeout=120)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another OS user")
def test_db_up_refuses_a_parent_the_server_user_cannot_traverse_instead_of_widening_it() -> None:
    parent = make_test_dir("closed-parent")  # mkdtemp: 0700, owned by root
    try:
        env = embedded_env(parent / "dbops-home")
        up = run_dbops(["db", "up"], env, timeout=300)
        assert up.returncode == 1, up.stdout
        assert len(up.stderr.strip().splitlines()) == 1 and str(parent) in up.stderr and "Traceback" not in up.stderr
        assert _mode(parent) == 0o700
        assert not any(str(parent) in " ".join(p.info["cmdline"] or [])
                       for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"])
    finally:
        run_dbops(["db", "down"], embedded_env(parent / "dbops-home"), timeout=120)
        shutil.rmtree(parent, ignore_errors=True)


def test_a_url_with_a_space_is_named_as_such() -> None:
    """libpq refuses spaces; the message says so rather than blaming a '%' the URL does not have."""
    with pytest.raises(ConfigError, match="contains a space") as caught:
        parse_url("postgres://bad url")
    assert "'%'" not in str(caught.value)
