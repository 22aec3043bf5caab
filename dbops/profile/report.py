"""The tables `dbops profile` / `dbops advise` print and the Dagster assets show as Markdown: one source of rows."""

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


def profile_table(prof: QueryProfile, plans: dict[str, PlanReport] | None = None) -> Table:
    head = ["#", "calls", "total ms", "mean ms", "share", "flags", "query"]
    rows = []
    for n, s in enumerate(prof.top, 1):
        plan = (plans or {}).get(s.key)
        flags = redact("; ".join(plan.flags)) if plan and plan.flags else ""
        if plan and plan.mode == "none" and plan.error:  # say why there is no plan (e.g. no GENERIC_PLAN before 16)
            flags = redact(f"not planned: {plan.error}")
        rows.append([n, s.calls, f"{s.total_ms:.1f}", f"{s.mean_ms:.3f}", f"{prof.share(s):.1%}", flags,
                     _short(s.query)])
    return head, rows


def tables_table(h: TableFacts, limit: int = 20) -> Table:
    head = ["table", "seq scans", "idx scans", "live", "dead", "bloat", "last (auto)vacuum"]
    rows = [
        [t["table"], t["seq_scan"], t["idx_scan"], t["live"], t["dead"], f"{t['bloat_ratio']:.1%}",
         t["last_vacuum"] or t["last_autovacuum"] or "never"]
        for t in h.tables[:limit]
    ]
    return head, rows


def advice_table(report: AdviceReport) -> Table:
    head = ["rank", "advice", "status", "speedup", "before ms", "after ms", "index bytes", "migration / detail"]
    rows: list[list[Any]] = []
    for a in report.advice:
        m = a.measurement
        if not a.verified:
            continue
        rows.append([len(rows) + 1, f"create index on {a.candidate.describe()}", "verified", f"{m.speedup:.1f}x",
                     f"{m.before_ms:.2f}", f"{m.after_ms:.2f}", m.index_bytes, str(a.migration or "")])
    for f in report.findings:
        label = {"unindexed_fk": "index the foreign key", "duplicate": "drop duplicate index",
                 "redundant": "drop redundant index", "unused": "consider dropping unused index"}[f.kind]
        target = f.index or f.table
        rows.append([len(rows) + 1, f"{label} {target}", f.kind, "", "", "", f.size_bytes or "", f.detail])
    for a in report.advice:
        if a.verified:
            continue
        m = a.measurement
        rows.append([len(rows) + 1, f"create index on {a.candidate.describe()}", "unverified",
                     f"{m.speedup:.1f}x" if m else "", f"{m.before_ms:.2f}" if m else "",
                     f"{m.after_ms:.2f}" if m else "", m.index_bytes if m else "", redact(a.note)])
    return head, rows


def render_text(title: str, table: Table) -> str:
    head, rows = table
    lines = [title, *aligned(head, rows)]
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    head, rows = table

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def summary_lines(prof: QueryProfile, h: TableFacts | None) -> list[str]:
    lines = [
        f"statements {prof.statements}, calls {prof.calls}, total {prof.total_ms:.1f} ms"
        f"{' (statistics were reset: counting from the reset)' if prof.stats_reset else ''}",
        f"p95 of mean times {prof.p95_mean_ms:.3f} ms; slowest 10 % mean {prof.slowest_10pct_mean_ms:.3f} ms",
    ]
    if h is not None:
        ratio = "n/a" if h.cache_hit_ratio is None else f"{h.cache_hit_ratio:.4f}"
        lines.append(f"cache hit ratio {ratio}; xid age {h.xid_age:,} ({h.xid_left:,} left); bloat by {h.bloat_method}")
        for s in h.sequences_in_danger:
            lines.append(f"sequence {s['sequence']} is {s['used']:.0%} used ({s['last_value']}/{s['max_value']})")
    return lines
