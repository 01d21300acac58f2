"""A readable summary of a prepared dataset (the numbers `seminar data info` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from seminar.data.schema import SeminarDataset

PERCENTILES = (50, 90, 99)


def dataset_summary(ds: SeminarDataset) -> dict[str, Any]:
    counts = ds.manifest["counts"]
    lengths = ds.lengths
    return {
        "source": ds.manifest["source"],
        "users": counts["users"],
        "items": counts["items"],
        "queries": counts["queries"] - 1,  # without the empty query
        "attributes": counts["attributes"],
        "user_fields": list(ds.manifest.get("user_fields", [])),  # absent from older datasets
        "user_attributes": counts.get("user_attributes", 0),
        "behaviours": counts["behaviours"],
        "search_share": counts["search_behaviours"] / max(counts["behaviours"], 1),
        "length": {
            "mean": float(lengths.mean()),
            **{f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES},
            "min": int(lengths.min()),
            "max": int(lengths.max()),
        },
        "synthetic_queries": ds.manifest["synthetic_queries"],
        "text_kind": ds.manifest["text_kind"],
        "vectors": {ch: f"{v['dim']}-d ({v['encoder']})" for ch, v in ds.manifest["vectors"].items()},
        "negatives": ds.manifest["split"]["negatives"],
        "skipped": ds.manifest["skipped"],
    }


def summary_table(summary: dict[str, Any], title: str = "dataset") -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    length = summary["length"]
    rows = [
        ("source", summary["source"]),
        ("users", f"{summary['users']:,}"),
        ("items", f"{summary['items']:,}"),
        ("queries", f"{summary['queries']:,}" + (" (generated)" if summary["synthetic_queries"] else "")),
        ("attribute values", f"{summary['attributes']:,}"),
        ("user fields", ", ".join(summary["user_fields"]) or "none"),
        ("user attribute values", f"{summary['user_attributes']:,}"),
        ("behaviours", f"{summary['behaviours']:,}"),
        ("search share", f"{summary['search_share']:.1%}"),
        (
            "length mean / p50 / p90 / p99 / max",
            " / ".join([f"{length['mean']:.1f}", *(f"{length[f'p{q}']:.0f}" for q in PERCENTILES)])
            + f" / {length['max']}",
        ),
        ("text", summary["text_kind"]),
        ("content vectors", ", ".join(f"{k}: {v}" for k, v in summary["vectors"].items()) or "none"),
        ("eval negatives per user", str(summary["negatives"])),
    ]
    rows += [(f"skipped: {reason}", f"{n:,}") for reason, n in summary["skipped"].items()]
    for name, value in rows:
        table.add_row(name, str(value))
    return table
