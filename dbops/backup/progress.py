"""Progress of the long steps (a backup, a restore drill), reported as they happen: one line per phase through a plain
callback, ``progress: Callable[[str], None] | None``. The Dagster assets pass ``context.log.info``, the CLI a printer;
nothing here knows Dagster.

Byte counts of a stream (``Store.put``'s own callback) become a line at most every :data:`INTERVAL` seconds
(:class:`ByteMeter`), so a long dump shows it is moving without flooding the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dbops.redact import redact

Progress = Callable[[str], None]

INTERVAL = 5.0  # seconds between two "N MiB stored" lines of one stream at most


def report(progress: Progress | None, line: str) -> None:
    """``progress(line)`` when there is a callback, secrets redacted (a store's endpoint, a URL)."""
    if progress is not None:
        progress(redact(line))


def mib(n: int) -> str:
    """``n`` bytes as MiB with one decimal."""
    return f"{n / (1 << 20):.1f} MiB"


class ByteMeter:
    """A ``Store.put`` progress callback (bytes stored so far) that reports ``"<what>: N MiB stored (X MiB/s)"`` at
    most every ``interval`` seconds; :meth:`offset` adds the bytes of objects already stored (a directory dump).
    ``verb`` names what happened to the bytes (a restore feeds them to pg_restore)."""

    def __init__(self, progress: Progress | None, what: str, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, verb: str = "stored") -> None:
        self.progress, self.what, self.clock, self.verb = progress, what, clock, verb
        self.interval = INTERVAL if interval is None else interval
        self.started = self.last = clock()
        self.base = 0
        self.objects = 0  # objects completed (directory dump)

    def __call__(self, stored: int) -> None:
        if self.progress is None:
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        total = self.base + stored
        rate = total / (1 << 20) / max(now - self.started, 1e-9)
        done = f", {self.objects} object(s) done" if self.objects else ""
        self.progress(f"{self.what}: {mib(total)} {self.verb} ({rate:.1f} MiB/s{done})")

    def offset(self, stored: int) -> None:
        """One object of ``stored`` bytes is complete: later counts start after it."""
        self.base += stored
        self.objects += 1

    def for_object(self) -> Callable[[int], None] | None:
        """The callback for the next object's ``Store.put`` (None when nobody listens)."""
        return self if self.progress is not None else None
