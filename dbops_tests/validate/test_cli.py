"""`dbops validate` from a shell: clean data exits 0, a violation exits 1 and names it, a bad rule file one line,
nothing to check exits 3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.settings import Settings, load_settings
from dbops.validate.cli import main
from dbops_tests.conftest import dbops_env, run_dbops


def settings_for(url: str, **env: str) -> Settings:
    return load_settings({"DBOPS_DATABASE_URL": url, **env})


def test_cli_clean_then_violation(seeded_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    day = datetime.now(UTC).date() - timedelta(days=2)
    assert main(["--from", day.isoformat(), "--to", (day + timedelta(days=1)).isoformat(), "--indexes"],
                settings_for(seeded_db)) == 0
    out = capsys.readouterr().out
    assert "no integrity violations" in out and "indexes:" in out
    password = urlsplit(seeded_db).password
    assert not password or password not in out

    with connection(seeded_db) as conn:
        conn.execute("SET session_replication_role = replica")  # V11 would refuse the line without its total
        conn.execute(
            "UPDATE app.order_items SET quantity = 5000 WHERE id = (SELECT min(id) FROM app.order_items "
            "WHERE order_created_at >= %s::date AND order_created_at < %s::date + 1)",
            (day, day),
        )
    assert main(["--from", day.isoformat(), "--no-dimensions"], settings_for(seeded_db)) == 1
    out = capsys.readouterr().out
    assert "FAIL app.order_items rule between quantity (order_items.yml:3): 1 unexpected" in out
    assert "'quantity': 5000" in out


def test_cli_bad_rule_file(seeded_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "orders.yml").write_text("rules:\n  - between: {column: totl, max: 1}\n", encoding="utf-8")
    from dbops.validate.rules import RuleFileError

    with pytest.raises(RuleFileError, match=r"orders.yml:2: app.orders has no column 'totl'"):
        main([], settings_for(seeded_db, DBOPS_EXPECTATIONS=str(tmp_path)))


def test_dbops_validate_on_an_empty_database_exits_3(pg_server: EmbeddedServer, fresh_db: str,
                                                     tmp_path: Path) -> None:
    """The real `dbops validate` (dbops.cli passes the step's status through): nothing to check is exit 3."""
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(tmp_path))
    proc = run_dbops(["validate", "--indexes"], env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("nothing checked: ") and "no table of public" in last and "no btree index" in last
