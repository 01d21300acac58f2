"""The report folder: README.md linking Markdown tables, PNG figures and results.json.

The report is a sequence of sections, each built by one function from a :class:`ReportContext`
(the config, the folder layout, every finished cell). A section writes its own files, returns
its Markdown, and may contribute a key to ``results.json``. Adding a section (Table 4, say) is
writing one builder and passing it in ``sections`` or adding it to :data:`SECTIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seminar.data.schema import MANIFEST
from seminar.io import atomic_path, write_json_atomic
from seminar.reproduce.aggregate import FinishedCell, collect
from seminar.reproduce.cells import Cell, Layout
from seminar.reproduce.config import ReproduceConfig
from seminar.reproduce.plots import plot_sweep
from seminar.reproduce.tables import generated_query_note, grid_table_markdown, sweep_markdown

README = "README.md"
RESULTS = "results.json"


@dataclass(frozen=True)
class Section:
    """One part of the report.

    ``body`` is Markdown with links relative to the report folder; ``files`` are the files the
    builder wrote there (relative names); ``key``/``data`` go into results.json when ``key`` is set.
    """

    title: str
    body: str
    files: tuple[str, ...] = ()
    key: str | None = None
    data: Any = None


@dataclass
class ReportContext:
    """What a section builder may read: the config, the folder, finished cells and their numbers."""

    config: ReproduceConfig
    layout: Layout
    planned: list[Cell]
    finished: list[FinishedCell]
    retrieval: dict[str, Any] | None = None
    collected: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.collected:
            self.collected = collect(self.config, self.finished)

    @property
    def root(self) -> Path:
        return self.layout.root

    def run_dir(self, dataset: str, variant: str, seed: int) -> Path | None:
        """The trained run of a finished main-grid cell (for sections that reload a model)."""
        for f in self.finished:
            c = f.cell
            if c.sweep is None and (c.dataset, c.variant, c.seed) == (dataset, variant, seed):
                return self.layout.run_dir(c.spec)
        return None

    def data_dir(self, dataset: str) -> Path:
        return self.layout.data_dir(self.config, dataset)


SectionBuilder = Callable[[ReportContext], "Section | None"]


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _grid_table_section(ctx: ReportContext, table: int, title: str, leading: Sequence[str]) -> Section | None:
    data = ctx.collected.get(f"table{table}")
    if not data:
        return None
    name = f"table{table}.md"
    notes = {}
    for dataset in data:
        manifest_path = ctx.data_dir(dataset) / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        note = generated_query_note(manifest)
        if note:
            notes[(dataset, "search")] = note
    body = grid_table_markdown(data, leading, ctx.config.report.columns, notes)
    _write_text(ctx.root / name, f"## {title}\n\n{body}\n")
    return Section(title, body, (name,), f"table{table}", data)


def table2_section(ctx: ReportContext) -> Section | None:
    """Table 2: every model on every dataset and test mode."""
    return _grid_table_section(ctx, 2, "Table 2: lifelong sequence modelling", ["model", "seeds"])


def table3_section(ctx: ReportContext) -> Section | None:
    """Table 3: SEMINAR with each set of PSU pretraining tasks (and without pretraining)."""
    return _grid_table_section(
        ctx, 3, "Table 3: ablation of the PSU pretraining tasks", ["model", "pretraining", "seeds"]
    )


def figure2_section(ctx: ReportContext) -> Section | None:
    """Figure 2: Recall@K against K of the retrieval methods on the synthetic groups."""
    if ctx.retrieval is None or not ctx.retrieval.get("rows"):
        return None
    from seminar.retrieval.report import plot_recall, recall_table

    png = "figure2_recall.png"
    plot_recall(ctx.retrieval, ctx.root / png)
    table = ctx.layout.retrieval_dir.relative_to(ctx.root) / "recall_table.md"
    _write_text(ctx.root / table, recall_table(ctx.retrieval))
    body = (
        f"![Figure 2]({png})\n\nRecall@K of each method per synthetic group (rows) and sequence length "
        f"(columns); the numbers, code sizes and timings are in [{table.as_posix()}]({table.as_posix()})."
    )
    return Section(
        "Figure 2: Recall@K of approximate retrieval (synthetic)",
        body,
        (png, table.as_posix()),
        "retrieval",
        ctx.retrieval,
    )


def _sweep_section(
    ctx: ReportContext, sweep: str, number: int, title: str, xlabel: str, value_name: str
) -> Section | None:
    data = ctx.collected["sweeps"].get(sweep)
    if data is None:
        return None
    stem = f"figure{number}_{sweep}"
    metrics = ctx.config.report.figure_metrics
    table = sweep_markdown(data, value_name, metrics)
    _write_text(ctx.root / f"{stem}.md", f"## {title}\n\n{table}\n")
    files = [f"{stem}.md"]
    if plot_sweep(data, metrics, xlabel, title, ctx.root / f"{stem}.png"):
        files.insert(0, f"{stem}.png")
        body = f"![Figure {number}]({stem}.png)\n\n{table}"
    else:
        body = table
    return Section(title, body, tuple(files), None, None)


def figure3_section(ctx: ReportContext) -> Section | None:
    """Figure 3: NDCG@K against the number of PSU pretraining epochs (0 = no pretraining)."""
    return _sweep_section(
        ctx, "pretrain_epochs", 3, "Figure 3: NDCG@K vs pretraining epochs", "pretraining epochs", "epochs"
    )


def figure4_section(ctx: ReportContext) -> Section | None:
    """Figure 4: NDCG@K against the query/item fusion weight λ."""
    return _sweep_section(ctx, "fusion_lambda", 4, "Figure 4: NDCG@K vs fusion weight λ", "λ", "λ")


TABLE4_MODELS = ("seminar", "twin", "sim_soft")  # GSUs that score by an inner product


def _table4_cell(ctx: ReportContext, dataset: str, variant: str) -> dict[str, Any] | None:
    """Recall@K on one trained run's GSU keys, computed once and cached as a cell file."""
    from seminar.data.schema import load_dataset
    from seminar.retrieval.model_recall import ModelRecallConfig, NoLongHistories, run_model_recall

    seed = ctx.config.seeds[0]
    run = ctx.run_dir(dataset, variant, seed)
    if run is None:
        return None
    slug = "".join(ch if ch.isalnum() else "-" for ch in f"{dataset}-{variant}-seed{seed}".lower())
    cache = ctx.root / "cells" / "table4" / f"{slug}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    report = ctx.config.report
    config = ModelRecallConfig(
        ks=tuple(report.model_recall_ks),
        min_length=report.model_recall_min_length,
        max_users=report.model_recall_users,
        progress=False,
    )
    try:
        results = run_model_recall(load_dataset(ctx.data_dir(dataset)), run, config)
    except NoLongHistories as exc:  # a dataset of short histories: say so in the report
        results = {"skipped": str(exc), "rows": []}
    results = {"dataset": dataset, "variant": variant, "seed": seed, **results}
    results = json.loads(json.dumps(results, default=str))  # as a re-run will read it back
    write_json_atomic(cache, results)
    return results


