"""Run pgbench (PostgreSQL's C load generator) with per-transaction logs; no Python in the hot path."""

from __future__ import annotations

import math
import os
import re
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbops.errors import CommandFailed
from dbops.loadtest.limits import raise_fd_limit
from dbops.loadtest.stats import ScriptStats, parse_log_files
from dbops.loadtest.workloads import LoadTestError, Script
from dbops.pg.binaries import find_program
from dbops.programs import run_command
from dbops.redact import redact


@dataclass(frozen=True)
class Target:
    """Where pgbench connects (the server itself or PgBouncer) and as whom."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None


@dataclass
class PgbenchRun:
    clients: int
    seconds: float
    rate: float | None
    scripts: dict[str, ScriptStats]
    aborted_clients: int = 0
    error: str | None = None
    command: list[str] = field(default_factory=list)
    pgbench_tps: float | None = None
    connection_ms: float | None = None
    jobs: int = 1
    wall_s: float = 0.0
    pgbench_cpu_s: float = 0.0
    host_busy_pct: float = 0.0


# A pgbench thread walks all of its clients on every wake-up, so its CPU grows with clients per thread times
# transactions/s: measured at 10,000 clients and 2,000 tps on 2 cores, 4 threads used 32 % of a core and delayed
# transactions by 4.4 ms at p95; 64 threads used 18 % and 1.7 ms.
CLIENTS_PER_THREAD = 160
MAX_JOBS = 64


def pgbench_jobs(clients: int) -> int:
    """Threads: one per core for few clients, one per ~160 clients for thousands (at most 64)."""
    cpus = os.cpu_count() or 2
    return max(1, min(clients, max(cpus, min(MAX_JOBS, math.ceil(clients / CLIENTS_PER_THREAD)))))


def connect_allowance(clients: int) -> int:
    """Seconds added to -T for the initial connections (measured: 10,000 SCRAM logins through PgBouncer took about
    4 s with 63 pgbench threads on 2 cores; a slower login only shortens the measured window, never the figures)."""
    return 0 if clients <= 200 else 2 + clients // 2000


_ABORT = re.compile(r"client \d+ (?:script \d+ )?aborted", re.I)
_SCRIPT_ABORT = re.compile(r"client \d+ script (\d+) aborted in command (\d+) query \d+: (?:ERROR|FATAL):\s+(.*)")
# Not anchored: two pgbench threads may write into one line.
_SERVER_ERROR = re.compile(r"(?:ERROR|FATAL):\s+(.+?)(?=\s*pgbench: |\n|$)")
_PREPARED_GONE = re.compile(r'prepared statement "P_\d+" does not exist')
# A script naming a table, column, function, schema or type that is not there can never succeed: the run stops.
_UNPREPARED = "its statement could not be prepared (a missing table or column?)"
_MISSING = re.compile(r"does not exist|permission denied|could not be prepared")
_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_CONNECTION = re.compile(r"^initial connection time = ([\d.]+) ms", re.M)


def run_pgbench(
    target: Target,
    scripts: list[Script],
    variables: dict[str, int],
    *,
    clients: int,
    duration: int,
    rate: float | None = None,
    latency_limit_ms: float | None = None,
    max_tries: int = 3,
    random_seed: int | None = None,
    bin_dir: Path | None = None,
    log_dir: Path | None = None,
    connect_timeout: float = 120,
    protocol: str = "prepared",
) -> PgbenchRun:
    """One pgbench run of ``duration`` seconds with ``clients`` connections; figures from its ``-l`` logs."""
    if clients < 1 or duration < 1:
        raise LoadTestError(f"users ({clients}) and duration ({duration} s) must be at least 1", "pass positive values")
    program = find_program("pgbench", bin_dir)
    jobs = pgbench_jobs(clients)
    raise_fd_limit(clients + 3 + 200)
    with tempfile.TemporaryDirectory(prefix="dbops-pgbench-", dir=log_dir) as tmp:
        prefix = Path(tmp) / "txn"
        # pgbench's -T clock starts before its clients connect; thousands of logins take seconds, so the run is
        # extended by that much and the figures use pgbench's own window (tps without initial connection time).
        allowance = connect_allowance(clients)
        argv: list[str] = [
            str(program), "--no-vacuum", "-h", target.host, "-p", str(target.port), "-U", target.user,
            "-c", str(clients), "-j", str(jobs), "-T", str(duration + allowance), "-M", protocol,
            "-l", f"--log-prefix={prefix}", f"--max-tries={max_tries}", "--failures-detailed",
        ]
        if random_seed is not None:
            argv.append(f"--random-seed={random_seed}")
        if rate:
            argv += ["-R", f"{rate:.3f}"]
        if latency_limit_ms:
            argv += ["-L", f"{latency_limit_ms:g}"]
        for name, value in sorted(variables.items()):
            argv += ["-D", f"{name}={value}"]
        for script in scripts:
            argv += ["-f", script.pgbench_arg()]
        argv.append(target.dbname)
        env = {"PGCONNECT_TIMEOUT": "30", "PGAPPNAME": "dbops-loadtest", "PGSSLMODE": "disable"}
        usage, host, started = resource.getrusage(resource.RUSAGE_CHILDREN), _host_times(), time.monotonic()
        proc = run_command(argv, password=target.password, env=env, check=False,
                           timeout=duration + allowance + connect_timeout + clients / 100, what="pgbench")
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        pgbench_cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
        busy, total = (b - a for a, b in zip(host, _host_times(), strict=True))
        output = (proc.stderr or "") + "\n" + (proc.stdout or "")
        broken = _broken_script(output, scripts)
        if broken is not None and getattr(broken, "index", None) is not None and _UNPREPARED in str(broken):
            # Threads writing at once can mangle the PREPARE's error line: one client, one transaction, says it.
            script = scripts[broken.index]  # type: ignore[attr-defined]
            alone = run_command([*argv[:argv.index("-c")], "-c", "1", "-j", "1", "-t", "1", "-M", protocol,
                                 "-f", str(script.path), target.dbname],
                                password=target.password, env=env, check=False, timeout=connect_timeout,
                                what="pgbench")
            broken = _broken_script((alone.stderr or "") + "\n" + (alone.stdout or ""), [script]) or broken
        if broken is not None:
            raise broken
        if proc.returncode == 1:
            raise _explain(output, scripts)
        names = [s.name for s in scripts]
        logs = sorted(Path(tmp).glob("txn.*"))
        stats = parse_log_files(logs, names, rate_limited=bool(rate), max_tries=max_tries)
    aborted = len(_ABORT.findall(output))
    ran = sum(s.transactions for s in stats.values())
    error = None
    if proc.returncode != 0:
        error = _first_error(output)
        if ran == 0:
            raise _explain(output, scripts)
    if ran == 0 and not any(s.failures for s in stats.values()):
        if rate and rate * duration < 20:
            # A schedule this sparse can, by chance, start no transaction at all in the window (Poisson arrivals).
            raise LoadTestError(f"no transaction completed in {duration + allowance} s with {clients:,} users at "
                                f"{rate:g} tx/s offered (about {rate * duration:.0f} expected)",
                                "use a longer --duration or a shorter --think-time")
        raise LoadTestError(f"no transaction completed in {duration + allowance} s with {clients:,} users",
                            "connecting the users took the whole run: use a longer --duration or fewer users")
    # pgbench starts the clock once every client is connected: its own tps is the reference, and the measured
    # window is transactions / tps (10,000 SCRAM logins take seconds that must not dilute the figures).
    tps_match, conn_match = _TPS.search(output), _CONNECTION.search(output)
    pgbench_tps = float(tps_match[1]) if tps_match else None
    seconds = ran / pgbench_tps if pgbench_tps and ran else float(duration)
    return PgbenchRun(clients, seconds, rate, stats, aborted, error, [redact(a) for a in argv], pgbench_tps,
                      float(conn_match[1]) if conn_match else None, jobs, wall, pgbench_cpu,
                      100 * busy / total if total else 0.0)


def _host_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far: a step on a machine busy with something else shows."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - idle, total


def _first_error(output: str) -> str:
    for line in output.splitlines():
        lowered = line.lower()
        if "error" in lowered or "fatal" in lowered or "aborted" in lowered or "failed" in lowered:
            return redact(line.strip())
    lines = [line for line in output.splitlines() if line.strip()]
    return redact(lines[-1].strip()) if lines else "no output"


def _broken_script(output: str, scripts: list[Script]) -> LoadTestError | None:
    """A client aborted because its script names something missing or forbidden: one line naming the script."""
    for match in _SCRIPT_ABORT.finditer(output):
        index, command, message = int(match[1]), int(match[2]), match[3].strip()
        if _PREPARED_GONE.search(message):  # -M prepared: the real error is the PREPARE's, printed before
            server = [m.strip() for m in _SERVER_ERROR.findall(output) if not _PREPARED_GONE.search(m)]
            message = server[0] if server else _UNPREPARED
        if not _MISSING.search(message):
            continue
        script = scripts[index] if 0 <= index < len(scripts) else None
        name = script.path.name if script else f"script {index}"
        fix = (f"fix {script.path if script else 'the script'} (or create what it uses); it runs as a throw-away "
               "role: " + ("a member of dbops_app_rw" if script is None or script.reference
                           else "pg_read_all_data" + (" and pg_write_all_data" if script.is_write else "")))
        error = LoadTestError(f"workload script {name}: {redact(message)} (command {command + 1})", fix)
        error.index = index if script else None  # type: ignore[attr-defined]
        return error
    return None


def _explain(output: str, scripts: list[Script]) -> CommandFailed:
    """Turn pgbench's complaint into one line with a fix."""
    line = _first_error(output)
    lowered = output.lower()
    if "syntax error" in lowered or "unrecognized" in lowered or "invalid command" in lowered \
            or "undefined variable" in lowered:
        where = ", ".join(str(s.path) for s in scripts)
        return CommandFailed(f"pgbench rejected the workload: {line}", f"fix the script ({where})")
    if "connection refused" in lowered or "could not connect" in lowered or "connection to server" in lowered:
        return CommandFailed(f"pgbench cannot connect: {line}",
                             "is the server (or PgBouncer) running and accepting connections? check host, port, "
                             "max_connections")
    if "too many open files" in lowered:
        return CommandFailed(f"pgbench ran out of file descriptors: {line}", "raise ulimit -n or use fewer users")
    if "permission denied" in lowered or "row-level security" in lowered:
        return CommandFailed(f"the workload was refused: {line}", "run `dbops migrate` so the app role has its grants")
    return CommandFailed(f"pgbench failed: {line}", "see the message; rerun with fewer users to narrow it down")
