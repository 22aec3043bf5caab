"""What the backup and restore tests assert of every metadata dict (issue 18 item 10) and of the progress lines
(item 12): rounded floats, no negative or -1 "not measured", tables with a schema, paths as paths, lines in order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import dagster as dg

from dbops.components.metadata import round_figure


def assert_clean(metadata: Mapping[str, dg.MetadataValue]) -> None:
    """Every float finite and rounded (as components.metadata rounds), no number below zero (-1 once meant "not
    measured"), no placeholder text, every table with a typed schema covering its records."""
    for key, value in metadata.items():
        raw = value.value
        if isinstance(value, dg.FloatMetadataValue):
            assert raw is not None and math.isfinite(raw), key
            assert raw == round_figure(raw), f"{key} = {raw} is not rounded"
        if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue):
            assert raw >= 0, f"{key} = {raw}: not measured must be left out, not negative"
        if isinstance(value, dg.TextMetadataValue):
            assert raw not in ("", "-1", "none", "None"), f"{key} = {raw!r}: leave it out instead"
            assert "password" not in raw.lower(), key
        if isinstance(value, dg.TableMetadataValue):
            assert value.schema is not None and value.schema.columns, f"{key}: a table without a schema"
            names = {c.name: c.type for c in value.schema.columns}
            for record in value.records:
                assert set(record.data) <= set(names), f"{key}: {set(record.data) - set(names)} not in the schema"
                for column, cell in record.data.items():
                    if isinstance(cell, float):
                        assert cell == round_figure(cell), f"{key}.{column} = {cell} is not rounded"
                        assert names[column] == "float", f"{key}.{column} holds floats, typed {names[column]}"
                    elif isinstance(cell, bool):
                        assert names[column] == "bool", f"{key}.{column} holds bools, typed {names[column]}"
                    elif isinstance(cell, int):
                        assert names[column] in ("int", "float"), f"{key}.{column} holds ints, typed {names[column]}"
    if "dagster/row_count" in metadata:
        assert isinstance(metadata["dagster/row_count"], dg.IntMetadataValue)


def columns(value: dg.MetadataValue) -> dict[str, str]:
    """A table's schema: column -> type."""
    assert isinstance(value, dg.TableMetadataValue), type(value)
    return {c.name: c.type for c in value.schema.columns}


def rows(value: dg.MetadataValue) -> list[dict[str, object]]:
    assert isinstance(value, dg.TableMetadataValue), type(value)
    return [dict(r.data) for r in value.records]


def log_lines(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The step's ``context.log`` messages (not Dagster's own events), in the order they were logged."""
    entries = [e for e in instance.all_logs(run_id) if e.dagster_event is None and e.step_key == step_key]
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)
    return [e.user_message for e in entries]


def assert_in_order(lines: Sequence[str], fragments: Sequence[str]) -> list[int]:
    """Each fragment is in a line after the previous fragment's line; returns their line numbers."""
    found, start = [], 0
    for fragment in fragments:
        index = next((i for i in range(start, len(lines)) if fragment in lines[i]), None)
        assert index is not None, f"{fragment!r} not found after line {start} in:\n" + "\n".join(lines)
        found.append(index)
        start = index + 1
    return found
