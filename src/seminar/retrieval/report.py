"""Markdown tables, JSON and the Figure-2-style plot of a recall grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seminar.io import atomic_path, write_json_atomic


def recall_table(results: dict[str, Any]) -> str:
    """One Markdown table per (group, L): methods as rows, bytes per behaviour beside Recall@K."""
    rows = results["rows"]
    ks = sorted({r["k"] for r in rows})
    lines: list[str] = []
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for group in groups:
        for length in sorted({r["length"] for r in rows if r["group"] == group}):
            sel = [r for r in rows if r["group"] == group and r["length"] == length]
            lines.append(f"### {group}, L = {length}\n")
            head = "| method | bytes/behaviour | re-rank R | " + " | ".join(f"R@{k}" for k in ks)
            lines.append(head + " | build s/user | query ms |")
            lines.append("|" + "---|" * (len(ks) + 5))
            for method in dict.fromkeys(r["method"] for r in sel):
                by_k = {r["k"]: r for r in sel if r["method"] == method}
                first = next(iter(by_k.values()))
                rr = "/".join(str(by_k[k]["rerank"]) for k in ks if k in by_k) if first["rerank"] else "-"
                recalls = " | ".join(f"{by_k[k]['recall']:.4f}" if k in by_k else "" for k in ks)
                query_ms = sum(r["query_ms"] for r in by_k.values()) / len(by_k)
                lines.append(
                    f"| {method} | {first['bytes_per_behaviour']} | {rr} | {recalls} | "
                    f"{first['build_s']:.3f} | {query_ms:.2f} |"
                )
            lines.append("")
    return "\n".join(lines)


def plot_recall(results: dict[str, Any], path: Path) -> None:
    """Rows = groups, columns = L, Recall@K against K per method (as in the paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(
        len(groups), len(lengths), figsize=(4.2 * len(lengths), 3.4 * len(groups)), squeeze=False, sharey=True
    )
    cmap = plt.get_cmap("tab20")
    for gi, group in enumerate(groups):
        for li, length in enumerate(lengths):
            ax = axes[gi][li]
            for mi, method in enumerate(methods):
                pts = sorted(
                    (r["k"], r["recall"])
                    for r in rows
                    if r["group"] == group and r["length"] == length and r["method"] == method
                )
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        marker="o",
                        ms=3,
                        color=cmap(mi % 20),
                        label=method,
                    )
            ax.set_xscale("log", base=2)
            ax.set_title(f"{group}\nL={length}", fontsize=9)
            ax.set_xlabel("K")
            ax.set_ylabel("Recall@K")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out: Path, plot: bool = True) -> dict[str, Path]:
    """Write results.json, recall_table.md and (optionally) recall.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "table": out / "recall_table.md", "png": out / "recall.png"}
    write_json_atomic(paths["json"], results)
    with atomic_path(paths["table"]) as tmp:
        tmp.write_text(recall_table(results))
    if plot and results["rows"]:
        plot_recall(results, paths["png"])
    return paths
