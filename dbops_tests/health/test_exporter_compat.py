"""The Prometheus endpoint speaks postgres_exporter: its names, label names and types for what both measure, scraped
over real HTTP from a real server (one of this module's own: the planted slots, locks, roles and grants stay here),
read by promtool and by a real Prometheus; the dbops_ and lifecycle figures beside them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry
from psycopg import sql

from dbops.health.exporter import DbopsCollector, build_registry
from dbops.health.lifecycle import lifecycle_figures
from dbops.health.targets import load_targets
from dbops.pg.connect import connection, parse_url, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops_tests.conftest import make_test_dir, new_database, start_test_server, stop_test_server

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"

# What postgres_exporter 0.20.1 exposes, read from its collector/*.go (not from dbops' module): name -> (type, labels).
DB = ("datid", "datname")
ACTIVITY = ("datname", "state", "usename", "application_name", "backend_type", "wait_event_type", "wait_event")
TABLE = ("datname", "schemaname", "relname")
SLOT = ("slot_name", "database")
SLOT_TYPE = ("slot_name", "slot_type")
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "pg_up": ("gauge", ()),
    "pg_stat_database_numbackends": ("gauge", DB),
    **{f"pg_stat_database_{c}": ("counter", DB) for c in (
        "xact_commit", "xact_rollback", "blks_read", "blks_hit", "tup_returned", "tup_fetched", "tup_inserted",
        "tup_updated", "tup_deleted", "conflicts", "temp_files", "temp_bytes", "deadlocks", "blk_read_time",
        "blk_write_time", "stats_reset", "active_time_seconds_total")},
    "pg_stat_activity_count": ("gauge", ACTIVITY),
    "pg_stat_activity_max_tx_duration": ("gauge", ACTIVITY),
    "pg_locks_count": ("gauge", ("datname", "mode")),
    "pg_replication_slots_active": ("gauge", SLOT),
    "pg_replication_slots_pg_wal_lsn_diff": ("gauge", SLOT),
    "pg_replication_slots_slot_current_wal_lsn": ("gauge", SLOT_TYPE),
    "pg_replication_slots_slot_is_active": ("gauge", SLOT_TYPE),
    "pg_replication_slots_wal_status": ("gauge", (*SLOT_TYPE, "wal_status")),
    "pg_database_size_bytes": ("gauge", ("datname",)),
    "pg_database_connection_limit": ("gauge", ("datname",)),
    "pg_settings_max_connections": ("gauge", ()),
    "pg_settings_shared_buffers_bytes": ("gauge", ()),
    "pg_settings_statement_timeout_seconds": ("gauge", ()),
    "pg_settings_fsync": ("gauge", ()),
    "pg_settings_random_page_cost": ("gauge", ()),
    "pg_replication_lag_seconds": ("gauge", ()),
    "pg_replication_is_replica": ("gauge", ()),
    "pg_replication_last_replay_seconds": ("gauge", ()),
    "pg_stat_archiver_archived_count": ("counter", ()),
    "pg_stat_archiver_failed_count": ("counter", ()),
    "pg_database_wraparound_age_datfrozenxid_seconds": ("gauge", ("datname",)),
    "pg_database_wraparound_age_datminmxid_seconds": ("gauge", ("datname",)),
    **{f"pg_stat_user_tables_{c}": ("counter", TABLE) for c in (
        "seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del", "n_tup_hot_upd",
        "vacuum_count", "autovacuum_count", "analyze_count", "autoanalyze_count")},
    **{f"pg_stat_user_tables_{c}": ("gauge", TABLE) for c in (
        "n_live_tup", "n_dead_tup", "n_mod_since_analyze", "last_vacuum", "last_autovacuum", "last_analyze",
        "last_autoanalyze", "index_size_bytes", "table_size_bytes")},
    "pg_scrape_collector_success": ("gauge", ("collector",)),
    "pg_scrape_collector_duration_seconds": ("gauge", ("collector",)),
}
BGWRITER_17 = {f"pg_stat_bgwriter_{c}_total": ("counter", ()) for c in (
    "buffers_clean", "maxwritten_clean", "buffers_alloc", "stats_reset")}
BGWRITER_OLD = {f"pg_stat_bgwriter_{c}_total": ("counter", ()) for c in (
    "checkpoints_timed", "checkpoints_req", "checkpoint_write_time", "checkpoint_sync_time", "buffers_checkpoint",
    "buffers_clean", "maxwritten_clean", "buffers_backend", "buffers_backend_fsync", "buffers_alloc", "stats_reset")}
CHECKPOINTER = {f"pg_stat_checkpointer_{c}_total": ("counter", ()) for c in (
    "num_timed", "num_requested", "restartpoints_timed", "restartpoints_req", "restartpoints_done", "write_time",
    "sync_time", "buffers_written", "stats_reset")}
COLLECTORS = {"stat_database", "stat_activity", "locks", "replication_slots", "database", "settings", "stat_bgwriter",
              "stat_checkpointer", "replication", "stat_archiver", "database_wraparound", "stat_user_tables"}
# promtool's lint on names postgres_exporter itself exposes (so any dashboard for it uses them): counters without
# "_total" and names ending in "_count"; pg_settings_* follow the server's setting names.
EXPORTER_UNSUFFIXED_COUNTERS = {n for n, (t, _) in EXPECTED.items() if t == "counter" and not n.endswith("_total")}
EXPORTER_COUNT_NAMES = {n for n in EXPECTED if n.endswith("_count")}

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Exposition:
    """One scrape in the Prometheus text format: HELP and TYPE lines and samples."""

    text: str
    helps: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for line in self.text.splitlines():
            if line.startswith("# HELP "):
                _, _, name, *words = line.split(" ")
                assert name not in self.helps, f"two HELP lines for {name}"
                self.helps[name] = " ".join(words)
            elif line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                assert name not in self.types, f"two TYPE lines for {name}"
                self.types[name] = kind
            elif line and not line.startswith("#"):
                match = _SAMPLE.match(line)
                assert match, line
                self.samples.append((match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])))

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.samples if n == name and labels.items() <= lab.items()]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.series(name, **labels)
        assert len(found) <= 1, (name, labels, found)
        return found[0][1] if found else None

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


@dataclass
class Endpoint:
    port: int

    def scrape(self, accept: str | None = None) -> Exposition:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                         headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            return Exposition(response.read().decode())


@contextmanager
def serving(registry: CollectorRegistry) -> Iterator[Endpoint]:
    """The registry on a real HTTP port (prometheus_client's server, as `dbops metrics serve`)."""
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry)
    try:
        yield Endpoint(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def eventually(scrape: Callable[[], Exposition], ok: Callable[[Exposition], bool], what: str) -> Exposition:
    """Scrape until ``ok`` (the cumulative statistics reach the shared memory a moment after a backend exits)."""
    deadline = time.monotonic() + 30
    while True:
        got = scrape()
        if ok(got):
            return got
        assert time.monotonic() < deadline, f"{what} never showed: {got.text[:2000]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    bin_dir = os.environ.get("DBOPS_TEST_PG_BIN")
    started = start_test_server(Path(bin_dir) if bin_dir else None)
    try:
        yield started
    finally:
        stop_test_server(started)


@pytest.fixture
def database(server: EmbeddedServer) -> Iterator[str]:
    """A new database on this module's server with a table public.items of 50 rows."""
    url = new_database(server.url("postgres"))
    with connection(url) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 50) g")
    try:
        yield url
    finally:
        with connection(server.url("postgres")) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname(url))))


