"""Two databases dbops did not create, for testing every step on a team's own schema.

``library`` (schema ``lending`` + ``public``: monthly partitions with a DEFAULT, a composite type, a domain, an enum,
row triggers, a NOT VALID check, a foreign key onto the partitioned table, a SECURITY DEFINER function calling another
of its schema unqualified) and ``telemetry`` (schema ``iot`` + ``public``: daily partitions on a timestamptz, a
statement trigger with a transition table, an exclusion constraint, foreign keys from and onto the partitioned table).
Neither knows the reference schema; each has a Flyway migration folder to apply after a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ForeignSchema:
    name: str
    schemas: tuple[str, ...]  # its user schemas, `public` included
    default_schema: str  # Flyway's defaultSchema for its migrations
    baseline_version: str  # the version its existing state is baselined at, as its files spell versions
    next_version: str  # the first migration in migrations/
    partitioned: dict[str, str]  # partitioned table -> its partition key (a time column)
    definer_calls: tuple[str, ...]  # SECURITY DEFINER calls that must keep working (as the table owner)
    placeholders: dict[str, str] = field(default_factory=dict)  # user placeholders its migrations use

    @property
    def schema_sql(self) -> Path:
        return HERE / self.name / "schema.sql"

    @property
    def migrations(self) -> Path:
        return HERE / self.name / "migrations"

    @property
    def workloads(self) -> Path:
        """Its own pgbench scripts (a read and a write)."""
        return HERE / self.name / "workloads"


LIBRARY = ForeignSchema(
    name="library", schemas=("lending", "public"), default_schema="lending", baseline_version="020",
    next_version="021", partitioned={"lending.loans": "loaned_on"},
    definer_calls=("SELECT lending.member_summary(1)",), placeholders={"reminder_channel": "email"},
)
TELEMETRY = ForeignSchema(
    name="telemetry", schemas=("iot", "public"), default_schema="iot", baseline_version="1", next_version="2",
    partitioned={"iot.readings": "recorded_at"},
    definer_calls=("SELECT iot.record_reading(1, 21.5, 40)",),
)
SCHEMAS: dict[str, ForeignSchema] = {s.name: s for s in (LIBRARY, TELEMETRY)}


def create(url: str, schema: ForeignSchema) -> None:
    """Build ``schema``'s database, seed data included, in the (empty) database at ``url``: as its team would have,
    with plain SQL and no migration history."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(schema.schema_sql.read_text())
