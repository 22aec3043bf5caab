"""Every alert the targets file can send has its runbook (docs/runbooks/<Alert>.md, four sections), the index lists
them all, the metric runbooks quote their targets file entry as it is, and the SQL of every "How to confirm" runs on
real PostgreSQL 18 and 15 (against a database holding the objects the queries look at)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from dbops.health.runbooks import (
    ASSET_CHECK_FAILED,
    EXPORTER_DOWN,
    MATERIALIZATION_FAILED,
    RUN_FAILED,
    RUNBOOKS_DIR,
    alert_name,
    alert_name_for_metric,
    alert_names,
    runbook_path,
    runbook_url,
)
from dbops.health.targets import load_targets, parse_targets
from dbops.pg.connect import connection, drop_database
from dbops_tests.conftest import PROJECT_DIR, new_database, start_test_server, stop_test_server

SECTIONS = ["What it means", "How to confirm", "What to do", "How to silence"]
TARGETS = load_targets(PROJECT_DIR / "monitoring" / "targets.yml")
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def _metric_runbooks() -> dict[str, list]:
    """Alert name -> the metric targets it covers."""
    out: dict[str, list] = {}
    for target in TARGETS.metrics:
        out.setdefault(alert_name_for_metric(target.metric, target.op), []).append(target)
    return out


def test_alert_names_follow_the_naming_rules() -> None:
    assert alert_name("metric:up<1", TARGETS) == "DbopsDatabaseDown"
    assert alert_name("metric:connections_used_ratio>0.8", TARGETS) == "DbopsConnectionsUsedRatioHigh"
    assert alert_name("metric:cache_hit_ratio<0.99") == "DbopsCacheHitRatioLow"
    assert alert_name("metric:autovacuum_workers_busy_ratio>=1") == "DbopsAutovacuumWorkersBusyRatioHigh"
    assert alert_name("metric:wraparound_transactions_left<1e+07") == "DbopsWraparoundTransactionsLeftLow"
    assert alert_name("metric:lock_waits<=3") == "DbopsLockWaitsLow"
    assert alert_name("check:logical_backup/backup_fresh", TARGETS) == "DbopsCheckBackupFresh"
    assert alert_name("check:base_backup/backup_fresh", TARGETS) == "DbopsCheckBackupFresh"
    assert alert_name("check:dimension_integrity/no_integrity_violations") == "DbopsCheckNoIntegrityViolations"
    assert alert_name("check:query_profile/cache_hit_ratio") == "DbopsCheckCacheHitRatio"
    assert alert_name("check:x/y", TARGETS) == ASSET_CHECK_FAILED
    assert alert_name("check:restore_drill/backup_fresh", TARGETS) == ASSET_CHECK_FAILED  # listed for other assets
    assert alert_name("run:dbops_lifecycle") == RUN_FAILED == "DbopsRunFailed"
    assert alert_name("asset:load_test") == MATERIALIZATION_FAILED == "DbopsMaterializationFailed"
    only_x = parse_targets({"checks": [{"asset": "x", "check": "y"}]})
    assert alert_name("check:x/y", only_x) == "DbopsCheckY"
    assert alert_name("check:logical_backup/backup_fresh", only_x) == ASSET_CHECK_FAILED
    for bad in ("metric:up", "metric:up!1", "check:nothing", "exporter", ""):
        with pytest.raises(ValueError, match="alert key"):
            alert_name(bad, TARGETS)


def test_runbook_path_and_url() -> None:
    assert RUNBOOKS_DIR == PROJECT_DIR / "docs" / "runbooks"
    assert runbook_path("DbopsLockWaitsHigh") == PROJECT_DIR / "docs" / "runbooks" / "DbopsLockWaitsHigh.md"
    assert runbook_url("DbopsLockWaitsHigh") == "docs/runbooks/DbopsLockWaitsHigh.md"
    assert runbook_url("DbopsLockWaitsHigh", "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks/") == \
        "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks/DbopsLockWaitsHigh.md"
    assert runbook_url("DbopsExporterDown", "https://ci:s3cret-token@git.example.com/runbooks") == \
        "https://ci:***@git.example.com/runbooks/DbopsExporterDown.md"


def test_every_alert_the_targets_file_can_send_has_its_runbook() -> None:
    names = alert_names(TARGETS)
    assert len(names) == len(set(names)) and EXPORTER_DOWN in names
    assert len(names) == len(_metric_runbooks()) + len({c.check for c in TARGETS.checks}) + 4  # 3 failures, exporter
    missing = [n for n in names if not runbook_path(n).is_file()]
    assert not missing, f"runbooks missing: {missing}"
    for name in names:
        text = runbook_path(name).read_text()
        assert text.startswith(f"# {name}\n"), name
        assert re.findall(r"^## (.+)$", text, flags=re.M) == SECTIONS, name
        assert all(body.strip() for body in _sections(text).values()), f"{name}: an empty section"


def test_every_metric_runbook_explains_its_figure_and_quotes_its_targets_entry() -> None:
    for name, targets in _metric_runbooks().items():
        path = runbook_path(name)
        assert path.is_file(), f"no runbook {path.name}"
        sections = _sections(path.read_text())
        assert list(sections) == SECTIONS, name
        assert _blocks(sections["How to confirm"], "sql"), f"{name}: no SQL to confirm with"
        for target in targets:
            assert f"`{target.metric}`" in sections["What it means"], f"{name}: what is {target.metric}?"
        silence = sections["How to silence"]
        for word in ("targets_file", "cooldown", "dbops_target", "python -m dbops.health.rules"):
            assert word in silence, f"{name}: How to silence says nothing of {word}"
        quoted = [entry for block in _blocks(silence, "yaml") for entry in yaml.safe_load(block)["metrics"]]
        # the entry as monitoring/targets.yml has it today (a runbook quoting a stale threshold fails here)
        assert parse_targets({"metrics": quoted}).metrics == tuple(targets), f"{name}: targets entry differs"
        for target in targets:
            assert f'dbops_target="{target.key}"' in silence, f"{name}: no silence on {target.key}"


def test_the_index_lists_every_runbook() -> None:
    index = (RUNBOOKS_DIR / "README.md").read_text()
    rows = dict(re.findall(r"^\| \[(Dbops\w+)\]\((Dbops\w+\.md)\) \|", index, flags=re.M))
    assert all(f"{name}.md" == file for name, file in rows.items())
    files = {p.stem for p in RUNBOOKS_DIR.glob("*.md") if p.name != "README.md"}
    assert files <= set(rows), f"runbooks not in the index: {sorted(files - set(rows))}"
    assert set(alert_names(TARGETS)) <= set(rows), f"alerts not in the index: {set(alert_names(TARGETS)) - set(rows)}"
    for name in rows:
        severity = re.search(rf"^\| \[{name}\]\({name}\.md\) \|[^|]+\| ([a-z /]+) \|$", index, flags=re.M)
        assert severity, f"{name}: its row has no severity"
        wanted = {t.severity for t in TARGETS.metrics if alert_name_for_metric(t.metric, t.op) == name} | \
                 {t.severity for t in TARGETS.checks if alert_name(t.key, TARGETS) == name}
        if wanted:
            assert set(severity[1].split(" / ")) == wanted, name


# What the confirming queries look at, planted so that they return rows (and their casts and joins run on rows).
PLANT = """
CREATE TABLE orders (id serial PRIMARY KEY, customer int NOT NULL, note text, placed date NOT NULL);
CREATE INDEX orders_customer ON orders (customer);
CREATE INDEX orders_customer_placed ON orders (customer, placed);
INSERT INTO orders (customer, note, placed) SELECT g % 50, repeat('x', 400 + g % 200), date '2024-01-01' + g % 90
  FROM generate_series(1, 30000) g;  -- over 10 MB: the bloat queries look at such tables only
