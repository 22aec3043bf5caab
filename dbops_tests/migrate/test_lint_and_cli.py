"""squawk lint through dbops, and `dbops migrate` from a shell."""

from __future__ import annotations

from pathlib import Path

from dbops.migrate import DEFAULT_LINT_EXCLUDE, Migrator, lint_files
from dbops_tests.conftest import dbops_env, run_dbops


def test_lint_reports_blocking_ddl_with_lines_and_skips_timeout_rules(tmp_path: Path) -> None:
    path = tmp_path / "V2__risky.sql"
    path.write_text("-- adds an index the slow way\nCREATE INDEX orders_note_idx ON orders (note);\n")
    findings = lint_files([path])
    rules = {f.rule for f in findings}
    assert "require-concurrent-index-creation" in rules
    assert not rules & {"require-lock-timeout", "require-statement-timeout"}
    finding = next(f for f in findings if f.rule == "require-concurrent-index-creation")
    assert finding.line == 2 and finding.file.endswith("V2__risky.sql") and finding.level == "warning"
    assert lint_files([path], exclude=(*DEFAULT_LINT_EXCLUDE, "require-concurrent-index-creation")) == [
        f for f in findings if f.rule != "require-concurrent-index-creation"
    ]


def test_plan_attaches_lint_findings_to_pending_files(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "V1__t.sql").write_text("CREATE TABLE t (id bigint PRIMARY KEY, note text);\n")
    (d / "V2__idx.sql").write_text("CREATE INDEX t_note_idx ON t (note);\n")
    migrator = Migrator(fresh_db, d)
    migrator.apply(target="1")
    plan = migrator.plan()
    assert [p.migration.script for p in plan] == ["V2__idx.sql"]
    assert "require-concurrent-index-creation" in {f.rule for f in plan[0].findings}


def test_cli_apply_info_validate_and_errors(pg_server, fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "V1__create_things.sql").write_text("CREATE TABLE things (id bigint PRIMARY KEY);\n")
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(d))
    applied = run_dbops(["migrate"], env)
    assert applied.returncode == 0, applied.stderr
    assert "V1__create_things.sql" in applied.stdout and "current version 1" in applied.stdout
    assert pg_server.password not in applied.stdout + applied.stderr
    info = run_dbops(["migrate", "info"], env)
    assert info.returncode == 0 and "create things" in info.stdout and "success" in info.stdout
    assert run_dbops(["migrate", "validate"], env).returncode == 0
    (d / "V1__create_things.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);\n")
    broken = run_dbops(["migrate", "validate"], env)
    assert broken.returncode == 1
    assert broken.stderr.startswith("error:") and "checksum mismatch" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    (d / "V2_bad_name.sql").write_text("SELECT 1;\n")
    bad = run_dbops(["migrate"], env)
    assert bad.returncode == 1 and "malformed migration file name" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_operator_errors_are_one_line_and_exit_1(pg_server, fresh_db: str, tmp_path: Path) -> None:
    from dbops.pg.server import free_port

    d = tmp_path / "m"
    d.mkdir()
    (d / "V1__a.sql").write_text("SELECT 1;\n")
    cases = {
        "cannot connect to": dict(DBOPS_DATABASE_URL=f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/x",
                                  DBOPS_MIGRATIONS=str(d)),
        "password authentication failed": dict(
            DBOPS_DATABASE_URL=fresh_db.replace(pg_server.password, "secret-pw"), DBOPS_MIGRATIONS=str(d)),
        "migrations folder": dict(DBOPS_MIGRATIONS=str(tmp_path / "missing")),
    }
    for expected, extra in cases.items():
        result = run_dbops(["migrate"], dbops_env(pg_server, fresh_db, tmp_path, **extra))
        assert result.returncode == 1, (expected, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (expected, lines)
        assert "secret-pw" not in result.stderr