def table4_section(ctx: ReportContext) -> Section | None:
    """Table 4: Recall@K of the retrieval methods on trained models' own GSU embeddings."""
    if not ctx.config.report.model_recall:
        return None
    from seminar.retrieval.report import recall_table

    variants = [v.name for v in ctx.config.models if v.model in TABLE4_MODELS]
    cells = [
        cell
        for dataset in ctx.config.datasets
        for variant in variants
        if (cell := _table4_cell(ctx, dataset.name, variant)) is not None
    ]
    if not cells:
        return None
    parts = []
    for cell in cells:
        head = f"### {cell['dataset']}, {cell['variant']} (seed {cell['seed']})"
        if cell.get("skipped"):
            parts.append(f"{head}\n\nnot measured: {cell['skipped']}")
        else:
            table = recall_table(cell).split("\n", 2)[2]  # drop the grid's own heading
            note = f"{cell['users']} users, truth = the trained GSU's exact top-K."
            parts.append(f"{head}\n\n{note}\n\n{table}")
    body = "\n\n".join(parts)
    _write_text(ctx.root / "table4.md", f"## Table 4: Recall@K on the models' GSU embeddings\n\n{body}\n")
    return Section("Table 4: Recall@K on the models' GSU embeddings", body, ("table4.md",), "table4", cells)


