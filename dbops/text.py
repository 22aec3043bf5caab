"""Plain aligned text tables, for terminals and CI logs (one renderer for every command that prints a table)."""

from __future__ import annotations

from collections.abc import Sequence


def aligned(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Header, a dashed rule, then the rows; columns padded to their widest cell, None shown empty."""
    cells = [["" if v is None else str(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
