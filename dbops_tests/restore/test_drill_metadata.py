"""Issue 18 items 10 and 12 for restore_drill: the metadata a drill leaves (the RTO keys the scorecard reads, the
phases and the per-table comparison as tables with schemas, numbers rounded, nothing not measured shown), its checks'
metadata (a mismatch named in a table), and the progress lines of a real drill, in order, as they happen. The
physical drill's: dbops_tests/backup/test_physical.py."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.figures import compare_tables
from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import latest, save_manifest
from dbops.backup.store import LocalStore
from dbops.components import backup
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource
from dbops.components.restore.assets import build_restore_drill
from dbops.health.targets import Limits
from dbops.pg.connect import connection
from dbops.restore.drill import drill
from dbops.scorecard import score_targets
from dbops_tests.backup.metadata_shape import assert_clean, assert_in_order, columns, log_lines, rows

TARGET = "dbops"
DRILL_OP = op_name(TARGET, "restore_drill")
[LOGICAL] = [a for a in backup.build(TARGET).assets or []
             if isinstance(a, dg.AssetsDefinition) and a.key == asset_key(TARGET, "logical_backup")]
RESTORE_DRILL = build_restore_drill(TARGET)
LOGICAL_ONLY = {"ops": {DRILL_OP: {"config": {"physical": False}}}}


def _backed_up(url: str, store: Path, instance: dg.DagsterInstance) -> dict[str, object]:
    resources = {"database": DatabaseResource(url=url), "backups": BackupResource(store="local", directory=str(store))}
    assert dg.materialize([LOGICAL], instance=instance, resources=resources).success
    return resources


def test_drill_metadata_and_its_progress_lines(seeded_small: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    instance = dg.DagsterInstance.ephemeral()
    resources = _backed_up(seeded_small, tmp_path / "store", instance)
    result = dg.materialize([RESTORE_DRILL], instance=instance, resources=resources, run_config=LOGICAL_ONLY)
    assert result.success
    meta = result.asset_materializations_for_node(DRILL_OP)[0].metadata
    assert_clean(meta)

    # the keys the scorecard reads stay, as rounded floats
    read = {t.key for t in score_targets(Limits()) if t.asset == "restore_drill"}
    assert read == {"logical_rto_seconds", "physical_rto_seconds"}
    assert isinstance(meta["logical_rto_seconds"], dg.FloatMetadataValue) and meta["logical_rto_seconds"].value > 0
    assert "physical_rto_seconds" not in meta and "physical_backup_id" not in meta  # not drilled: left out
    assert not [k for k in meta if "_phase_" in k]  # the phases are one table, not a key each

    assert columns(meta["phases"]) == {"drill": "string", "phase": "string", "seconds": "float"}
    phases = rows(meta["phases"])
    assert [p["phase"] for p in phases] == ["download_verify", "decrypt_decompress", "restore", "verify"]
    assert {p["drill"] for p in phases} == {"logical"}
    assert abs(sum(float(p["seconds"]) for p in phases) - meta["logical_rto_seconds"].value) < 0.01

    assert columns(meta["logical_comparison"]) == {"table": "string", "rows_backed_up": "int",
                                                   "rows_restored": "int", "result": "string", "matches": "bool"}
    compared = rows(meta["logical_comparison"])
    with connection(seeded_small) as conn:  # every table's rows, counted in the source apart from the drill
        counted = {r["table"]: conn.execute(f"SELECT count(*) FROM {r['table']}").fetchone()[0]  # type: ignore[index] # noqa: S608
                   for r in compared}
    assert compared == [{"table": t, "rows_backed_up": n, "rows_restored": n, "result": "match", "matches": True}
                        for t, n in sorted(counted.items())]
    assert counted["app.tenants"] > 0
    assert len(compared) == meta["logical_tables_checked"].value == meta["tables_checked"].value
    assert sum(int(r["rows_restored"]) for r in compared) == meta["rows_checked"].value
    assert meta["logical_problems"].value == 0

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    matches, rto = checks["drill_data_matches"], checks["drill_rto_under_target"]
    assert matches.passed and matches.metadata["problems"].value == 0 and "mismatches" not in matches.metadata
    assert matches.metadata["tables_compared"].value == len(compared)
    assert rto.metadata["logical_rto_seconds"].value == rto.metadata["rto_seconds"].value
    assert rto.metadata["target_seconds"].value == 1800.0
    for check in checks.values():
        assert_clean(check.metadata)

    lines = log_lines(instance, result.run_id, DRILL_OP)
    assert_in_order(lines, [f"logical drill of {meta['logical_backup_id'].value}: verifying 1 object(s)",
                            "objects verified in", "restore started into the scratch database dbops_drill_",
                            "pg_restore started", "restored in", "verify started: rows and checksums of "
                            f"{len(compared)} table(s)", "verified and compared in",
                            f"RTO {meta['logical_rto_seconds'].value:.1f} s"])
    assert lines[-2].endswith("every table matches the manifest")


def test_a_mismatch_is_named_in_the_checks_table(seeded_small: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup whose data is not what its manifest recorded (re-signed here with one table's rows and another's
    checksum changed, as a dump that lost a row would be): the real restore is compared, the differing tables come
    first in the comparison, drill_data_matches fails and names them in its table of mismatches."""
    key_text = generate_key()
    monkeypatch.setenv("DBOPS_BACKUP_KEY", key_text)
    instance = dg.DagsterInstance.ephemeral()
    resources = _backed_up(seeded_small, tmp_path / "store", instance)
    store, key = LocalStore(tmp_path / "store"), MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text})
    manifest = latest(store, key)
    assert manifest is not None
    tenants, users = manifest["tables"]["app.tenants"], manifest["tables"]["app.users"]
    tenants["rows"] += 1
    users["checksum"] = str(int(users["checksum"]) + 1)
    save_manifest(store, key, manifest)

    result = dg.materialize([RESTORE_DRILL], instance=instance, resources=resources, run_config=LOGICAL_ONLY,
                            raise_on_error=False)
    meta = result.asset_materializations_for_node(DRILL_OP)[0].metadata
    assert_clean(meta)
    compared = rows(meta["logical_comparison"])
    assert [(r["table"], r["result"], r["matches"]) for r in compared[:2]] == [
        ("app.tenants", "rows differ", False), ("app.users", "content differs", False)]
    assert compared[0]["rows_backed_up"] == compared[0]["rows_restored"] + 1  # type: ignore[operator]
    assert all(r["matches"] for r in compared[2:]) and meta["logical_problems"].value == 2
    matches = next(e for e in result.get_asset_check_evaluations() if e.check_name == "drill_data_matches")
    assert not matches.passed and matches.severity == dg.AssetCheckSeverity.ERROR
    assert matches.metadata["problems"].value == 2
    assert columns(matches.metadata["mismatches"]) == {"drill": "string", "problem": "string"}
    assert [r["problem"] for r in rows(matches.metadata["mismatches"])] == [
        f"app.tenants: {tenants['rows'] - 1} rows restored, {tenants['rows']} backed up",
        f"app.users: content checksum differs ({users['rows']} rows)"]
    assert_clean(matches.metadata)


