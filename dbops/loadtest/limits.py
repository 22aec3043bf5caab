"""File descriptors: pgbench needs one per client (+3), PgBouncer one per client and per server connection."""

from __future__ import annotations

import resource

from dbops.errors import DbopsError

FD_MARGIN = 200


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (children inherit it); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DbopsError(
            f"too few file descriptors: the run needs {needed:,}, the hard limit is {hard:,}",
            f"raise it (ulimit -Hn {needed}, LimitNOFILE= in systemd, nofile in limits.conf) or use fewer users",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed
