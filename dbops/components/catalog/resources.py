"""Where the catalog keeps its snapshots and docs, and which schemas it documents."""

from pathlib import Path

from dbops.components.resources import TargetedResource, launch_settings


class CatalogResource(TargetedResource):
    """``output_dir`` defaults to ``$DBOPS_HOME/catalog``; ``schemas`` empty means every non-system schema."""

    output_dir: str = ""
    schemas: list[str] = []

    @property
    def root(self) -> Path:
        return Path(self.output_dir) if self.output_dir else launch_settings().home / "catalog"

    @property
    def schema_filter(self) -> list[str] | None:
        return list(self.schemas) or None
