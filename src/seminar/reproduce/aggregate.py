"""Mean ± std over seeds of finished cells, shaped as the paper's tables and sweep figures.

The standard deviation is the population one (``ddof=0``), as in docs/results.md, so a metric
seen with one seed has std 0. Only metrics every seed reported are summarised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seminar.reproduce.cells import SWEEPS, Cell
from seminar.reproduce.config import METRICS, PSU_TASKS, ReproduceConfig

TASK_LABELS = {"next_pair": "next pair", "align": "alignment", "relevance": "q-i relevance"}


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class FinishedCell:
    """A cell with the metrics its run reached (test, per mode)."""

    cell: Cell
    metrics: dict[str, dict[str, float]]
    seconds: float | None = None
    dropped_tasks: dict[str, str] = field(default_factory=dict)  # PSU tasks the dataset could not run


def summarise(values: Sequence[float]) -> Stat:
    """Mean and population standard deviation of one metric over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values to summarise")
    return Stat(float(arr.mean()), float(arr.std()), int(arr.size))


def metric_stats(per_seed: Sequence[dict[str, float]]) -> dict[str, Stat]:
    """Stats of every known metric present in all of ``per_seed`` (one mapping per seed)."""
    if not per_seed:
        return {}
    names = [m for m in METRICS if all(m in r for r in per_seed)]
    return {m: summarise([r[m] for r in per_seed]) for m in names}


def pretraining_label(tasks: Sequence[str] | None, dropped: dict[str, str] | None = None) -> str:
    """The Table 3 "pretraining" cell: none, one task "only", a few tasks, or all of them, and
    which of them the dataset could not support (switched off, with why)."""
    if not tasks:
        return "none"
    names = " + ".join(TASK_LABELS[t] for t in tasks)
    if tuple(tasks) == PSU_TASKS:
        label = f"all ({names})"
    else:
        label = f"{names} only" if len(tasks) == 1 else f"{names} (no {_missing(tasks)})"
    notes = [f"{TASK_LABELS[t]} switched off: {why}" for t, why in (dropped or {}).items()]
    return "; ".join([label, *notes])


def _missing(tasks: Sequence[str]) -> str:
    return " or ".join(TASK_LABELS[t] for t in PSU_TASKS if t not in tasks)


def _row(name: str, found: list[FinishedCell], mode: str, **extra: Any) -> dict[str, Any]:
    per_seed = [f.metrics[mode] for f in found if mode in f.metrics]
    stats = metric_stats(per_seed)
    users = [int(r["users"]) for r in per_seed if "users" in r]
    return {
        "model": name,
        **extra,
        "seeds": len(per_seed),
        "users": min(users) if users else None,  # test users of the mode (the same for every seed)
        "metrics": {k: v.as_dict() for k, v in stats.items()},
    }


def table_rows(
    config: ReproduceConfig, finished: list[FinishedCell], table: int, dataset: str, mode: str
) -> list[dict[str, Any]]:
    """Rows of Table 2 (models) or 3 (pretraining ablations) for one dataset and mode, config order."""
    rows = []
    for variant in config.models:
        if table not in (variant.tables or []):
            continue
        found = [
            f
            for f in finished
            if f.cell.sweep is None and f.cell.dataset == dataset and f.cell.variant == variant.name
        ]
        extra: dict[str, Any] = {"ranker": variant.model}
        if table == 3:
            dropped = {t: why for f in found for t, why in f.dropped_tasks.items()}
            extra["pretraining"] = pretraining_label(variant.psu_tasks, dropped)
        rows.append(_row(variant.name, found, mode, **extra))
    return rows


def sweep_points(
    config: ReproduceConfig, finished: list[FinishedCell], sweep: str, dataset: str, mode: str
) -> list[dict[str, Any]]:
    """One point per sweep value (in ascending order) with its stats over seeds."""
    spec = getattr(config.sweeps, sweep)
    points = []
    for value in sorted(spec.values):
        found = [
            f
            for f in finished
            if f.cell.sweep == sweep and f.cell.dataset == dataset and f.cell.value == value
        ]
        row = _row(spec.variant, found, mode)
        row.pop("model")
        points.append({"value": value, **row})
    return points


def sweep_datasets(config: ReproduceConfig, sweep: str) -> list[str]:
    spec = getattr(config.sweeps, sweep)
    return [d.name for d in config.datasets if spec.datasets is None or d.name in spec.datasets]


def collect(config: ReproduceConfig, finished: list[FinishedCell]) -> dict[str, Any]:
    """Tables 2 and 3 and the sweeps as plain, JSON-ready data."""
    out: dict[str, Any] = {"table2": {}, "table3": {}, "sweeps": {}}
    for table in (2, 3):
        if not any(table in (v.tables or []) for v in config.models):
            continue
        out[f"table{table}"] = {
            ds.name: {mode: table_rows(config, finished, table, ds.name, mode) for mode in config.modes}
            for ds in config.datasets
        }
    for sweep in SWEEPS:
        spec = getattr(config.sweeps, sweep)
        if spec is None:
            continue
        out["sweeps"][sweep] = {
            "variant": spec.variant,
            "values": list(spec.values),
            "points": {
                name: {mode: sweep_points(config, finished, sweep, name, mode) for mode in config.modes}
                for name in sweep_datasets(config, sweep)
            },
        }
    return out
