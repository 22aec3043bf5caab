"""`dbops ui` serves the Dagster UI on loopback only, backed by the PostgreSQL instance storage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

from dbops.pg.connect import drop_database
from dbops.pg.server import free_port
from dbops_tests.conftest import PROJECT_DIR, dbops_env, stop_process_group


def _listening_addresses(pid: int, port: int) -> set[str]:
    addresses = set()
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in family:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    addresses.add(conn.laddr.ip)
        except psutil.NoSuchProcess:
            continue
    return addresses


def test_ui_serves_on_loopback_with_postgres_storage(pg_server, fresh_db: str, tmp_path: Path) -> None:
    port = free_port()
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=pg_server.url(dagster_db))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbops.cli", "ui", "--port", str(port)],
        env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        info = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
                    info = json.loads(resp.read())
                    break
            except OSError:
                time.sleep(1)
        assert info is not None, f"UI did not answer; exit={proc.poll()}"
        assert "dagster_webserver_version" in info
        assert _listening_addresses(proc.pid, port) == {"127.0.0.1"}
        query = b'{"query": "{ instance { info } }"}'
        request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            instance_info = json.loads(resp.read())["data"]["instance"]["info"]
        assert "PostgresRunStorage" in instance_info or "postgres" in instance_info.lower()
        assert pg_server.password not in instance_info
    finally:
        stop_process_group(proc)
        drop_database(pg_server.url(), dagster_db)