def dbname(url: str) -> str:
    return parse_url(url).database or ""


@contextmanager
def planted(url: str, slot: str) -> Iterator[None]:
    """An idle-in-transaction session, a table lock held in SHARE ROW EXCLUSIVE mode, an inactive physical slot."""
    idle = psycopg.connect(url, autocommit=False, application_name="dbops-test-idle")
    locker = psycopg.connect(url, autocommit=False, application_name="dbops-test-locker")
    try:
        idle.execute("SELECT 1")
        locker.execute("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
        with connection(url) as conn:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        yield
    finally:
        idle.close()
        locker.close()
        with connection(url) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                         (slot,))


def expected_families(version: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {**EXPECTED, **(BGWRITER_17 | CHECKPOINTER if version >= 170000 else BGWRITER_OLD)}


def test_every_family_has_the_exporters_type_labels_and_the_planted_state(server: EmbeddedServer,
                                                                           database: str) -> None:
    db, slot = dbname(database), f"dbops_test_{uuid.uuid4().hex[:8]}"
    idle = {"datname": db, "state": "idle in transaction", "application_name": "dbops-test-idle"}
    with connection(database) as conn:
        version = conn.info.server_version
        max_connections = float(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
    with serving(build_registry(database)) as endpoint:
        before = endpoint.scrape()
        with planted(database, slot):
            text = endpoint.scrape()
            openmetrics = endpoint.scrape(OPENMETRICS)
        after = eventually(  # a closed session's backend leaves a moment after its client
            endpoint.scrape, lambda e: e.value("pg_stat_activity_count", **idle) is None
            and e.value("pg_locks_count", datname=db, mode="sharerowexclusivelock") == 0, "the planted session gone")

    for name, (kind, labels) in expected_families(version).items():
        assert text.types.get(name) == kind, (name, text.types.get(name), kind)
        assert text.helps.get(name, "").strip(), f"no HELP text for {name}"
        found = text.series(name)
        assert found, f"no sample of {name}"
        assert all(set(lab) == set(labels) for lab, _ in found), (name, {tuple(sorted(lab)) for lab, _ in found})
    # Counters keep the exporter's sample names: no _total added, none dropped, in either format Prometheus asks for.
    for name, kind in text.types.items():
        if kind == "counter":
            assert text.series(name) and not text.series(name + "_total"), name
    pg_names = {n for n in text.names() if n.startswith("pg_")}
    assert {n for n in openmetrics.names() if n.startswith("pg_")} == pg_names
    assert "# TYPE pg_stat_database_xact_commit counter" in openmetrics.text
    assert "pg_stat_database_xact_commit_total" not in openmetrics.text

    # Every database of the server, not only the target's.
    assert {lab["datname"] for lab, _ in text.series("pg_stat_database_xact_commit")} >= {db, "postgres", "template1"}
    assert text.value("pg_stat_database_numbackends", datname=db) >= 2  # the idle session and the locker
    assert before.value("pg_stat_activity_count", **idle) is None
    assert text.value("pg_stat_activity_count", **idle, backend_type="client backend") == 1
    assert text.value("pg_stat_activity_max_tx_duration", **idle) > 0
    assert before.value("pg_locks_count", datname=db, mode="sharerowexclusivelock") == 0
    assert text.value("pg_locks_count", datname=db, mode="sharerowexclusivelock") == 1
    assert text.value("pg_replication_slots_active", slot_name=slot, database="") == 0
    assert text.value("pg_replication_slots_slot_is_active", slot_name=slot, slot_type="physical") == 0
    assert text.value("pg_replication_slots_pg_wal_lsn_diff", slot_name=slot) >= 0
    assert text.value("pg_replication_slots_wal_status", slot_name=slot, wal_status="reserved") == 1
    assert after.value("pg_replication_slots_active", slot_name=slot) is None
    assert text.value("pg_database_size_bytes", datname=db) > 0
    assert text.value("pg_database_connection_limit", datname=db) == -1
    assert text.value("pg_settings_max_connections") == max_connections
    assert text.value("pg_settings_shared_buffers_bytes") == 128 * 2**20  # the test servers' shared_buffers
    assert text.value("pg_settings_fsync") == 0  # fsync = off on test servers
    assert text.helps["pg_settings_fsync"] == "The server setting fsync (1 on, 0 off)"
    assert text.helps["pg_settings_shared_buffers_bytes"] == "The server setting shared_buffers, in bytes"
    assert text.helps["pg_up"] == "1 if this scrape could connect to the PostgreSQL server, 0 if not"
    assert text.value("pg_replication_is_replica") == 0 and text.value("pg_replication_lag_seconds") == 0
    assert text.value("pg_database_wraparound_age_datfrozenxid_seconds", datname=db) >= 0
    items = {"datname": db, "schemaname": "public", "relname": "items"}
    assert text.value("pg_stat_user_tables_table_size_bytes", **items) > 0
    assert text.value("pg_stat_user_tables_index_size_bytes", **items) > 0  # its primary key
    assert text.value("pg_stat_user_tables_last_vacuum", **items) == 0  # never vacuumed by hand
    # Every collector ran and succeeded; the held lock did not block the sizes (SHARE ROW EXCLUSIVE allows reads).
    assert {lab["collector"] for lab, v in text.series("pg_scrape_collector_success") if v == 1} == COLLECTORS


def test_counters_grow_with_a_planted_workload(database: str) -> None:
    db = dbname(database)
    items = {"datname": db, "schemaname": "public", "relname": "items"}
    with serving(build_registry(database)) as endpoint:
        before = eventually(endpoint.scrape, lambda e: e.value("pg_stat_user_tables_n_tup_ins", **items) == 50,
                            "the 50 rows inserted at set-up")
        commits = before.value("pg_stat_database_xact_commit", datname=db)
        inserted = before.value("pg_stat_database_tup_inserted", datname=db)
        with connection(database) as conn:  # 25 committed transactions of 4 rows each, then the backend exits
            for n in range(25):
                conn.execute("INSERT INTO items SELECT g, 'w' FROM generate_series(%s::int, %s::int) g",
                             (1000 + 4 * n, 1003 + 4 * n))
        after = eventually(
            endpoint.scrape, lambda e: e.value("pg_stat_user_tables_n_tup_ins", **items) == 150
            and e.value("pg_stat_database_xact_commit", datname=db) >= commits + 25,  # type: ignore[operator]
            "the workload's commits and inserts")
    assert after.value("pg_stat_database_tup_inserted", datname=db) >= inserted + 100  # type: ignore[operator]
    assert after.value("pg_stat_user_tables_n_live_tup", **items) == 150
    assert after.types["pg_stat_database_xact_commit"] == "counter"
    assert after.types["pg_stat_user_tables_n_tup_ins"] == "counter"


def promtool_problems(text: str) -> tuple[int, list[str]]:
    """promtool check metrics: its exit code (0 clean, 3 lint problems, 1 unreadable) and its problem lines."""
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def exporter_lint(line: str) -> bool:
    """A lint problem postgres_exporter's own output has: its counters named without _total, its names ending in
    _count, and the pg_settings_* names taken from the server's settings (tcp_keepalives_count, wal_summary_...)."""
    name, _, problem = line.partition(" ")
    if problem == 'counter metrics should have "_total" suffix':
        return name in EXPORTER_UNSUFFIXED_COUNTERS
    if problem == 'non-histogram and non-summary metrics should not have "_count" suffix':
        return name in EXPORTER_COUNT_NAMES or name.startswith("pg_settings_")
    if problem.startswith("metric name should not include type"):
        return name.startswith("pg_settings_")
    return False


def test_promtool_reads_the_whole_scrape_and_dbops_names_sit_beside_the_exporters(database: str) -> None:
    instance = dg.DagsterInstance.ephemeral()

    @dg.asset(key=["dbops", "logical_backup"])
    def logical_backup() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"size_bytes": 12345})

    dg.materialize([logical_backup], instance=instance)
    targets = load_targets(MONITORING / "targets.yml")
    registry = build_registry(database, lambda: lifecycle_figures(instance, targets.checks, target="dbops"))
    try:
        with serving(registry) as endpoint:
            endpoint.scrape()
            text = endpoint.scrape()  # the second: rates too
    finally:
        instance.dispose()

    rc, problems = promtool_problems(text.text)
    assert rc in (0, 3), problems  # 1 would be output promtool cannot parse
    assert (rc == 0) == (not problems)
    assert [p for p in problems if not exporter_lint(p)] == [], "lint beyond what postgres_exporter itself has"
    assert not [p for p in problems if p.startswith("dbops_")]

    names = list(text.types)
    assert all(n.startswith(("pg_", "dbops_")) for n in names), [n for n in names if not n.startswith(("pg_", "dbops"))]
    assert len(text.series("pg_up")) == 1 and text.value("pg_up") == 1
    for figure in ("dbops_up", "dbops_connections_used_ratio", "dbops_cache_hit_ratio", "dbops_commits_per_second",
                   "dbops_database_size_bytes", "dbops_wraparound_age", "dbops_lifecycle_up",
                   "dbops_backup_age_seconds"):
        assert text.types.get(figure) == "gauge", figure
    assert text.value("dbops_asset_metadata", asset="logical_backup", key="size_bytes") == 12345
    # The same figure under both prefixes where both measure it, from the same server.
    assert text.value("pg_database_size_bytes", datname=dbname(database)) > 0
    assert text.value("dbops_max_connections") == text.value("pg_settings_max_connections")

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"\bpg_[a-z_]+\b", exprs))
    assert used > {"pg_up"}, used  # the dashboard plots postgres_exporter's names too
    assert used <= text.names() | set(EXPECTED), used - text.names() - set(EXPECTED)  # slots: only when there are


