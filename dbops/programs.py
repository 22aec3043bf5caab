"""Every external program dbops runs goes through :func:`run_command` (or :func:`start_process` when its output is
streamed). Which program, and where it is found, is the caller's business (PostgreSQL's: :mod:`dbops.pg.binaries`).

One place builds the arguments, applies a timeout, captures stderr, passes passwords by environment (never on the
command line) and turns a failure into a one-line :class:`~dbops.errors.CommandFailed` with secrets redacted.

Every program started here dies with dbops: on Linux the kernel sends it a signal when the thread that started it
ends (``prctl(PR_SET_PDEATHSIG)``), also when dbops is killed with SIGKILL. pg_dump and pg_restore get SIGTERM, which
they forward to their parallel workers before exiting (a SIGKILL of the leader would leave each worker running until
it has finished its current table); every other program gets SIGKILL. The signal fires when the *thread* that
started the program ends, so a program must be started and waited for in the same long-lived thread (dbops starts
them in the thread that runs the step and waits there). A daemon must not be started this way unless it forks
away from the program started here: ``pg_ctl start`` does (the postmaster is pg_ctl's child, and the death signal
is not inherited across fork), so the embedded server outlives the command that started it, by design. Stopping a
program (timeout, error, Ctrl-C, SIGTERM) stops the processes it forked too.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from dbops.errors import CommandFailed
from dbops.redact import redact

DEFAULT_TIMEOUT = 300.0


def ensure_os_user(name: str) -> pwd.struct_passwd:
    """The OS user ``name``, created (a system user without home or shell) when missing: programs started with
    ``user=`` run as it."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        run_command(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], timeout=30)
        return pwd.getpwnam(name)



# Inherited variables no program dbops starts needs, and which a server (started as another OS user) would keep in
# its environment for anyone who can read /proc/<pid>/environ: dbops' URLs, keys, tokens, cloud credentials.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|(^|_)URLS?$", re.I)


def child_environment(env: Mapping[str, str] | None, password: str | None) -> dict[str, str]:
    """This process's environment without its secrets, plus ``env``, with the password as ``PGPASSWORD`` (never on
    a command line). libpq's own ``PG*`` variables are kept (a PGPASSWORD the operator set included)."""
    full_env = {
        name: value for name, value in os.environ.items()
        if name.startswith("PG") or not (_SECRET_NAME.search(name) or redact(value) != value)
    }
    if env:
        full_env.update(env)
    if password is not None:
        full_env["PGPASSWORD"] = password
    return full_env


# Programs that catch SIGTERM to stop their parallel workers and exit (pg_dump and pg_restore, parallel.c).
TERM_ON_PARENT_DEATH = frozenset({"pg_dump", "pg_restore", "pg_dumpall"})
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved once here and not in the forked child (Linux only; elsewhere None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the thread that started it ends (None where the
    kernel cannot do it). It runs in the child after fork and after ``user``/``group`` were applied (a change of user
    would clear the setting), and kills the child at once if dbops already died between fork and prctl."""
    if _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _death_signal(argv0: str) -> int:
    return signal.SIGTERM if Path(argv0).name in TERM_ON_PARENT_DEATH else signal.SIGKILL


def _launch_options(argv: list[str], env: Mapping[str, str] | None, password: str | None,
                    user: str | None) -> dict[str, object]:
    """Popen arguments shared by every program: environment, OS user, and the parent-death signal."""
    full_env = child_environment(env, password)
    kwargs: dict[str, object] = {"env": full_env, "preexec_fn": die_with_parent(_death_signal(argv[0]))}
    if user is not None:
        entry = ensure_os_user(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        full_env["HOME"] = "/tmp"
    return kwargs


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
    label = what or Path(argv[0]).name
    kwargs = _launch_options(argv, env, password, user)
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never by a shell
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if input_text is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,  # type: ignore[arg-type]
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{label}: program not found ({argv[0]})", "install it or set DBOPS_PG_BIN") from exc
    with proc:
        try:
            stdout, stderr = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stop_process(proc)  # the program and what it forked: a grandchild would keep the pipes open
            raise CommandFailed(f"{label} did not finish within {timeout:.0f} s", "check the server log") from exc
        except BaseException:
            stop_process(proc)  # Ctrl-C, SIGTERM (see dbops.cli) or an error: nothing keeps running behind us
            raise
    completed = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if check and completed.returncode != 0:
        raise CommandFailed(f"{label} failed (exit {completed.returncode}): "
                            f"{last_error_line(completed.stderr or completed.stdout)}")
    return completed


def start_process(
    args: Sequence[str | os.PathLike[str]],
    *,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a program whose output is streamed (pg_dump into a backup, pg_restore from one) or that serves while a
    step runs (PgBouncer).

    Same conventions as :func:`run_command`: the password goes in ``PGPASSWORD``, never on the command line; the
    program dies with the thread that calls this (wait for it there); stderr is captured to an unnamed temporary
    file so a long-running program never blocks on a full pipe. End it with :func:`finish_process` or
    :func:`stop_process`.
    """
    argv = [str(a) for a in args]
    kwargs = _launch_options(argv, env, password, user)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish_process or stop_process
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, **kwargs)  # type: ignore[call-overload]  # noqa: S603
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
        stop_process(proc)
        raise CommandFailed(f"{what} did not finish within {timeout:.0f} s", "check the server log") from None
    except BaseException:
        stop_process(proc)
        raise
    errors = _read_stderr(proc)
    if code != 0:
        raise CommandFailed(f"{what} failed (exit {code}): {last_error_line(errors)}")


def _read_stderr(proc: subprocess.Popen[bytes]) -> str:
    stderr_file = getattr(proc, "dbops_stderr", None)
    if stderr_file is None or stderr_file.closed:
        return ""
    stderr_file.seek(0)
    errors = stderr_file.read().decode("utf-8", "replace")
    stderr_file.close()
    return errors


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 0) -> None:
    """Stop a program and the processes it forked (pg_dump's parallel workers, say), and reap them.

    With ``grace``, SIGTERM first and SIGKILL only after that many seconds. The program is frozen (SIGSTOP) before
    its descendants are listed, so none is forked behind our back and left running.
    """
    if proc.poll() is None and grace > 0:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            leader = psutil.Process(proc.pid)
            leader.suspend()
            tree = leader.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            tree = []
        proc.kill()
        for child in tree:
            try:
                child.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        proc.wait()
        psutil.wait_procs(tree, timeout=10)
    stderr_file = getattr(proc, "dbops_stderr", None)
    if stderr_file is not None:
        stderr_file.close()


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