DELETE FROM orders WHERE id % 3 = 0;
SELECT setval('orders_id_seq', 2000000000);
CREATE SEQUENCE countdown INCREMENT BY -1 MINVALUE -100 MAXVALUE 0 START 0;
SELECT nextval('countdown');
CREATE TABLE events (at timestamptz NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;
INSERT INTO events VALUES ('2030-05-01', 'too late');
CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) FROM orders GROUP BY customer;
ANALYZE;
"""


def _versioned(block: str, version: int) -> bool:
    """A block starting ``-- PostgreSQL 17+`` runs on 17 and later, ``-- PostgreSQL 16 and older`` before 17."""
    first = block.splitlines()[0] if block.strip() else ""
    if m := re.match(r"-- PostgreSQL (\d+)\+", first):
        return version >= int(m[1]) * 10000
    if m := re.match(r"-- PostgreSQL (\d+) and older", first):
        return version < (int(m[1]) + 1) * 10000
    return True


@pytest.fixture(params=["18", "15"])
def planted_db(request: pytest.FixtureRequest, server_url: str) -> Iterator[str]:
    if request.param == "18":
        url = new_database(server_url)
        server = None
    else:
        server = start_test_server(PG15_BIN)
        url = new_database(server.url("postgres"))
    try:
        with connection(url, autocommit=True) as conn:
            conn.execute(PLANT)
        yield url
    finally:
        if server is not None:
            stop_test_server(server)
        else:
            drop_database(server_url, url.rsplit("/", 1)[1])


# Runbook -> what its confirming queries must show on the planted database (they find the object, not just run).
FINDS = {
    "DbopsDuplicateIndexesHigh": ["orders_customer", "orders_customer_placed"],
    "DbopsUnusedIndexesHigh": ["orders_customer_placed"],
    "DbopsSequenceUsedRatioMaxHigh": ["orders_id_seq", "2000000000", "2147483647", "countdown"],
    "DbopsDefaultPartitionRowsHigh": ["events_default"],
    "DbopsTableBloatRatioMaxHigh": ["orders"],
}


def test_the_sql_of_every_metric_runbook_runs(planted_db: str) -> None:
    ran, failed, shown = 0, [], {}
    with connection(planted_db, autocommit=True) as conn:
        version = conn.info.server_version
        conn.execute("SET statement_timeout = '10s'")
        for name in sorted(_metric_runbooks()):
            for block in _blocks(_sections(runbook_path(name).read_text())["How to confirm"], "sql"):
                if not _versioned(block, version):
                    continue
                for statement in [s for s in block.split(";") if s.strip() and not _only_comments(s)]:
                    try:
                        with conn.transaction():
                            conn.execute("SET TRANSACTION READ ONLY")
                            rows = conn.execute(statement).fetchall()  # type: ignore[call-overload]
                            shown[name] = shown.get(name, "") + repr(rows)
                            ran += 1
                    except psycopg.Error as exc:
                        failed.append(f"{name}: {exc.diag.message_primary}\n{statement.strip()}")
    print(f"PostgreSQL {version // 10000}: {ran} statements of the runbooks ran")
    assert not failed, "\n\n".join(failed)
    assert ran >= len(_metric_runbooks())
    for name, wanted in FINDS.items():
        for text in wanted:
            assert text in shown.get(name, ""), f"{name}: {text} not found in {shown.get(name)}"


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())
