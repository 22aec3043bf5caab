"""Workload profiles: weighted pgbench scripts from ``sql/workloads/`` and the id ranges they draw from."""

from __future__ import annotations

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

# The marker of rows created by the write workload (ISO 4217 reserves XTS for testing).
LOADTEST_CURRENCY = "XTS"


def workloads_dir() -> Path:
    """The checkout's scripts; callers pass the target's ``loadtest.workloads`` instead."""
    return checkout_dir() / "sql" / "workloads"


@dataclass(frozen=True)
class Script:
    name: str
    path: Path
    weight: int

    @property
    def is_write(self) -> bool:
        return self.name in WRITE_SCRIPTS or self.name.startswith(("write", "place"))

    def pgbench_arg(self) -> str:
        return f"{self.path}@{self.weight}"


def resolve_profile(profile: str, directory: Path | None = None) -> list[Script]:
    """The scripts of a named profile, or of ``file.sql[@weight]`` entries separated by commas."""
    directory = directory or workloads_dir()
    if profile in PROFILES:
        entries = [(directory / f"{name}.sql", weight) for name, weight in PROFILES[profile]]
    elif profile.endswith(".sql") or ".sql@" in profile:
        entries = []
        for item in profile.split(","):
            path_text, _, weight_text = item.partition("@")
            try:
                weight = int(weight_text or 1)
            except ValueError as exc:
                raise LoadTestError(f"bad weight in {item!r}", "write file.sql@10 (an integer weight)") from exc
            entries.append((Path(path_text), weight))
    else:
        raise LoadTestError(f"unknown profile {profile!r}",
                            f"use one of {', '.join(sorted(PROFILES))}, or a script file such as my.sql@10")
    scripts = []
    for path, weight in entries:
        if not path.is_file():
            raise LoadTestError(f"workload script {path} not found", "check the path (scripts live in sql/workloads/)")
        scripts.append(Script(path.stem, path, weight))
    return scripts


def workload_variables(url: str) -> dict[str, int]:
    """The id ranges the scripts draw from, read from the seeded database (see dbops.seed's id layout)."""
    with connection(url) as conn:
        missing = conn.execute("SELECT to_regclass('app.orders') IS NULL").fetchone()[0]  # type: ignore[index]
        if missing:
            raise LoadTestError("the reference schema is not there (no app.orders)",
                                "run `dbops migrate` and `dbops seed` first")
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
