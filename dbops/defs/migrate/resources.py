"""Where the migrations live and how they are checked; the database itself is the shared ``database`` resource."""

from pathlib import Path

import dagster as dg

from dbops.config import Settings
from dbops.migrate import Migrator


class MigrationsResource(dg.ConfigurableResource):
    """The versioned SQL folder (Flyway layout) and the migrator's options."""

    locations: str = ""
    out_of_order: bool = False
    lint_exclude: list[str] = []

    @property
    def path(self) -> Path:
        return Path(self.locations) if self.locations else Settings.from_env().migrations_dir

    def migrator(self, url: str) -> Migrator:
        kwargs = {"out_of_order": self.out_of_order}
        if self.lint_exclude:
            kwargs["lint_exclude"] = tuple(self.lint_exclude)
        return Migrator(url, self.path, **kwargs)
