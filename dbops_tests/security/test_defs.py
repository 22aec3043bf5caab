"""The security group loads with the shared resources, materializes against real servers with its two gates, and no
log line, event or metadata value carries the database password."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest

from dbops.components import migrate, security
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource, MigrationsResource, default_resources
from dbops.components.schedules import build_schedules
from dbops.components.security.assets import build_security_audit
from dbops.components.security.resources import SecurityResource
from dbops.pg.server import EmbeddedServer
from dbops.security.findings import Severity
from dbops.settings import load_settings
from dbops_tests.security import flaws
from dbops_tests.security.conftest import REF_DB

TARGET = "dbops"
security_audit = build_security_audit(TARGET)


def test_security_group_loads(tmp_path: Path) -> None:
    steps = dg.Definitions.merge(migrate.build(TARGET, rehearsal=True), security.build(TARGET))
    own = {k for a in steps.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    target = load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path).target(TARGET)
    merged = dg.Definitions.merge(steps, dg.Definitions(schedules=build_schedules(target, own), resources={
        **default_resources(), "migrations": MigrationsResource(), "security": SecurityResource(),
        "backups": BackupResource()}))
    dg.Definitions.validate_loadable(merged)
    graph = merged.resolve_asset_graph()
    key = asset_key(TARGET, "security_audit")
    assert graph.get(key).group_name == "security"
    assert asset_key(TARGET, "schema_migrations") in graph.get(key).parent_keys
    assert {dg.AssetCheckKey(key, "no_critical_findings"), dg.AssetCheckKey(key, "no_high_findings")} <= set(
        graph.asset_check_keys)
    assert merged.resolve_schedule_def("dbops_security_audit_daily").cron_schedule == "15 5 * * *"


def materialize(url: str) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [security_audit],
        instance=instance,
        resources={"database": DatabaseResource(url=url), "security": SecurityResource(check_backups=False)},
        raise_on_error=False,
    )
    return result, instance


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, dg.AssetCheckSeverity]]:
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("which", ["weak", "hardened"])
def test_materialize_gates_and_no_password_anywhere(
    which: str, weak_server: EmbeddedServer, plain_server: EmbeddedServer, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = weak_server if which == "weak" else plain_server
    password = server.password
    caplog.set_level(logging.DEBUG)
    result, instance = materialize(server.url(REF_DB))
    assert result.success
    metadata = result.asset_materializations_for_node(op_name(TARGET, "security_audit"))[0].metadata
    checks = check_results(result)
    if which == "weak":
        # the backup findings (SEC03x, SEC102) are not part of this run
        planted = [(rule, sev) for (rule, _), (sev, _) in flaws.expected().items()
                   if not rule.startswith("SEC03") and rule != "SEC102"]
        assert metadata["findings_critical"].value == sum(sev is Severity.CRITICAL for _, sev in planted)
        assert checks["no_critical_findings"] == (False, dg.AssetCheckSeverity.ERROR)
        assert checks["no_high_findings"] == (False, dg.AssetCheckSeverity.WARN)
    else:
        assert metadata["findings_critical"].value == 0 and metadata["findings_high"].value == 0
        assert checks == {"no_critical_findings": (True, dg.AssetCheckSeverity.ERROR),
                          "no_high_findings": (True, dg.AssetCheckSeverity.WARN)}
    assert "***" in metadata["target"].value
    # grep everything the run produced for the password
    captured = capsys.readouterr()
    haystack = [captured.out, captured.err, caplog.text, *(str(m.value) for m in metadata.values())]
    haystack += [str(record) for record in instance.all_logs(result.run_id)]
    assert all(password not in text for text in haystack)
    assert any("security audit of" in str(record) for record in instance.all_logs(result.run_id))