# The report's sections, in order.
SECTIONS: tuple[SectionBuilder, ...] = (
    table2_section,
    table3_section,
    figure2_section,
    table4_section,
    figure3_section,
    figure4_section,
)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _settings_markdown(config: ReproduceConfig) -> str:
    t = config.training
    stopping = f"patience {t.patience}" if t.patience is not None else "no early stop"
    lines = [
        f"- datasets: {', '.join(d.name + ' (' + d.source + ')' for d in config.datasets) or 'none'}",
        f"- seeds: {', '.join(str(s) for s in config.seeds)}; test modes: {', '.join(config.modes)}",
        f"- L={t.max_length}, K={t.top_k}, d={t.dim}, {_count(t.heads, 'head')}, "
        f"at most {_count(t.epochs, 'epoch')} "
        f"({stopping}, best by validation {t.monitor} in {t.eval_mode} mode), "
        f"PSU pretrained {_count(t.pretrain_epochs, 'epoch')}, λ={t.fusion_lambda:g}, "
        f"{t.positions_per_user or 'all'} training positions per user per epoch",
        *(
            f"- {v.name}: its own window L={own}"
            for v in config.models
            if (own := config.max_length(v)) is not None
        ),
        "- numbers are mean ± std over seeds (population std; one seed shows its value alone); "
        "`users` is the number of test users a mode ranks, flagged `(few)` under 100; "
        "the full settings are in results.json",
    ]
    return "\n".join(lines)


def _cell_json(f: FinishedCell, layout: Layout) -> dict[str, Any]:
    c = f.cell
    return {
        "dataset": c.dataset,
        "variant": c.variant,
        "seed": c.seed,
        "sweep": c.sweep,
        "value": c.value,
        "run": layout.run_dir(c.spec).relative_to(layout.root).as_posix(),
        "seconds": f.seconds,
        "metrics": f.metrics,
    }


def write_report(ctx: ReportContext, sections: Sequence[SectionBuilder] = SECTIONS) -> dict[str, Any]:
    """Build every section, then write results.json and README.md; returns what results.json holds."""
    ctx.root.mkdir(parents=True, exist_ok=True)
    built = [s for builder in sections if (s := builder(ctx)) is not None]
    done = {(f.cell.dataset, f.cell.variant, f.cell.seed, f.cell.sweep, f.cell.value) for f in ctx.finished}
    missing = [c for c in ctx.planned if (c.dataset, c.variant, c.seed, c.sweep, c.value) not in done]
    results: dict[str, Any] = {
        "name": ctx.config.name,
        "config": ctx.config.to_dict(),
        "cells": [_cell_json(f, ctx.layout) for f in ctx.finished],
        "missing": [c.label for c in missing],
        **ctx.collected,
    }
    for section in built:
        if section.key is not None:
            results[section.key] = section.data
    write_json_atomic(ctx.root / RESULTS, json.loads(json.dumps(results, default=str)))

    title = ctx.config.name or "reproduce"
    parts = [
        f"# {title}: SEMINAR reproduction report",
        f"Written by `seminar reproduce`; {len(ctx.planned) - len(missing)} of {len(ctx.planned)} cells "
        "finished. Re-running the same command skips finished cells and refreshes this folder.",
        _settings_markdown(ctx.config),
        "## Contents",
        "\n".join(f"- {s.title}: " + ", ".join(f"[{name}]({name})" for name in s.files) for s in built)
        + f"\n- every number (per cell and aggregated) and the resolved config: [{RESULTS}]({RESULTS})",
    ]
    parts += [f"## {s.title}\n\n{s.body}" for s in built]
    if missing:
        parts.append("## Cells not finished yet\n\n" + "\n".join(f"- {c.label}" for c in missing))
    _write_text(ctx.root / README, "\n\n".join(parts) + "\n")
    return results
