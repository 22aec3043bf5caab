"""How one target's definitions are named: assets ``<target>/<asset>``, schedules, sensors and jobs
``<target>_<name>``, and the Dagster pool ``<target>`` every step that touches the target's database runs in."""

from __future__ import annotations

import dagster as dg


def asset_key(target: str, name: str) -> dg.AssetKey:
    """``shop/schema_migrations``."""
    return dg.AssetKey([target, name])


def op_name(target: str, name: str) -> str:
    """The op (step) of ``<target>/<name>``, as Dagster names it: the run config's ``ops`` key."""
    return f"{target}__{name}"


def def_name(target: str, name: str) -> str:
    """A schedule, sensor or job of one target: ``shop_catalog_daily``."""
    return f"{target}_{name}"


def pool(target: str) -> str:
    """The pool of a target: its steps queue for one slot (``pools: default_limit`` in dagster.yaml), so a backup, a
    drill, a rehearsal and a load test never hit one database at once, while other targets run side by side."""
    return target