def test_a_server_that_is_down_gives_pg_up_0_and_no_other_pg_family() -> None:
    other = start_test_server()
    try:
        url, password = other.url("postgres"), other.password
        with serving(build_registry(url)) as endpoint:
            up = endpoint.scrape()
            other.stop()
            down = endpoint.scrape()
    finally:
        stop_test_server(other)
    assert up.value("pg_up") == 1 and up.series("pg_stat_database_xact_commit")
    assert down.value("pg_up") == 0
    assert [n for n in down.types if n.startswith("pg_")] == ["pg_up"]
    assert not [line for line in down.text.splitlines() if line.startswith("pg_stat_database_")]
    assert down.value("dbops_up") == 0  # the dbops figures say so too
    assert password not in down.text


def test_a_collector_the_role_may_not_read_is_left_out_and_the_rest_stays(server: EmbeddedServer,
                                                                          database: str) -> None:
    role, password = f"exp_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    closed = dbname(new_database(server.url("postgres")))
    admin = server.url("postgres")
    with connection(admin) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname(database)),
                                                                           sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(closed)))
    with connection(database) as conn:  # a catalog view's grants are the database's own
        conn.execute("REVOKE SELECT ON pg_catalog.pg_stat_archiver FROM PUBLIC")
    role_url = with_database(f"postgresql://{role}:{quote(password)}@127.0.0.1:{server.port}/postgres",
                             dbname(database))
    try:
        collector = DbopsCollector(role_url)
        registry = build_registry(role_url)
        with serving(registry) as endpoint:
            text = endpoint.scrape()
        pg_up = next(f for f in collector.collect() if f.name == "pg_up")
    finally:
        with connection(database) as conn:
            conn.execute("GRANT SELECT ON pg_catalog.pg_stat_archiver TO PUBLIC")
        with connection(admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(closed)))
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(sql.Identifier(dbname(database)),
                                                                                sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert text.value("pg_up") == 1
    assert not [n for n in text.types if n.startswith("pg_stat_archiver_")]
    assert text.value("pg_scrape_collector_success", collector="stat_archiver") == 0
    assert {lab["collector"] for lab, v in text.series("pg_scrape_collector_success") if v == 1} == \
        COLLECTORS - {"stat_archiver"}
    assert text.series("pg_stat_database_xact_commit") and text.series("pg_settings_max_connections")
    # pg_database_size() of a database the role may not connect to: that one alone has no size.
    assert text.value("pg_database_size_bytes", datname=dbname(database)) > 0
    assert text.value("pg_database_size_bytes", datname=closed) is None
    assert text.value("pg_database_connection_limit", datname=closed) == -1
    assert "permission denied" in collector.failed_collectors["stat_archiver"]
    assert password not in " ".join(collector.failed_collectors.values())
    assert pg_up.samples[0].value == 1


def test_a_table_locked_exclusively_leaves_out_its_sizes_only(database: str) -> None:
    """The sizes lock each table; the scrape session's lock timeout makes that one statement give up (the exporter
    would wait) and everything else is read."""
    items = {"datname": dbname(database), "schemaname": "public", "relname": "items"}
    locker = psycopg.connect(database, autocommit=False)
    try:
        locker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        collector = DbopsCollector(database)
        with serving(build_registry(database)) as endpoint:
            text = endpoint.scrape()
        list(collector.collect())
    finally:
        locker.close()
    assert text.value("pg_up") == 1
    assert text.value("pg_stat_user_tables_n_live_tup", **items) is not None
    assert text.value("pg_stat_user_tables_table_size_bytes", **items) is None
    assert text.value("pg_scrape_collector_success", collector="stat_user_tables") == 0
    assert text.value("pg_scrape_collector_success", collector="stat_database") == 1
    assert "lock timeout" in collector.failed_collectors["stat_user_tables"]


@contextmanager
def prometheus(target_port: int) -> Iterator[Callable[[str], dict]]:
    """Debian's Prometheus (the package promtool comes in) scraping 127.0.0.1:target_port every second, in a test
    directory; yields a reader of its HTTP API (`api("label/__name__/values")` -> the "data" of the answer)."""
    home = make_test_dir("prometheus")
    port = free_port()
    (home / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs:\n  - job_name: dbops\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
    log = (home / "prometheus.log").open("w")
    proc = subprocess.Popen(["prometheus", f"--config.file={home / 'prometheus.yml'}",
                             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def api(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=10) as response:
            return json.loads(response.read())["data"]

    try:
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_a_real_prometheus_stores_the_exporters_names(database: str) -> None:
    """Prometheus asks for OpenMetrics first: it must store pg_stat_database_xact_commit (a counter without _total)
    and pg_stat_bgwriter_buffers_alloc_total under those very names, as it does from postgres_exporter."""
    wanted = {"pg_up", "pg_stat_database_xact_commit", "pg_stat_database_tup_inserted", "pg_locks_count",
              "pg_stat_activity_count", "pg_settings_max_connections", "pg_stat_user_tables_n_tup_ins",
              "pg_stat_bgwriter_buffers_alloc_total", "pg_database_size_bytes"}
    with serving(build_registry(database)) as endpoint, prometheus(endpoint.port) as api:
        deadline = time.monotonic() + 60
        names: set[str] = set()
        while not wanted <= names:
            assert time.monotonic() < deadline, f"Prometheus never stored {sorted(wanted - names)}"
            time.sleep(0.5)
            try:
                names = set(api("label/__name__/values"))
            except OSError:  # not listening yet
                continue
        metadata = api("metadata?metric=pg_stat_database_xact_commit")
        target = api("targets")["activeTargets"][0]
    assert not {n for n in names if n.startswith("pg_stat_database_") and n.endswith("_total")} - {
        "pg_stat_database_active_time_seconds_total"}
    assert "pg_stat_bgwriter_buffers_alloc" not in names
    assert metadata["pg_stat_database_xact_commit"][0]["type"] == "counter"
    assert target["health"] == "up" and not target["lastError"]
