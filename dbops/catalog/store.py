"""Where catalog snapshots and generated docs are kept between runs: one folder per database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dbops.catalog.docs import write_docs


class CatalogStore:
    """``<root>/<database>/snapshot.json`` (the latest), ``snapshot.previous.json``, and the generated docs."""

    def __init__(self, root: Path, database: str) -> None:
        self.folder = Path(root) / database

    @property
    def latest_path(self) -> Path:
        return self.folder / "snapshot.json"

    def latest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.latest_path.read_text())
        except FileNotFoundError:
            return None

    def save(self, snap: dict[str, Any]) -> dict[str, Path]:
        """Keep the previous snapshot, write the new one atomically, and regenerate the docs from it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.latest_path.exists():
            self.latest_path.replace(self.folder / "snapshot.previous.json")
        tmp = self.latest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(snap, indent=1, sort_keys=True, default=str))
        tmp.replace(self.latest_path)
        return {"snapshot": self.latest_path, **write_docs(snap, self.folder)}
