"""Readable tables of experiment results (terminal and Markdown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

RESULT_COLUMNS = ("ndcg@5", "ndcg@10", "ndcg@50", "hr@1", "hr@10", "mrr")
SHORT_NAMES = {"ndcg": "N", "hr": "HR", "mrr": "MRR"}


def short_name(metric: str) -> str:
    """``ndcg@10`` -> ``N@10`` (the paper's notation), so tables fit a terminal."""
    base, _, k = metric.partition("@")
    return SHORT_NAMES.get(base, base) + (f"@{k}" if k else "")


def results_table(
    rows: Sequence[dict[str, Any]], title: str = "results", columns: Sequence[str] = RESULT_COLUMNS
) -> Table:
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    for name in columns:
        table.add_column(short_name(name), justify="right", no_wrap=True)
    table.add_column("users", justify="right", no_wrap=True)
    for row in rows:
        cells = [str(row.get("model", "")), str(row.get("mode", ""))]
        cells += [f"{row[c]:.4f}" if c in row else "-" for c in columns]
        cells.append(str(int(row["users"])) if "users" in row else "-")
        table.add_row(*cells)
    return table


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table; floats with 4 decimals, (mean, std) pairs as mean ± std."""

    def cell(value: Any) -> str:
        if isinstance(value, tuple):
            return f"{value[0]:.4f} ± {value[1]:.4f}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
