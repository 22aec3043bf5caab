"""Fleet benchmark: how long dbops takes to load its Dagster definitions, and to list them, for 1, 10 and 50 targets.

For each size it writes a configuration file of its own (targets ``t01`` .. ``tNN``, each ``embedded: true``, on a
free port for the embedded server) in a temporary folder, and runs every command in a fresh process with
``DBOPS_CONFIG`` naming that file, ``DBOPS_HOME`` a temporary folder (nothing touches the user's home, nor an
embedded server already running), and no inherited ``DBOPS_*`` or ``DAGSTER_HOME`` variable:

* ``definitions``: ``python -c "import dbops.definitions"`` plus building the definitions (a ``@dg.definitions``
  function is called, as Dagster's loader does) and resolving the asset graph, which also counts the assets
  (``len(defs.resolve_asset_graph().get_all_asset_keys())``) and the generated targets among the asset keys' first
  parts; the whole process is timed, and it reports its own import / build split;
* ``run_list``: the console script ``dbops run --list``. It needs the embedded PostgreSQL (``prepare_environment``
  creates Dagster's ``dagster`` database and every embedded target's there, and starts the server when it is down):
  the server is started once with ``dbops db up`` before the timings, untimed, and stopped at the end.

Each figure is the median of ``--runs`` (3) timed runs after one untimed warm-up run of the same command; each row says
whether both medians are within ``aim_seconds`` (5). The machine's load average (before and after) and its CPUs are
reported beside them. A command that fails ends the benchmark with its last error line and a non-zero exit.
Prints one JSON document (and writes it with ``--out``).

    .venv/bin/python bench/fleet.py [--sizes 1,10,50] [--runs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from dbops.pg.server import free_port
from dbops.programs import last_error_line

AIM_SECONDS = 5.0
TIMEOUT = 600.0
BIN = Path(sys.executable).parent
# Run in the child: the definitions as Dagster loads them, then one JSON line (the last line of its output).
DEFINITIONS_CHILD = """
import json, sys, time
began = time.perf_counter()
import dagster as dg
import dbops.definitions
imported = time.perf_counter()
defs = dbops.definitions.defs
if not isinstance(defs, dg.Definitions):  # a @dg.definitions function: Dagster calls it to load the code location
    defs = defs()
keys = defs.resolve_asset_graph().get_all_asset_keys()
built = time.perf_counter()
names = set(sys.argv[1].split(","))
print(json.dumps({"assets": len(keys), "targets": len({k.path[0] for k in keys if k.path[0] in names}),
                  "import_s": imported - began, "build_s": built - imported}))
"""


class BenchFailed(SystemExit):
    pass


def target_names(count: int) -> list[str]:
    return [f"t{i:02d}" for i in range(1, count + 1)]


def write_config(folder: Path, count: int, pg_port: int) -> Path:
    path = folder / f"fleet-{count}.yaml"
    config = {"pg_port": pg_port, "targets": {name: {"embedded": True} for name in target_names(count)}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def environment(config: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPS_") and k != "DAGSTER_HOME"}
    env.update(DBOPS_CONFIG=str(config), DBOPS_HOME=str(home), DAGSTER_TELEMETRY_DISABLED="1")
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path, what: str) -> tuple[float, str]:
    """Wall time and output of one fresh process; :class:`BenchFailed` naming ``what`` when it fails."""
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"fleet: {what} did not finish within {TIMEOUT:.0f} s") from None
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchFailed(f"fleet: {what} failed (exit {done.returncode}): "
                          f"{last_error_line(done.stderr or done.stdout)}")
    return elapsed, done.stdout


def measure(argv: list[str], env: dict[str, str], cwd: Path, what: str, runs: int) -> tuple[list[float], list[str]]:
    run(argv, env, cwd, what)  # warm-up: caches, and the databases the first run creates
    timed = [run(argv, env, cwd, what) for _ in range(runs)]
    return [round(t, 3) for t, _ in timed], [out for _, out in timed]


def measure_size(count: int, folder: Path, home: Path, pg_port: int, runs: int) -> dict[str, Any]:
    config = write_config(folder, count, pg_port)
    env = environment(config, home)
    names = ",".join(target_names(count))
    run([str(BIN / "dbops"), "db", "up"], env, folder, f"`dbops db up` ({count} targets)")

    definitions, outputs = measure([sys.executable, "-c", DEFINITIONS_CHILD, names], env, folder,
                                   f"loading the definitions ({count} targets)", runs)
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    if len({(r["assets"], r["targets"]) for r in reports}) != 1:
        raise BenchFailed(f"fleet: the definitions of {count} targets differ between runs: {reports}")
    listing, lists = measure([str(BIN / "dbops"), "run", "--list"], env, folder,
                             f"`dbops run --list` ({count} targets)", runs)
    row = {
        "targets": count,
        "assets": reports[0]["assets"],
        "targets_with_assets": reports[0]["targets"],
        "definitions_s": round(statistics.median(definitions), 3),
        "definitions_runs_s": definitions,
        "definitions_import_s": round(statistics.median(r["import_s"] for r in reports), 3),
        "definitions_build_s": round(statistics.median(r["build_s"] for r in reports), 3),
        "run_list_s": round(statistics.median(listing), 3),
        "run_list_runs_s": listing,
        "run_list_lines": len(lists[0].splitlines()),
        "aim_seconds": AIM_SECONDS,
    }
    row["met"] = row["definitions_s"] <= AIM_SECONDS and row["run_list_s"] <= AIM_SECONDS
    return row


def stop_server(folder: Path, home: Path, pg_port: int) -> None:
    """``dbops db down`` on the benchmark's home, when a size got as far as starting the server."""
    if not (home / "pgdata").exists():
        return
    config = write_config(folder, 1, pg_port)  # any size: they all share the home and the port
    done = subprocess.run([str(BIN / "dbops"), "db", "down"], env=environment(config, home), cwd=folder,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        print(f"fleet: `dbops db down` failed: {last_error_line(done.stderr)}; the server of {home} may still run",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="numbers of targets, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each command (the median is reported)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if not (BIN / "dbops").exists():
        raise BenchFailed(f"fleet: no dbops console script beside {sys.executable}: run it with .venv/bin/python")

    folder = Path(tempfile.mkdtemp(prefix="dbops-bench-fleet-"))
    folder.chmod(0o711)  # the embedded server runs as its own OS user: it must get through to DBOPS_HOME
    home = folder / "home"
    pg_port = free_port()
    doc: dict[str, Any] = {
        "benchmark": "fleet: Dagster definitions load and `dbops run --list` for N embedded targets",
        "machine": {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "load_average_before": [round(v, 2) for v in os.getloadavg()]},
        "runs": args.runs,
        "run_list_needs": "the embedded PostgreSQL (Dagster's `dagster` database and each target's): started once "
                          "with `dbops db up` before the timings, stopped after",
        "aim_seconds": AIM_SECONDS,
    }
    try:
        doc["rows"] = [measure_size(count, folder, home, pg_port, args.runs) for count in sizes]
    finally:
        stop_server(folder, home, pg_port)
        shutil.rmtree(folder, ignore_errors=True)
    doc["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    doc["met"] = all(row["met"] for row in doc["rows"])
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
