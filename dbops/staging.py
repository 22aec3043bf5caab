"""Private staging directories for the plaintext that has to touch local disk, and removal of a killed run's leftovers.

A directory-format dump (``pg_dump --jobs``) and its restore (``pg_restore --jobs``) need the dump as local files,
unencrypted. They live in ``<root>/<pid>-<random>`` (``root`` is ``$DBOPS_HOME/staging``, see
:attr:`dbops.settings.Settings.staging_root`), both mode 0700, and are removed when the step ends: on success, on
failure, on Ctrl-C and on SIGTERM (the CLI turns both into an exception, so ``finally`` blocks run).

A run killed with SIGKILL (or by a power cut) cannot clean up. Its programs die with it (see
:mod:`dbops.programs`), and the next backup or restore removes every staging directory whose owning process is
gone. It never removes the directory of a live process, nor anything whose name it did not write: each directory
records its owner's pid, start time and host, so a recycled pid does not keep a dead run's files, and a directory made
on another machine (a shared ``$DBOPS_HOME``) is left to that machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from dbops.errors import DbopsError

OWNER_FILE = ".owner"
_NAME = re.compile(r"^(\d+)-[0-9a-f]{16}$")


class StagingError(DbopsError):
    """The staging root is not a private directory of this user."""


def prepare_root(root: Path) -> Path:
    """Create ``root`` (mode 0700) or check that it is a real directory of ours, and make it 0700."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise StagingError(f"staging directory {root} is not a directory owned by this user",
                           "remove it (dbops recreates it), or point DBOPS_HOME at a directory of your own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root


def _owner_record() -> str:
    me = psutil.Process()
    return f"{me.pid} {me.create_time():.3f} {socket.gethostname()}\n"


def _owner_alive(path: Path, pid: int) -> bool:
    """True unless the process that made ``path`` is provably gone (dead, a zombie, or its pid now reused)."""
    try:
        recorded = (path / OWNER_FILE).read_text().split()
    except OSError:
        recorded = []  # made but not yet labelled (or unreadable): only the pid can tell
    if len(recorded) == 3 and recorded[2] != socket.gethostname():
        return True  # another machine's run: its pids mean nothing here
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if len(recorded) >= 2 and abs(process.create_time() - float(recorded[1])) > 1.0:
            return False  # the pid was recycled by a process started later
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError):
        return True
    return True


def remove_leftovers(root: Path) -> list[Path]:
    """Remove the staging directories under ``root`` whose owning process is gone; return what was removed."""
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        match = _NAME.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue  # not one of ours
        pid = int(match.group(1))
        if pid == os.getpid() or _owner_alive(entry, pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


@contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """A new private directory ``<root>/<pid>-<random>`` (0700), removed on exit, also on error or interruption.

    Leftovers of killed runs under ``root`` are removed first.
    """
    prepare_root(root)
    remove_leftovers(root)
    path = root / f"{os.getpid()}-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700)
    try:
        os.chmod(path, 0o700)  # whatever the umask
        (path / OWNER_FILE).write_text(_owner_record())
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
