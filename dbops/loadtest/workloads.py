"""Workload profiles: weighted pgbench scripts and, for dbops' reference scripts, the id ranges they draw from.

Two kinds of script: dbops' reference workloads (profiles ``read``, ``write``, ``mixed``: ``sql/workloads/``, written
for the reference schema ``app.*``, its roles and its seed, which is checked before they run), and the operator's own
scripts (profile ``own``: every ``*.sql`` of the target's ``loadtest.workloads`` folder, or named ones
``lookup@10,overdue@1`` / ``path/to/file.sql@10``), which run against any database with no such precondition. The
``replay`` profile (dbops.loadtest.replay) is built from the target's pg_stat_statements at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbops.errors import DbopsError
from dbops.pg.connect import connection
from dbops.settings import checkout_dir


class LoadTestError(DbopsError):
    """The load test cannot run as asked."""


READ_SCRIPTS = ("read_order", "read_user_orders", "read_product")
WRITE_SCRIPTS = ("place_order",)

# profile -> [(script name, weight)]; pgbench picks a script per transaction with these weights.
PROFILES: dict[str, list[tuple[str, int]]] = {
    "read": [("read_order", 40), ("read_user_orders", 30), ("read_product", 30)],
    "write": [("place_order", 1)],
    "mixed": [("read_order", 32), ("read_user_orders", 24), ("read_product", 24), ("place_order", 20)],
}

# The operator's own scripts: every *.sql of the target's loadtest.workloads folder. Replay: pg_stat_statements.
OWN_PROFILE = "own"
REPLAY_PROFILE = "replay"

# The marker of rows created by the write workload (ISO 4217 reserves XTS for testing).
LOADTEST_CURRENCY = "XTS"

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+[\w\".]+\s+(AS\s+\w+\s+)?SET|DELETE\s+FROM|MERGE\s+INTO"
                    r"|TRUNCATE|COPY)\b", re.I)


def writes_data(text: str) -> bool:
    """Whether a pgbench script changes data (an INSERT, UPDATE, DELETE, MERGE, TRUNCATE or COPY in it)."""
    return bool(_WRITE.search(_COMMENT.sub(" ", text)))


def workloads_dir() -> Path:
    """The checkout's scripts; callers pass the target's ``loadtest.workloads`` instead."""
    return checkout_dir() / "sql" / "workloads"


@dataclass(frozen=True)
class Script:
    name: str
    path: Path
    weight: int
    reference: bool = True  # one of dbops' reference scripts (schema app, its roles and seed)
    writes: bool | None = None  # None: told by the name (the reference scripts)

    @property
    def is_write(self) -> bool:
        if self.writes is not None:
            return self.writes
        return self.name in WRITE_SCRIPTS or self.name.startswith(("write", "place"))

    def pgbench_arg(self) -> str:
        return f"{self.path}@{self.weight}"


def _is_reference(path: Path) -> bool:
    return path.resolve().parent == workloads_dir().resolve()


def _script(path: Path, weight: int, reference: bool) -> Script:
    if not path.is_file():
        raise LoadTestError(f"workload script {path} not found",
                            "check the path (the target's own scripts live in its loadtest.workloads folder)")
    reference = reference or _is_reference(path)
    writes = None if reference else writes_data(path.read_text(errors="replace"))
    return Script(path.stem, path, weight, reference, writes)


def resolve_profile(profile: str, directory: Path | None = None) -> list[Script]:
    """The scripts of a named profile (``read``/``write``/``mixed``: dbops' reference scripts; ``own``: every script
    of ``directory``), or of ``name[@weight]`` / ``file.sql[@weight]`` entries separated by commas (a bare name is
    ``directory/name.sql``)."""
    directory = directory or workloads_dir()
    if profile in PROFILES:
        return [_script(directory / f"{name}.sql", weight, True) for name, weight in PROFILES[profile]]
    if profile == OWN_PROFILE:
        paths = sorted(directory.glob("*.sql")) if directory.is_dir() else []
        if not paths:
            raise LoadTestError(f"no workload script (*.sql) in {directory}",
                                "put your pgbench scripts there (the target's loadtest.workloads folder)")
        return [_script(path, 1, False) for path in paths]
    if profile == REPLAY_PROFILE:
        raise LoadTestError("the replay profile is built from the database's pg_stat_statements",
                            "run it through run_load_test (dbops loadtest --profile replay)")
    scripts = []
    for item in profile.split(","):
        path_text, _, weight_text = item.strip().partition("@")
        try:
            weight = int(weight_text or 1)
        except ValueError as exc:
            raise LoadTestError(f"bad weight in {item!r}", "write file.sql@10 (an integer weight)") from exc
        path = Path(path_text)
        if not path_text.endswith(".sql"):
            path = directory / f"{path_text}.sql"
            if not path_text or "/" in path_text or not path.is_file():
                own = ", ".join(p.stem for p in sorted(directory.glob("*.sql"))) if directory.is_dir() else ""
                raise LoadTestError(
                    f"unknown profile {profile!r}",
                    f"use one of {', '.join(sorted([*PROFILES, OWN_PROFILE, REPLAY_PROFILE]))}"
                    + (f", a script of {directory} ({own})" if own else "") + ", or a script file such as my.sql@10")
        scripts.append(_script(path, weight, False))
    return scripts


def has_reference_schema(url: str) -> bool:
    """Whether the database holds dbops' reference schema (app.orders), which the read/write/mixed profiles need."""
    with connection(url) as conn:
        return bool(conn.execute("SELECT to_regclass('app.orders') IS NOT NULL").fetchone()[0])  # type: ignore[index]


def workload_variables(url: str) -> dict[str, int]:
    """The id ranges the scripts draw from, read from the seeded database (see dbops.seed's id layout)."""
    with connection(url) as conn:
        missing = conn.execute("SELECT to_regclass('app.orders') IS NULL").fetchone()[0]  # type: ignore[index]
        if missing:
            raise LoadTestError("the read, write and mixed profiles are dbops' reference workloads and this database "
                                "has no reference schema (no app.orders)",
                                "load-test your own database with --profile own (your scripts in the target's "
                                "loadtest.workloads) or --profile replay; or run `dbops migrate` and `dbops seed`")
        row: Any = conn.execute(
            "SELECT (SELECT count(*) FROM app.tenants), (SELECT coalesce(max(id), 0) FROM app.users),"
            " (SELECT coalesce(max(id), 0) FROM app.products),"
            " (SELECT coalesce(max(id), 0) FROM app.orders WHERE currency <> %s)",
            [LOADTEST_CURRENCY],
        ).fetchone()
    tenants, users, products, orders = (int(v) for v in row)
    if tenants == 0 or users < tenants or products < tenants or orders < tenants:
        raise LoadTestError("the database holds no seeded data (app.tenants, users, products or orders is empty)",
                            "run `dbops seed --scale 0.1` first")
    return {
        "tenants": tenants,
        "users_per_tenant": users // tenants,
        "products_per_tenant": products // tenants,
        "orders_per_tenant": orders // tenants,
    }
