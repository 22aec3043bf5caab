"""Settings of a target for a team database (dbops_tests/foreign), as its operator would write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbops.settings import Settings, TargetSettings, load_settings
from dbops_tests.foreign import ForeignSchema

URL_ENV = "TEAM_DATABASE_URL"


def write_team_config(schema: ForeignSchema, tmp_path: Path, *, migrations: Path | None = None,
                      **migrate: Any) -> Path:
    """A dbops.yaml (JSON is YAML) with one target for ``schema``: its schemas, migrations folder, default schema,
    baseline version and placeholders; ``migrate`` overrides or adds `migrate.*` options."""
    options: dict[str, Any] = {"default_schema": schema.default_schema, "baseline_version": schema.baseline_version,
                               "placeholders": dict(schema.placeholders), **migrate}
    config = {"home": str(tmp_path / "home"), "targets": {schema.name: {
        "url_env": URL_ENV, "schemas": list(schema.schemas), "migrations": str(migrations or schema.migrations),
        "migrate": options}}}
    path = tmp_path / "dbops.yaml"
    path.write_text(json.dumps(config))
    return path


def team_settings(schema: ForeignSchema, url: str, tmp_path: Path, **kwargs: Any) -> Settings:
    return load_settings({URL_ENV: url}, cwd=tmp_path, config_file=write_team_config(schema, tmp_path, **kwargs))


def team_target(schema: ForeignSchema, url: str, tmp_path: Path, **kwargs: Any) -> TargetSettings:
    return team_settings(schema, url, tmp_path, **kwargs).target(schema.name)
