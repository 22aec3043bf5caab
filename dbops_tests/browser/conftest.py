"""The Dagster UI in a real browser: dagster-webserver on a free loopback port against a test instance, and Debian's
headless Chromium driven by playwright (``executable_path``: playwright never downloads a browser here).

The instance is the one `dbops run` writes to (PostgreSQL storage in a database of its own on the session's test
server), read by the webserver from a DAGSTER_HOME of its own whose dagster.yaml has the same storage and Dagster's
DefaultRunCoordinator: a run launched by a click starts at once, without the daemon (which would also start dbops'
schedules and sensors on the test database).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from dbops.instance import dagster_storage_env
from dbops.pg.connect import drop_database, ensure_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops_tests.conftest import PROJECT_DIR, dbops_env

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, installed by `make system-deps`
WEBSERVER_DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      username: {env: DAGSTER_PG_USERNAME}
      password: {env: DAGSTER_PG_PASSWORD}
      hostname: {env: DAGSTER_PG_HOST}
      db_name: {env: DAGSTER_PG_DB}
      port: {env: DAGSTER_PG_PORT}
      scheme: postgresql+psycopg2
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""
LOCATION_QUERY = b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus ' \
                 b'locationOrLoadError { __typename ... on PythonError { message } } } } } }"}'


@dataclass
class UiInstance:
    """A test database, the environment of `dbops` commands aimed at it, and the Dagster storage they share."""

    database_url: str
    env: dict[str, str]
    dagster_url: str
    tmp_path: Path


@pytest.fixture
def ui_instance(pg_server: EmbeddedServer, migrated_db: str, tmp_path: Path) -> Iterator[UiInstance]:
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    dagster_url = pg_server.url(dagster_db)
    ensure_database(pg_server.url(), dagster_db)
    env = dbops_env(pg_server, migrated_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_url, DBOPS_LOG_LEVEL="INFO")
    try:
        yield UiInstance(migrated_db, env, dagster_url, tmp_path)
    finally:
        drop_database(pg_server.url(), dagster_db)


def _get(url: str, data: bytes | None = None, timeout: float = 10) -> dict:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_until_loaded(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until the webserver answers and the code location `dbops` is loaded (a load error fails here, by its text)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster-webserver exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            entries = _get(f"{base}/graphql", LOCATION_QUERY)["data"]["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError, ValueError):
            time.sleep(1)
            continue
        entry = next((e for e in entries if e["name"] == "dbops"), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            assert loaded.get("__typename") == "RepositoryLocation", f"code location failed to load: {loaded}"
            return
        time.sleep(1)
    raise AssertionError(f"the code location did not load in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen) -> list[str]:
    """SIGTERM to the webserver's process group (its code server and run workers too), SIGKILL after 30 s; returns
    the processes of the family still alive after that (none, or the test fails)."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _, alive = psutil.wait_procs(family, timeout=10)
    for leftover in alive:  # a child that left the group: ended by its pid, and reported
        leftover.kill()
    return [f"{p.pid}" for p in alive]


@pytest.fixture
def webserver(ui_instance: UiInstance) -> Iterator[str]:
    """Base URL of dagster-webserver on 127.0.0.1 serving workspace.yaml (location `dbops`) against the test
    instance; the whole process group is stopped afterwards and no process of it may survive."""
    home = ui_instance.tmp_path / "webserver-home"
    home.mkdir()
    (home / "dagster.yaml").write_text(WEBSERVER_DAGSTER_YAML)
    env = {**ui_instance.env, **dagster_storage_env(ui_instance.dagster_url), "DAGSTER_HOME": str(home)}
    port = free_port()
    log = ui_instance.tmp_path / "webserver.log"
    webserver_bin = Path(sys.executable).parent / "dagster-webserver"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(webserver_bin), "-w", str(PROJECT_DIR / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            env=env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_loaded(base, proc, log)
        yield base
    finally:
        survivors = stop_process_group(proc)
        assert not survivors, f"processes of dagster-webserver left running: {survivors}"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(request: pytest.FixtureRequest, screenshots: Path) -> Iterator:
    """A page of headless Debian Chromium; on a failure, a screenshot of it lands in the screenshots folder, whose
    path is printed."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make system-deps` (Debian's chromium)"
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)  # the machine is shared and slow: actions and assertions alike
            expect.set_options(timeout=60_000)
            yield page
            report = getattr(request.node, "report_call", None)
            if report is None or report.failed:
                shot = screenshots / "failure.png"
                try:
                    page.screenshot(path=str(shot), full_page=True)
                except Exception as exc:  # the page may be gone; the step screenshots are still there
                    print(f"no failure screenshot: {exc}")
                print(f"\nscreenshots of the failed browser test: {screenshots}", file=sys.stderr)
        finally:
            browser.close()
