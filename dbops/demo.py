"""`dbops demo` (what `make demo` runs): the whole lifecycle of every target on the embedded server, then a scorecard
per target. Each run prints its steps' phases as they happen (:class:`dbops.runner.Progress`) and is a run of the
target's job in the code location, so the UI shows and re-executes it. A target backing up to S3 on a loopback
endpoint nothing answers yet gets an S3 server (SeaweedFS) the demo starts for it, with the credentials its settings
reference, and stops at the end."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import dagster as dg

from dbops.definitions import defs as build_definitions
from dbops.definitions import load
from dbops.health.targets import load_targets
from dbops.instance import prepare_environment
from dbops.pg.connect import connection
from dbops.runner import RunSummary, run_selection
from dbops.s3server import S3Server, start_s3_server
from dbops.scorecard import Scorecard, build_scorecard
from dbops.seed import seed
from dbops.settings import Settings, TargetSettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def orders_present(url: str) -> bool:
    with connection(url) as conn:
        exists = conn.execute("SELECT to_regclass('app.orders') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        if not exists:
            return False
        return conn.execute("SELECT EXISTS (SELECT 1 FROM app.orders)").fetchone()[0]  # type: ignore[index]


def lifecycle_selection(defs: dg.Definitions, target: TargetSettings) -> list[dg.AssetKey]:
    """``target``'s executable, unpartitioned assets but its migrations (run first). A target without a WAL spool
    shares a server whose WAL another target archives: its backups are logical (the server's base backups are that
    other target's)."""
    graph = defs.resolve_asset_graph()
    physical = {"base_backup", "wal_archive"} if target.wal_spool is None else set()
    return sorted(
        (
            key
            for key in graph.get_all_asset_keys()
            if key.path[0] == target.name and graph.get(key).is_executable and not graph.get(key).is_partitioned
            and graph.get(key).group_name != "migrate" and key.path[-1] not in physical
        ),
        key=lambda k: k.to_user_string(),
    )


# The demo's load test: the 10,000-user ramp through PgBouncer, with short steps so the demo stays a few minutes.
DEMO_LOAD_TEST = {"load_test": {"config": {"ramp": [100, 10000], "duration_s": 15, "capacity_duration_s": 10}}}


def integrity_window(defs: dg.Definitions | None = None, target: str = "", days: int = 30) -> tuple[str, str]:
    """Every daily partition of ``target``'s integrity_validation in ``defs`` (they start at the day of its oldest
    row: every day that has data, the 60 seeded days of the reference schema); without ``defs``, the last ``days``
    complete UTC days."""
    if defs is not None:
        node = defs.resolve_asset_graph().get(dg.AssetKey([target, "integrity_validation"]))
        keys = node.partitions_def.get_partition_keys() if node.partitions_def else []
        if keys:
            return keys[0], keys[-1]
    today = datetime.now(UTC).date()
    return (today - timedelta(days=days)).isoformat(), (today - timedelta(days=1)).isoformat()


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def demo_s3_servers(settings: Settings, stack: ExitStack) -> list[S3Server]:
    """An S3 server for every target whose store is S3 at a loopback endpoint that does not answer, in
    ``$DBOPS_HOME/s3/<target>``, with the credentials the target's settings reference; its bucket created."""
    servers = []
    for target in settings.targets.values():
        s3 = target.backup.s3
        if target.backup.store != "s3" or not s3.endpoint:
            continue
        where = urlsplit(s3.endpoint)
        port = where.port or 80
        if where.hostname not in LOOPBACK or _listening("127.0.0.1", port):
            continue
        if s3.access_key_id is None or s3.secret_access_key is None:
            print(f"   {target.name}: no S3 credentials referenced (backup.s3.access_key_id_env): not starting one")
            continue
        t = _step(f"S3 server for {target.name} on {s3.endpoint} (SeaweedFS, {settings.home / 's3' / target.name})")
        server = stack.enter_context(start_s3_server(
            settings.home / "s3" / target.name, access_key=s3.access_key_id.resolve(),
            secret_key=s3.secret_access_key.resolve(), port=port))
        client = server.client()
        if s3.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=s3.bucket)
        servers.append(server)
        _done(t)
    return servers


