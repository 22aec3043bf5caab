"""The shell commands a PostgreSQL server archives and restores its WAL with, when a spool stands between it and
the backup store: a server's OS user needs nothing of dbops to run them (`dbops wal push --spool` moves the spool
into the store, :mod:`dbops.backup.wal`)."""

from __future__ import annotations

import shlex
from pathlib import Path


def archive_command(spool: Path) -> str:
    """A shell ``archive_command`` that copies a finished WAL file into ``spool`` atomically: copy, fsync the copy,
    rename, fsync the directory (so the rename survives a power cut).

    A file of that name already in the spool is never replaced: the same bytes succeed (PostgreSQL may archive a file
    twice after a crash), different bytes fail, with a line in the server log. Two servers archiving into one spool
    (a restored copy started with the source's settings, say) then stop with an error instead of overwriting each
    other's WAL.
    """
    target = shlex.quote(str(spool))
    return (f"if test -e {target}/%f; then cmp -s %p {target}/%f || {{ echo 'dbops: a different %f is already in "
            f"the WAL spool: refusing to overwrite it' >&2; exit 1; }}; else cp %p {target}/%f.part && "
            f"sync {target}/%f.part && mv {target}/%f.part {target}/%f && sync {target}; fi")


def restore_command(staged: Path) -> str:
    """A ``restore_command`` that only copies from ``staged`` (WAL staged, so authenticated, by the restore)."""
    return f"cp {shlex.quote(str(staged))}/%f %p"
