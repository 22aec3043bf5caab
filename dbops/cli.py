"""The `dbops` command: the embedded server, the Dagster UI and runs, and one group per lifecycle step.

Every failure an operator can cause ends as one line on stderr (``error: <problem> — <fix>``) and exit status 1; a
mistake in the configuration (environment or dbops.yaml) is one such line per mistake and exit status 2. The settings
are read once here (:func:`dbops.settings.load_settings`) and handed to the command.
SIGTERM, SIGINT (Ctrl-C) and SIGHUP become an exception (:class:`Terminated`), so every ``finally`` of the running
step runs (staging directories removed, child programs stopped, partial backup objects discarded) before dbops exits
with one line and status 128 + the signal number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from dbops.embedded import ensure_embedded
from dbops.errors import DbopsError, UnknownTarget
from dbops.health.targets import load_targets
from dbops.instance import prepare_environment
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection
from dbops.redact import redact, redact_url
from dbops.settings import Settings, SettingsError, load_settings

# `dbops <command> ...` handed to the step's own CLI: command -> (module, function, what it does). The step is the
# module's folder, dbops/<step>/, the name of its Dagster group too; `dbops --help` shows it in brackets.
STEP_COMMANDS: dict[str, tuple[str, str, str]] = {
    "migrate": ("dbops.migrate.cli", "main", "info, plan [--rehearse], validate, apply, undo, baseline, repair, lint"),
    "seed": ("dbops.seed.cli", "main", "load the deterministic reference data"),
    "loadtest": ("dbops.loadtest.cli", "main", "pgbench workloads, a users ramp through PgBouncer"),
    "backup": ("dbops.backup.cli", "backup_main", "run, list, verify, export, prune backups; keygen"),
    "wal": ("dbops.backup.cli", "wal_main", "push, list, status of the WAL archive"),
    "restore": ("dbops.restore.cli", "restore_main", "a backup into an empty database or data directory"),
    "drill": ("dbops.restore.cli", "drill_main", "restore into a scratch copy, compare it, time it"),
    "validate": ("dbops.validate.cli", "main", "integrity rules and amcheck on the data"),
    "security": ("dbops.security.cli", "main", "audit, harden --plan"),
    "partitions": ("dbops.maintain.partitions_cli", "main", "status, maintain, move-default of range partitions"),
    "profile": ("dbops.profile.cli", "profile_main", "top statements, their plans, table facts"),
    "advise": ("dbops.profile.cli", "advise_main", "index advice verified on a scratch copy"),
    "metrics": ("dbops.health.cli", "metrics_main", "the health figures for Prometheus: serve, show"),
    "alerts": ("dbops.health.cli", "alerts_main", "the targets file against the live figures; test the sinks"),
    "config": ("dbops.settings.cli", "main", "check and show the settings"),
}


# The lifecycle steps, in order: each is a folder dbops/<step>/, a Dagster layer dbops/components/<step>/ and a Dagster
# group of the same name (`dbops run 'group:<step>'`).
STEPS = ("migrate", "catalog", "profile", "loadtest", "backup", "restore", "validate", "security", "maintain",
         "health")


class Terminated(KeyboardInterrupt):
    """A termination signal, raised in the main thread so the step stops the way it stops on Ctrl-C: cleaning up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