def _report(summary: RunSummary) -> int:
    """The run's summary (its phases were printed as they happened), and its one-line error when it failed; 1 for a
    failed run."""
    print(summary.render())
    if not summary.success:
        print(f"  error: {summary.error()}", flush=True)
    return int(not summary.success)


def run_target(defs: dg.Definitions, instance: dg.DagsterInstance, settings: Settings,
               target: TargetSettings, load_test: dict | None = None,
               reload: Callable[[], dg.Definitions] | None = None) -> int:
    """The lifecycle of one target; the number of runs that failed. ``load_test``: the load_test op's config (the
    demo's 10,000-user ramp when None). A team's own database keeps its data: only the reference schema is seeded.
    ``reload`` rebuilds the definitions before the integrity backfill: loaded before the seed, their partitions
    started at the fallback window; rebuilt, they start at the oldest row, and the backfill covers every one."""
    failures = 0
    name, level = target.name, settings.log_level
    t = _step(f"{name}: migrate (group migrate: the rehearsal on the latest backup, then schema_migrations)")
    failures += _report(run_selection(defs, "group:migrate", instance, log_level=level, target=name))
    _done(t)

    url = settings.target_url(name)
    t = _step(f"{name}: seed (scale {target.seed.scale:g})")
    if not settings.runs_reference_schema(name):
        print("   not dbops' reference schema (its own migrations): its own data is kept, nothing seeded")
    elif orders_present(url):
        print("   already seeded; keeping the data (`dbops seed --reset` reseeds)")
    else:
        result = seed(url, target.seed.scale)
        print("\n".join("   " + line for line in result.render().splitlines()))
    _done(t)

    rest = lifecycle_selection(defs, target)
    if rest:
        t = _step(f"{name}: lifecycle: " + ", ".join(k.path[-1] for k in rest))
        selection = " or ".join(f'key:"{k.to_user_string()}"' for k in rest)
        ops_config = DEMO_LOAD_TEST if load_test is None else {"load_test": {"config": load_test}}
        failures += _report(run_selection(defs, selection, instance, ops_config=ops_config, log_level=level,
                                          target=name))
        _done(t)

    if dg.AssetKey([name, "integrity_validation"]) in defs.resolve_asset_graph().get_all_asset_keys():
        if reload is not None:
            defs = reload()
        first, last = integrity_window(defs, name)
        days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
        t = _step(f"{name}: integrity validation backfill: {first} to {last} (every daily partition: {days}, one run)")
        failures += _report(run_selection(defs, "integrity_validation", instance, partition_range=(first, last),
                                          log_level=level, target=name))
        _done(t)
    return failures


def run_demo(settings: Settings, scale: float | None = None) -> int:
    """Every target's lifecycle; ``scale`` (``--scale``) overrides every target's ``seed.scale``."""
    began = time.monotonic()
    t = _step("embedded PostgreSQL (" + ", ".join(t.db_name for t in settings.targets.values() if t.embedded) + ")")
    settings = prepare_environment(settings)
    _done(t)

    failures = 0
    cards: list[Scorecard] = []
    with ExitStack() as stack, dg.DagsterInstance.get() as instance:
        demo_s3_servers(settings, stack)
        defs = load()
        defined = set(defs.resolve_asset_graph().get_all_asset_keys())
        for target in settings.targets.values():
            if scale is not None:
                target = _with_scale(target, scale)
            failures += run_target(defs, instance, settings, target, reload=build_definitions)
        t = _step("scorecards")
        for target in settings.targets.values():
            card = build_scorecard(instance, target.name, defined, load_targets(target.targets_file).limits)
            print(card.render() + "\n")
            cards.append(card)
        _done(t)
    print(f"\ndemo finished in {time.monotonic() - began:.1f} s; the runs are in the Dagster UI (`make ui`)")
    for card in cards:
        if card.failed:
            print(f"{card.target}: targets missed: " + ", ".join(r.target.metric for r in card.failed)
                  + " (measured, see above)")
    # A missed target is a finding, reported above; the demo fails only when a step could not run.
    return 1 if failures else 0


def _with_scale(target: TargetSettings, scale: float) -> TargetSettings:
    return replace(target, seed=replace(target.seed, scale=scale))
