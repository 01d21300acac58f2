"""Markdown tables of the report: Table 2 (models), Table 3 (pretraining ablations), sweep values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seminar.report import markdown_table

MISSING = "–"
FEW_USERS = 100  # a mode ranked over fewer test users is flagged: its differences are mostly noise
CEILING = "oracle"  # a row of this ranker is the ceiling the other rows' gaps are measured from
GAP_METRICS = ("ndcg@10", "ndcg@5", "ndcg@50", "mrr")  # the first a block has is the gap's metric


def present_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The wanted metrics that at least one row has (AUC only where a dataset provides it)."""
    return [c for c in columns if any(c in r["metrics"] for r in rows)]


def _cells(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Metric cells: mean ± std over seeds, or the one value when a single seed finished."""
    out: dict[str, Any] = {}
    for c in columns:
        stat = row["metrics"].get(c)
        if not stat:
            out[c] = MISSING
        else:
            out[c] = stat["mean"] if stat.get("n", 2) == 1 else (stat["mean"], stat["std"])
    return out


def _users(row: dict[str, Any]) -> str:
    users = row.get("users")
    if users is None:
        return MISSING
    return f"{users} (few)" if users < FEW_USERS else str(users)


def oracle_gaps(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> tuple[str, list[Any]] | None:
    """The column of each row's distance below the oracle row's mean (the ceiling of generated data
    whose truth is known), on the first metric of :data:`GAP_METRICS` the table shows; None when the
    block has no finished oracle row."""
    metric = next((m for m in GAP_METRICS if m in columns), None)
    ceiling = next(
        (r for r in rows if r.get("ranker") == CEILING and metric in r["metrics"] and r["metrics"][metric]),
        None,
    )
    if metric is None or ceiling is None:
        return None
    top = ceiling["metrics"][metric]["mean"]
    gaps = [top - r["metrics"][metric]["mean"] if r["metrics"].get(metric) else MISSING for r in rows]
    return f"gap to the oracle ({metric})", gaps


def stats_table(rows: Sequence[dict[str, Any]], leading: Sequence[str], columns: Sequence[str]) -> str:
    """One Markdown table: ``leading`` columns as they are, the test users of each row, metric
    columns as mean ± std over seeds (a single seed shows its value alone), and, where an oracle
    row has finished, each row's gap to it."""
    flat = [{**{k: r[k] for k in leading}, "users": _users(r), **_cells(r, columns)} for r in rows]
    shown = [*leading, "users", *columns]
    gaps = oracle_gaps(rows, columns)
    if gaps is not None:
        name, values = gaps
        flat = [{**row, name: gap} for row, gap in zip(flat, values, strict=True)]
        shown.append(name)
    return markdown_table(flat, shown)


def few_users_note(rows: Sequence[dict[str, Any]]) -> str:
    """A warning line for a block ranked over fewer than FEW_USERS test users (else empty)."""
    counts = [r["users"] for r in rows if r.get("users") is not None]
    if not counts or min(counts) >= FEW_USERS:
        return ""
    return (
        f"**Only {min(counts)} test users in this mode** (fewer than {FEW_USERS}): differences between "
        "rows here are within noise; read them with care.\n\n"
    )


def grid_table_markdown(
    table: dict[str, dict[str, list[dict[str, Any]]]],
    leading: Sequence[str],
    columns: Sequence[str],
    notes: dict[tuple[str, str], str] | None = None,
) -> str:
    """Every (dataset, mode) block of Table 2 or 3, one Markdown table each; ``notes`` holds a line
    to print above a (dataset, mode) block (e.g. that its queries were generated)."""
    blocks = []
    for dataset, modes in table.items():
        for mode, rows in modes.items():
            cols = present_columns(rows, columns)
            body = "_no finished cells yet_"
            if cols:
                note = (notes or {}).get((dataset, mode))
                table = few_users_note(rows) + stats_table(rows, leading, cols)
                body = f"{note}\n\n{table}" if note else table
            elif rows and all(r.get("users") == 0 for r in rows):
                body = "_no test user in this mode (no user's test behaviour is of this kind)_"
            blocks.append(f"#### {dataset}, {mode} mode\n\n{body}")
    return "\n\n".join(blocks)


def sweep_markdown(sweep: dict[str, Any], value_name: str, metrics: Sequence[str]) -> str:
    """The numbers behind a sweep figure: one table per (dataset, mode), one row per value."""
    blocks = []
    for dataset, modes in sweep["points"].items():
        for mode, points in modes.items():
            rows = [{value_name: f"{p['value']:g}", **p} for p in points]
            cols = present_columns(rows, metrics)
            body = "_no finished cells yet_"
            if cols:
                body = few_users_note(rows) + stats_table(rows, [value_name, "seeds"], cols)
            blocks.append(f"#### {dataset}, {mode} mode ({sweep['variant']})\n\n{body}")
    return "\n\n".join(blocks)


def generated_query_note(manifest: dict[str, Any]) -> str | None:
    """The warning a search-mode block of a dataset with generated queries carries, or None.

    A generated query names attributes of the positive itself; against negatives drawn from all
    items, matching those attributes finds the positive, so such numbers flatter any model that
    reads the query. Category- or query-matched negatives (``eval_negatives: category | query``) take
    most of that away.
    """
    if not manifest.get("synthetic_queries"):
        return None
    negatives = (manifest.get("split") or {}).get("eval_negatives", "uniform")
    if negatives == "category":
        return (
            "_Queries here are generated from the positive's attributes; negatives are drawn from the "
            "positive's own category, so the query's category does not single the positive out._"
        )
    if negatives == "query":
        return (
            "_Queries here are generated from the positive's attributes; negatives are items clicked "
            "under the same query, so matching the query does not single the positive out._"
        )
    return (
        "**Queries here are generated from the positive's own attributes, and negatives are drawn from "
        "all items:** a model that matches the query's category to the candidates finds the positive "
        "without knowing the user. Compare with a build using `eval_negatives: category`."
    )
