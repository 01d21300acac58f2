"""PNG figures of the report (matplotlib, Agg backend): the sweeps of Figures 3 and 4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seminar.io import atomic_path


def plot_sweep(sweep: dict[str, Any], metrics: Sequence[str], xlabel: str, title: str, path: Path) -> bool:
    """Metric against sweep value, mean ± std over seeds; rows = datasets, columns = test modes.

    Returns False (and writes nothing) when no point has a value yet.
    """
    panels = [(ds, mode, pts) for ds, modes in sweep["points"].items() for mode, pts in modes.items()]
    if not any(p["metrics"] for _, _, pts in panels for p in pts):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(sweep["points"])
    modes = list(next(iter(sweep["points"].values())))
    fig, axes = plt.subplots(
        len(datasets), len(modes), figsize=(4.4 * len(modes), 3.4 * len(datasets)), squeeze=False
    )
    for di, dataset in enumerate(datasets):
        for mi, mode in enumerate(modes):
            ax = axes[di][mi]
            points = sweep["points"][dataset][mode]
            for metric in metrics:
                pts = [(p["value"], p["metrics"][metric]) for p in points if metric in p["metrics"]]
                if not pts:
                    continue
                ax.errorbar(
                    [x for x, _ in pts],
                    [s["mean"] for _, s in pts],
                    yerr=[s["std"] for _, s in pts],
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=metric.upper(),
                )
            ax.set_title(f"{dataset}, {mode}", fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("metric (mean ± std over seeds)")
            ax.set_xticks(sorted({p["value"] for p in points}))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({sweep['variant']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True