def test_drill_progress_arrives_as_each_phase_happens(seeded_small: str, server_url: str, local_store: LocalStore,
                                                      master_key: MasterKey) -> None:
    """At "restore started" the scratch database does not exist yet, while verifying it does, at "RTO" it is gone."""
    logical_backup(seeded_small, local_store, master_key)

    def scratch_databases() -> list[str]:
        with connection(server_url) as conn:
            return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops_drill_%'")]

    before = scratch_databases()
    seen: list[tuple[str, list[str]]] = []
    result = drill(seeded_small, local_store, master_key,
                   progress=lambda line: seen.append((line, sorted(set(scratch_databases()) - set(before)))))
    assert result.data_matches
    at = {line.split(":")[0].split(" ")[0]: scratch for line, scratch in seen}
    [restore_line] = [(line, scratch) for line, scratch in seen if line.startswith("restore started")]
    name = restore_line[0].rsplit(" ", 1)[-1]
    assert restore_line[1] == []  # announced before the scratch copy is created
    assert next(s for line, s in seen if line.startswith("verify started")) == [name]
    assert at["RTO"] == [] and seen[-1][0].startswith(f"RTO {result.rto_seconds:.1f} s")


def test_compare_tables_puts_the_differences_first() -> None:
    expected = {"a.same": {"rows": 2, "checksum": "1"}, "a.fewer": {"rows": 5, "checksum": "2"},
                "a.changed": {"rows": 3, "checksum": "3"}, "a.lost": {"rows": 1, "checksum": "4"}}
    actual = {"a.same": {"rows": 2, "checksum": "1"}, "a.fewer": {"rows": 4, "checksum": "2"},
              "a.changed": {"rows": 3, "checksum": "x"}, "a.new": {"rows": 9, "checksum": "5"}}
    assert [(r["table"], r["result"], r["rows_backed_up"], r["rows_restored"]) for r in
            compare_tables(expected, actual)] == [
        ("a.changed", "content differs", 3, 3), ("a.fewer", "rows differ", 5, 4), ("a.lost", "missing", 1, None),
        ("a.new", "extra", None, 9), ("a.same", "match", 2, 2)]
