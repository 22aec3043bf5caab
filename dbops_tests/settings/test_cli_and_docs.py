"""`dbops config check|show` through the real CLI, and the generated documentation being current."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dbops.settings import docs
from dbops_tests.conftest import run_dbops
from dbops_tests.settings.test_settings import SECRET, TWO_TARGETS, write


def config_env(tmp_path: Path, config: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its DBOPS_* variables, a private home, and ``config`` as DBOPS_CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPS_") and k != "DAGSTER_HOME"}
    env.update(DBOPS_HOME=str(tmp_path / "home"), DBOPS_CONFIG=str(config), **extra)
    return env


def test_config_check_prints_the_tree_with_secrets_masked(tmp_path: Path) -> None:
    config = write(tmp_path, TWO_TARGETS)
    env = config_env(tmp_path, config, SHOP_DATABASE_URL=f"postgresql://app:{SECRET}@db.example:5432/shop",
                     SHOP_S3_KEY_ID="AKIDEXAMPLE", SHOP_S3_SECRET=SECRET, SHOP_SLACK=f"https://hooks.example/{SECRET}",
                     DBOPS_BACKUP_KEEP_LAST="4")
    result = run_dbops(["config", "check"], env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "url_env: SHOP_DATABASE_URL (***)" in result.stdout
    assert "secret_access_key_env: SHOP_S3_SECRET (***)" in result.stdout
    assert "keep_last: 4" in result.stdout and "# DBOPS_BACKUP_KEEP_LAST" in result.stdout  # the dbops target
    assert "configuration OK: 2 target(s): dbops (embedded), shop (external)" in result.stderr

    shown = run_dbops(["config", "show", "--json", "--target", "shop"], env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert list(body["settings"]["targets"]) == ["shop"]
    assert body["settings"]["targets"]["shop"]["url_env"] == "SHOP_DATABASE_URL (***)"
    assert body["settings"]["targets"]["shop"]["backup"]["keep_last"] == "3"
    assert body["sources"]["targets.shop.backup.keep_last"] == f"{config}:11"
    assert SECRET not in shown.stdout


def test_config_check_exits_2_with_one_line_per_mistake(tmp_path: Path) -> None:
    config = write(tmp_path, """
        targets:
          shop:
            url_env: SHOP_DATABASE_URL
            backup:
              keep_last: x
              keep_lst: 3
        """)
    env = config_env(tmp_path, config)
    result = run_dbops(["config", "check"], env, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    # one line per mistake; the file is named as given (run_dbops works in the checkout, the file is elsewhere)
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{config}:") for line in lines), result.stderr
    assert lines[0].endswith(":5: targets.shop.backup.keep_last: must be a positive integer, got 'x' — set it to "
                             "e.g. 7")
    assert lines[1].endswith(":6: targets.shop.backup.keep_lst: unknown key — did you mean keep_last?")

    # Fixed, the unset variable is what remains: still exit 2, one line, no value.
    config.write_text(config.read_text().replace("keep_last: x", "keep_last: 2").replace("      keep_lst: 3\n", ""))
    result = run_dbops(["config", "check"], env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:3: targets.shop.url_env: SHOP_DATABASE_URL is unset — export SHOP_DATABASE_URL where dbops runs "
        "(dbops never reads a secret from the file), or fix the name"]
    shown = run_dbops(["config", "show"], env, timeout=120)  # show prints what is there, unset included
    assert shown.returncode == 0 and "url_env: <unset: SHOP_DATABASE_URL>" in shown.stdout


def test_generated_docs_are_current() -> None:
    """docs/configuration.md and the README's option tables are exactly what the option table generates."""
    for path, text in docs.generated().items():
        assert path.read_text() == text, f"{path.name} is stale — run `{docs.COMMAND}` and commit the result"
    assert docs.main(["--check"]) == 0


def test_a_stale_readme_table_is_rewritten_and_the_prose_kept() -> None:
    readme = docs.README.read_text()
    assert "<!-- options:begin readme=database -->" in readme and "<!-- options:begin readme=backup -->" in readme
    stale = readme.replace("| `DBOPS_BACKUP_KEEP_LAST` |", "| `DBOPS_BACKUP_KEEP_LST` |")
    assert stale != readme and docs.render_readme(stale) == readme
    for opt in docs.OPTIONS:
        if opt.readme and opt.env:
            assert f"| `{opt.env}` |" in readme, opt.env
