"""`dbops metrics serve|show` and `dbops alerts test`: the health figures for Prometheus, and a dry run of the
targets file against the live database (optionally sending a test notification to every sink)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable

import dagster as dg
from prometheus_client import generate_latest, start_http_server

from dbops.errors import ConfigError
from dbops.health.alerts import Alert
from dbops.health.exporter import build_registry
from dbops.health.lifecycle import LifecycleFigures, lifecycle_figures
from dbops.health.metrics import collect_health
from dbops.health.sinks import deliver, sinks_from_settings
from dbops.health.targets import Targets, load_targets
from dbops.instance import prepare_environment
from dbops.redact import redact, redact_url
from dbops.settings import Settings

DEFAULT_PORT = 9188  # postgres_exporter owns 9187


def lifecycle_reader(settings: Settings, targets: Targets | None = None) -> Callable[[], LifecycleFigures]:
    """Reads the (default) target's figures of the other steps (its ``<target>/<asset>`` records) from the Dagster
    instance dbops uses (DAGSTER_HOME, prepared like `dbops run`)."""
    prepare_environment(settings)
    instance = dg.DagsterInstance.get()
    target = settings.target()
    checks = (targets or load_targets(target.targets_file)).checks
    return lambda: lifecycle_figures(instance, checks, target=target.name)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--no-lifecycle", action="store_true",
                        help="database health only: do not read the lifecycle figures from Dagster")
    return parser


def metrics_main(argv: list[str], settings: Settings) -> int:
    """`dbops metrics serve [--addr A] [--port P]` | `dbops metrics show`."""
    parser = _parser("dbops metrics")
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="expose /metrics for Prometheus until interrupted")
    serve.add_argument("--addr", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})")
    sub.add_parser("show", help="print one scrape in the Prometheus text format")
    args = parser.parse_args(argv)

    url = settings.target_url()
    lifecycle = None if args.no_lifecycle else lifecycle_reader(settings)
    registry = build_registry(url, lifecycle)
    if args.action == "show":
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    try:
        server, thread = start_http_server(args.port, args.addr, registry)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.addr}:{args.port}: {exc.strerror}", "pick another --port") from exc
    print(f"serving metrics of {redact_url(url)} on http://{args.addr}:{args.port}/metrics (Ctrl-C to stop)",
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return 0


def alerts_main(argv: list[str], settings: Settings) -> int:
    """`dbops alerts test [--targets FILE] [--send]`: every target's state now (ignoring `for`)."""
    parser = _parser("dbops alerts")
    sub = parser.add_subparsers(dest="action", required=True)
    test = sub.add_parser("test", help="validate the targets file and show each target against the live figures")
    test.add_argument("--targets", help="targets file (default DBOPS_TARGETS or monitoring/targets.yml)")
    test.add_argument("--send", action="store_true", help="also send a test notification to every configured sink")
    args = parser.parse_args(argv)

    targets = load_targets(args.targets or settings.target().targets_file)
    print(f"targets: {targets.source}: {len(targets.metrics)} metric(s), {len(targets.checks)} check(s) - valid")
    url = settings.target_url()
    first = collect_health(url)
    time.sleep(1.0)
    sample = collect_health(url, first.state())
    figures = sample.metrics
    lifecycle = None if args.no_lifecycle else lifecycle_reader(settings, targets)()
    if lifecycle is not None and lifecycle.backup_age_seconds is not None:
        figures = {**figures, "backup_age_seconds": lifecycle.backup_age_seconds}
    if sample.error:
        print(f"database {redact_url(url)} is down: {sample.error}")
    missed = 0
    print(f"{'target':<48} {'now':>14}  state")
    for target in targets.metrics:
        value = figures.get(target.metric)
        state = "no data" if value is None else ("MISSED" if target.missed(value) else "ok")
        missed += state == "MISSED"
        shown = "-" if value is None else f"{value:.4g}"
        print(f"{target.metric + ' ' + target.op + ' ' + format(target.threshold, 'g'):<48} {shown:>14}  {state}"
              f"{'' if state != 'MISSED' else f' ({target.severity}, pages after {target.for_seconds:g} s)'}")
    for check in targets.checks:
        outcome = lifecycle.checks.get((check.asset, check.check)) if lifecycle else None
        state = "not run" if outcome is None else ("ok" if outcome[0] else "MISSED")
        missed += state == "MISSED"
        print(f"{check.asset + '/' + check.check:<48} {'':>14}  {state}")
    print(f"{missed} target(s) missed right now")
    if not args.send:
        return 0
    now = time.time()
    alert = Alert(key="test", status="firing", severity="warning", summary="test alert from `dbops alerts test`",
                  detail=f"{missed} target(s) missed on {redact_url(url)}", at=now, started_at=now,
                  target=settings.target().name)
    failures = 0
    for delivery in deliver([alert], sinks_from_settings(settings.target().alerts), retries=2, backoff=0.5):
        failures += not delivery.ok
        print(f"sink {delivery.sink}: {'delivered' if delivery.ok else 'FAILED ' + redact(delivery.error)}")
    return 1 if failures else 0


def main(argv: list[str], settings: Settings) -> int:
    """`main(["metrics", ...])` or `main(["alerts", ...])`, for a single entry point."""
    if argv and argv[0] in ("metrics", "alerts"):
        return (metrics_main if argv[0] == "metrics" else alerts_main)(argv[1:], settings)
    print("usage: dbops metrics serve|show | dbops alerts test", file=sys.stderr)
    return 2
