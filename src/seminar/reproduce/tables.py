"""Markdown tables of the report: Table 2 (models), Table 3 (pretraining ablations), sweep values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seminar.report import markdown_table

MISSING = "–"


def present_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The wanted metrics that at least one row has (AUC only where a dataset provides it)."""
    return [c for c in columns if any(c in r["metrics"] for r in rows)]


def _cells(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in columns:
        stat = row["metrics"].get(c)
        out[c] = (stat["mean"], stat["std"]) if stat else MISSING
    return out


def stats_table(rows: Sequence[dict[str, Any]], leading: Sequence[str], columns: Sequence[str]) -> str:
    """One Markdown table: ``leading`` columns as they are, metric columns as mean ± std."""
    flat = [{**{k: r[k] for k in leading}, **_cells(r, columns)} for r in rows]
    return markdown_table(flat, [*leading, *columns])


def grid_table_markdown(
    table: dict[str, dict[str, list[dict[str, Any]]]], leading: Sequence[str], columns: Sequence[str]
) -> str:
    """Every (dataset, mode) block of Table 2 or 3, one Markdown table each."""
    blocks = []
    for dataset, modes in table.items():
        for mode, rows in modes.items():
            cols = present_columns(rows, columns)
            body = stats_table(rows, leading, cols) if cols else "_no finished cells yet_"
            blocks.append(f"#### {dataset}, {mode} mode\n\n{body}")
    return "\n\n".join(blocks)


def sweep_markdown(sweep: dict[str, Any], value_name: str, metrics: Sequence[str]) -> str:
    """The numbers behind a sweep figure: one table per (dataset, mode), one row per value."""
    blocks = []
    for dataset, modes in sweep["points"].items():
        for mode, points in modes.items():
            rows = [{value_name: f"{p['value']:g}", **p} for p in points]
            cols = present_columns(rows, metrics)
            body = stats_table(rows, [value_name, "seeds"], cols) if cols else "_no finished cells yet_"
            blocks.append(f"#### {dataset}, {mode} mode ({sweep['variant']})\n\n{body}")
    return "\n\n".join(blocks)