# A mistake in the configuration (the environment or dbops.yaml): the exit status of `dbops config check` too.
EXIT_CONFIG = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """While the command runs, the first SIGTERM/SIGINT/SIGHUP raises :class:`Terminated`; later ones are ignored,
    so they cannot cut the clean-up short (SIGKILL still can: child programs die with dbops, and the next backup or
    restore removes what staging was left). The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def during_cleanup(signum: int, frame: FrameType | None) -> None:
        pass  # a Python-level handler rather than SIG_IGN: an ignored signal would be inherited by new children

    def first(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, during_cleanup)
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, first) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "url":
        print(redact_url(settings.target_url()))
        return 0
    if not settings.embedded:
        if args.action == "status":
            with connection(settings.target_url()) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            print(f"external PostgreSQL {version} at {redact_url(settings.target_url())} (DBOPS_DATABASE_URL)")
            return 0
        raise DbopsError(
            f"DBOPS_DATABASE_URL is set, so `dbops db {args.action}` has nothing to manage",
            "unset DBOPS_DATABASE_URL to use the embedded server",
        )
    server = settings.server()
    if args.action == "up":
        started = ensure_embedded(settings)
        print(("started " if started else "already running: ") + server.status().describe())
        print(f"database: {redact_url(settings.target_url())}")
    elif args.action == "down":
        print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        status = server.status()
        print(status.describe() if status.version else f"no embedded server under {settings.home}")
        return 0 if status.running else 3
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    prepare_environment(settings)
    print(f"Dagster UI on http://127.0.0.1:{args.port} (no authentication of its own: keep it on loopback "
          "or behind an authenticating proxy)", flush=True)
    # `dg dev`: Dagster 1.13's local webserver and daemon (`dagster dev` is superseded by it and says so). The
    # workspace file names the code location `dbops` (as [tool.dg.project] does; `-m` would name it after the module).
    dg_cli = find_program("dg", os.path.dirname(sys.executable))  # type: ignore[arg-type]
    workspace = settings.project_dir / "workspace.yaml"
    argv = [str(dg_cli), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(args.port),
            "--log-level", args.log_level]
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process with dg dev
    return 0  # pragma: no cover


def notes_to_stdout() -> None:
    """What dbops' own modules log while the definitions load (a setting's fallback...) as ``note:`` lines on stdout:
    stderr stays for the one error line."""
    import logging

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    logger = logging.getLogger("dbops")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if (args.range_from is None) != (args.range_to is None):
        raise DbopsError("--from and --to go together", "give both, e.g. --from 2026-11-01 --to 2026-11-30")
    if args.partition and args.range_from:
        raise DbopsError("--partition and --from/--to exclude each other", "give one partition or one range")
    target = settings.target(args.target).name  # a typo names the closest target, before anything loads
    prepare_environment(settings)
    notes_to_stdout()
    # Here, not at the top: Dagster takes about 2 s to import and the code location about 3 s to load, which every
    # other command (`dbops backup`, `dbops wal push` as an archive_command...) would pay for nothing.
    import dagster as dg

    from dbops.definitions import load
    from dbops.runner import list_definitions, run_selection

    defs = load()
    if args.list or not args.selection:
        with dg.DagsterInstance.get() as instance:  # what was turned on or off in the UI
            print(list_definitions(defs, instance))
        return 0
    partition_range = (args.range_from, args.range_to) if args.range_from else None
    with dg.DagsterInstance.get() as instance:
        summary = run_selection(defs, args.selection, instance, args.partition, partition_range,
                                log_level=settings.log_level, target=target, verbose=args.verbose,
                                command=args.argv)
    print(summary.render())
    if not summary.success:
        raise summary.error()
    return 0


def cmd_scorecard(args: argparse.Namespace, settings: Settings) -> int:
    prepare_environment(settings)
    notes_to_stdout()
    import dagster as dg  # loaded by the commands that use it only (see cmd_run)

    from dbops.definitions import load
    from dbops.scorecard import build_scorecard

    names = [settings.target(args.target).name] if args.target else list(settings.targets)
    defined = set(load().resolve_asset_graph().get_all_asset_keys())
    with dg.DagsterInstance.get() as instance:
        cards = [build_scorecard(instance, name, defined, load_targets(settings.target(name).targets_file).limits)
                 for name in names]
    print("\n\n".join(card.render() for card in cards))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from dbops.demo import run_demo  # Dagster and the code location: loaded by the commands that use them only

    notes_to_stdout()
    return run_demo(settings, scale=args.scale)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbops", description="PostgreSQL lifecycle operations on Dagster.",
        epilog=f"lifecycle steps, each a Dagster group of that name (dbops run 'group:STEP'): {', '.join(STEPS)}; "
        "[STEP] above names the step a command belongs to")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    db = sub.add_parser("db", help="the embedded PostgreSQL server: up, down, status, url",
                        description="The embedded PostgreSQL server under $DBOPS_HOME/pgdata: start it (up), stop it "
                        "(down), show it (status; exit 3 when it is not running), print its URL, password masked "
                        "(url). With DBOPS_DATABASE_URL set there is nothing to manage.")
    db.add_argument("action", choices=["up", "down", "status", "url"])
    db.set_defaults(func=cmd_db)

    ui = sub.add_parser("ui", help="start the Dagster UI (dg dev: webserver and daemon) on 127.0.0.1",
                        description="The Dagster UI and daemon (dg dev) on 127.0.0.1, code location `dbops` "
                        "(workspace.yaml), on the same PostgreSQL instance storage `dbops run` records its runs in. "
                        "It has no authentication of its own: keep it on loopback or behind an authenticating proxy.")
    ui.add_argument("--port", type=int, default=3000, help="the webserver's port (default 3000; `make ui PORT=N`)")
    ui.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                    help="what the webserver and daemon log to the terminal (default warning)")
    ui.set_defaults(func=cmd_ui)

    run = sub.add_parser("run", help="run a selection of one target's assets as a run of its job, printing each "
                         "phase as it happens", description="Run a job, an asset or a Dagster selection of one "
                         "target's assets in this process, as a run of the target's job in the code location "
                         "(<target>_lifecycle: the UI shows it and re-executes it), tagged dbops/command. Each step's "
                         "start and end and each phase the assets log is printed as it happens; then a summary.")
    run.add_argument("selection", nargs="?", help="job name, asset name or selection (e.g. group:migrate, '*')")
    run.add_argument("--partition", help="the partition of a partitioned asset (a day: 2026-11-30)")
    run.add_argument("--from", dest="range_from", metavar="KEY",
                     help="first partition of a range run in one go (with --to)")
    run.add_argument("--to", dest="range_to", metavar="KEY", help="last partition of the range (with --from)")
    run.add_argument("--target", help="the target (database) whose assets the selection names (default: the "
                     "default target, DBOPS_TARGET)")
    run.add_argument("--verbose", "-v", action="store_true",
                     help="print Dagster's whole log of the run (stderr) instead of the phases")
    run.add_argument("--list", action="store_true", help="list assets (partitioned, observed, blocking checks), "
                     "schedules and sensors with their default state and cron, and jobs")
    run.set_defaults(func=cmd_run)

    score = sub.add_parser("scorecard", help="print each target, what was measured and pass/fail",
                           description="Each target's scorecard from the runs recorded in the Dagster instance: "
                           "what was measured, against which limit (the targets file), pass or fail.")
    score.add_argument("--target", help="one target's scorecard (default: every target's)")
    score.set_defaults(func=cmd_scorecard)

    demo = sub.add_parser("demo", help="start, migrate, seed, run the whole lifecycle and print the scorecard",
                          description="The whole lifecycle of every target on the embedded server (what `make demo` "
                          "runs): migrate, seed, every step with its phases printed as they happen, the 30-day "
                          "integrity backfill, then each target's scorecard.")
    demo.add_argument("--scale", type=float, help="seed every target at this scale (default: each target's seed.scale)")
    demo.set_defaults(func=cmd_demo)

    for group, (module_name, _, what) in STEP_COMMANDS.items():
        step = sub.add_parser(group, help=f"[{module_name.split('.')[1]}] {what}", add_help=False)
        step.add_argument("rest", nargs=argparse.REMAINDER)
        step.set_defaults(func=None, group=group)
    return parser


def step_main(group: str) -> Callable[[list[str], Settings], int]:
    module_name, func_name, _ = STEP_COMMANDS[group]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise DbopsError(f"`dbops {group}` is not built yet", "see the open issues") from exc
        raise
    return getattr(module, func_name)


def _usage_error(self: argparse.ArgumentParser, message: str) -> None:
    """A usage mistake on any of dbops' parsers (the steps' own too): the one prefix, ``error: <problem> — <fix>``,
    exit status 2."""
    self.exit(2, f"error: {message} — see `{self.prog} --help`\n")


def main(argv: list[str] | None = None) -> int:
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _usage_error  # type: ignore[method-assign]
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if argv and argv[0] in STEP_COMMANDS:
        # A step's own parser handles everything after the group name, --help included.
        args = argparse.Namespace(func=None, group=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
        args.argv = argv  # the command line, for the run's dbops/command tag
    try:
        with signals_as_exceptions():
            # `dbops config` loads (and judges) the configuration itself, so a broken one can still be checked.
            settings = None if getattr(args, "group", None) == "config" else load_settings()
            if args.func is None:
                return int(step_main(args.group)(args.rest, settings) or 0)
            return int(args.func(args, settings) or 0)
    except SettingsError as exc:  # every mistake of the environment or dbops.yaml, one line each
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except UnknownTarget as exc:  # --target names no target of the settings
        print(f"error: {redact(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except DbopsError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"error: interrupted by {exc.name}: stopped and cleaned up — run the command again", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("error: interrupted: stopped and cleaned up — run the command again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
