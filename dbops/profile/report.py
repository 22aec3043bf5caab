"""The tables `dbops profile` / `dbops advise` print and the Dagster assets show (as ``MetadataValue.table``): one
source of rows, dicts keyed by column (``*_COLUMNS`` say what each column means)."""

from __future__ import annotations

from typing import Any

from dbops.profile.advise import AdviceReport
from dbops.profile.plans import PlanReport
from dbops.profile.statements import QueryProfile
from dbops.profile.tables import TableFacts
from dbops.redact import redact
from dbops.text import aligned

Table = tuple[list[str], list[list[Any]]]
QUERY_WIDTH = 90


def _short(query: str, width: int = QUERY_WIDTH) -> str:
    """One line of a statement, redacted before it is cut (a cut literal would escape the pattern)."""
    text = " ".join(redact(query).split())
    return text if len(text) <= width else text[: width - 1] + "…"


Row = dict[str, Any]

# What each column of the rows below means (the Dagster table's schema shows it).
PROFILE_COLUMNS = {
    "rank": "by total time in the period", "calls": "calls in the period", "total_ms": "total time (plan + exec)",
    "mean_ms": "mean time per call", "share_pct": "share of the period's total time, %",
    "rows": "rows returned or affected", "role": "the role that ran it", "flags": "the plan's anti-patterns",
    "query": "the normalized statement, redacted, on one line",
}
TABLE_COLUMNS = {
    "table": "schema.table (largest first)", "seq_scans": "sequential scans since the stats reset",
    "idx_scans": "index scans since the stats reset", "live": "live rows (estimate)", "dead": "dead rows (estimate)",
    "bloat_pct": "dead or free space, % (pgstattuple when installed, else the dead-row share)",
    "bytes": "table size", "last_vacuum": "last vacuum or autovacuum",
}
ADVICE_COLUMNS = {
    "rank": "verified first, then findings on existing indexes, then unverified candidates", "advice": "what to do",
    "status": "verified, unverified, or the finding's kind", "speedup": "measured before / after on the copy, x",
    "before_ms": "the affected statements without the index", "after_ms": "with the index",
    "index_bytes": "the index's size on the copy, or the existing index's size",
    "detail": "the review migration, or why",
}


def profile_rows(prof: QueryProfile, plans: dict[str, PlanReport] | None = None, width: int = QUERY_WIDTH) -> list[Row]:
    """One row per top statement (``PROFILE_COLUMNS``)."""
    rows = []
    for n, s in enumerate(prof.top, 1):
        plan = (plans or {}).get(s.key)
        flags = redact("; ".join(plan.flags)) if plan and plan.flags else ""
        if plan and plan.mode == "none" and plan.error:  # say why there is no plan (e.g. no GENERIC_PLAN before 16)
            flags = redact(f"not planned: {plan.error}")
        rows.append({"rank": n, "calls": s.calls, "total_ms": s.total_ms, "mean_ms": s.mean_ms,
                     "share_pct": 100 * prof.share(s), "rows": s.rows, "role": s.role or None, "flags": flags or None,
                     "query": _short(s.query, width)})
    return rows


def table_rows(h: TableFacts, limit: int = 20) -> list[Row]:
    """One row per table, largest first (``TABLE_COLUMNS``)."""
    return [{"table": t["table"], "seq_scans": t["seq_scan"], "idx_scans": t["idx_scan"], "live": t["live"],
             "dead": t["dead"], "bloat_pct": 100 * float(t["bloat_ratio"]), "bytes": t.get("bytes"),
             "last_vacuum": t["last_vacuum"] or t["last_autovacuum"] or "never"} for t in h.tables[:limit]]


def advice_rows(report: AdviceReport) -> list[Row]:
    """The advice, verified first (``ADVICE_COLUMNS``); a figure that was not measured is left empty."""
    rows: list[Row] = []

    def add(advice: str, status: str, m: Any, size: int | None, detail: str) -> None:
        rows.append({"rank": len(rows) + 1, "advice": advice, "status": status,
                     "speedup": m.speedup if m else None, "before_ms": m.before_ms if m else None,
                     "after_ms": m.after_ms if m else None, "index_bytes": size, "detail": detail or None})

    for a in report.advice:
        if a.verified:
            add(f"create index on {a.candidate.describe()}", "verified", a.measurement, a.measurement.index_bytes,
                str(a.migration or ""))
    for f in report.findings:
        label = {"unindexed_fk": "index the foreign key", "duplicate": "drop duplicate index",
                 "redundant": "drop redundant index", "unused": "consider dropping unused index"}[f.kind]
        add(f"{label} {f.index or f.table}", f.kind, None, f.size_bytes or None, f.detail)
    for a in report.advice:
        if not a.verified:
            m = a.measurement
            add(f"create index on {a.candidate.describe()}", "unverified", m, m.index_bytes if m else None,
                redact(a.note))
    return rows


def _text(value: Any, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def profile_table(prof: QueryProfile, plans: dict[str, PlanReport] | None = None) -> Table:
    head = ["#", "calls", "total ms", "mean ms", "share", "flags", "query"]
    rows = [[r["rank"], r["calls"], f"{r['total_ms']:.1f}", f"{r['mean_ms']:.3f}", f"{r['share_pct']:.1f}%",
             r["flags"] or "", r["query"]] for r in profile_rows(prof, plans)]
    return head, rows


def tables_table(h: TableFacts, limit: int = 20) -> Table:
    head = ["table", "seq scans", "idx scans", "live", "dead", "bloat", "last (auto)vacuum"]
    rows = [[r["table"], r["seq_scans"], r["idx_scans"], r["live"], r["dead"], f"{r['bloat_pct']:.1f}%",
             r["last_vacuum"]] for r in table_rows(h, limit)]
    return head, rows


def advice_table(report: AdviceReport) -> Table:
    head = ["rank", "advice", "status", "speedup", "before ms", "after ms", "index bytes", "migration / detail"]
    rows = [[r["rank"], r["advice"], r["status"], _text(r["speedup"], ".1f") + ("x" if r["speedup"] else ""),
             _text(r["before_ms"], ".2f"), _text(r["after_ms"], ".2f"), _text(r["index_bytes"]), r["detail"] or ""]
            for r in advice_rows(report)]
    return head, rows


def render_text(title: str, table: Table) -> str:
    head, rows = table
    lines = [title, *aligned(head, rows)]
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def summary_lines(prof: QueryProfile, h: TableFacts | None) -> list[str]:
    lines = [
        f"statements {prof.statements}, calls {prof.calls}, total {prof.total_ms:.1f} ms"
        f"{' (statistics were reset: counting from the reset)' if prof.stats_reset else ''}",
        "no statement ran in the period: no mean times" if prof.p95_mean_ms is None or
        prof.slowest_10pct_mean_ms is None else
        f"p95 of mean times {prof.p95_mean_ms:.3f} ms; slowest 10 % mean {prof.slowest_10pct_mean_ms:.3f} ms",
    ]
    if h is not None:
        ratio = "n/a" if h.cache_hit_ratio is None else f"{h.cache_hit_ratio:.4f}"
        lines.append(f"cache hit ratio {ratio}; xid age {h.xid_age:,} ({h.xid_left:,} left); bloat by {h.bloat_method}")
        for s in h.sequences_in_danger:
            lines.append(f"sequence {s['sequence']} is {s['used']:.0%} used ({s['last_value']}/{s['max_value']})")
    return lines
