"""Run a reproduce grid: prepare datasets, pretrain, fine-tune, evaluate, cell by cell, resumably.

Each finished cell is one JSON file written atomically; a re-run skips it. A run interrupted
mid-training resumes from its ``last`` checkpoint and ends where an uninterrupted one would. A
finished cell records the settings it was trained with, and a later run with other settings stops
with an error instead of mixing results of two configs in one report. Two settings are the
exception, as they are for the trainer's ``--resume``: with more ``epochs`` or a larger
``patience`` a finished run that they let go on (stopped early, or at its old epoch cap) is
resumed and evaluated again, and one they would not change keeps its result.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seminar.allocator import retain_freed_memory
from seminar.data.build import prepare
from seminar.data.schema import SeminarDataset, load_dataset
from seminar.data.sources.options import missing_inputs, read_source
from seminar.experiment import evaluate_run, finetune, pretrain
from seminar.io import exclusive_lock, try_lock, write_json_atomic
from seminar.models.features import FeatureTables
from seminar.models.psu import NoPretrainingTask, PretrainConfig, feasible_tasks
from seminar.reproduce.aggregate import FinishedCell
from seminar.reproduce.cells import Cell, Layout, RunSpec, plan_cells, run_settings, unique_specs
from seminar.reproduce.config import ConfigError, ReproduceConfig, load_config
from seminar.reproduce.report import SECTIONS, ReportContext, SectionBuilder, write_report
from seminar.settings import ExperimentSettings
from seminar.train.trainer import BEST, LAST, METRICS_FILE, read_jsonl, stops_early

SETTINGS_FILE = "reproduce-settings.json"
# Settings a finished run is continued under, when raised, rather than refused (the trainer resumes
# them); lowered, they are refused like any other change (the run went further than they allow).
CONTINUABLE = frozenset({"training.epochs", "training.patience"})
# Settings of a ranker run that a PSU run does not depend on.
_RANKER_ONLY = (
    "gsu_recency",
    "item_popularity",
    "epochs",
    "top_k",
    "monitor",
    "eval_mode",
    "batch_size",
    "train_negatives",
    "targets_per_window",
    "negative_sampling",
    "loss",
    "dropout",
    "user_id",
    "knn_span",
    "knn_history",
    "knn_neighbours",
    "layers",
)


def _differences(saved: Any, current: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two JSON-like values: (saved, current) of each."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(saved) | set(current)):
            out.update(_differences(saved.get(key), current.get(key), f"{prefix}{key}."))
        return out
    return {} if saved == current else {prefix.rstrip("."): (saved, current)}


def _raised(saved: Any, current: Any) -> bool:
    """A count (epochs, patience) made larger; None is no limit (patience: never stop early)."""
    if current is None:
        return True
    return isinstance(saved, int) and isinstance(current, int) and current > saved


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _check_same(path: Path, saved: Any, current: Any, allowed: frozenset[str] = frozenset()) -> bool:
    """Refuse a folder produced with other settings, except those of ``allowed`` raised; whether any
    of those were."""
    changed = _differences(saved, current)
    refused = [
        f"{key}: {old!r} -> {new!r}"
        for key, (old, new) in changed.items()
        if key not in allowed or not _raised(old, new)
    ]
    if refused:
        raise ConfigError(
            f"{path} was produced with other settings ({'; '.join(refused[:5])}"
            f"{'; ...' if len(refused) > 5 else ''}); use another --out folder or delete it"
        )
    return bool(changed)


class GridRunner:
    """Trains and evaluates the cells of one config into one output folder."""

    def __init__(self, config: ReproduceConfig, layout: Layout, *, progress: bool = True) -> None:
        self.config = config
        self.layout = layout
        self.progress = progress
        self._loaded: tuple[str, SeminarDataset, FeatureTables] | None = None

    # ---- datasets ---------------------------------------------------------------------------

    def check_inputs(self, datasets: Sequence[str]) -> None:
        """Fail before any training when a dataset's raw files are missing."""
        problems = []
        for name in datasets:
            ds = self.config.dataset(name)
            assert ds is not None
            problems += [f"dataset {name!r} ({ds.source}): options.{p}" for p in missing_inputs(ds.options)]
        if problems:
            raise ConfigError("missing input files:\n  " + "\n  ".join(problems))

    def dataset(self, name: str) -> tuple[SeminarDataset, FeatureTables]:
        """Prepare (unless up to date) and load one dataset; only the latest one stays in memory."""
        if self._loaded is not None and self._loaded[0] == name:
            return self._loaded[1], self._loaded[2]
        self._loaded = None
        cfg = self.config.dataset(name)
        assert cfg is not None
        build = cfg.build.build_config(self.progress)
        directory = self.layout.data_dir(self.config, name)
        prepare(read_source(cfg.source, cfg.options, cfg.build.seed), directory, build)
        ds = load_dataset(directory)
        self._loaded = (name, ds, FeatureTables.from_dataset(ds))
        return self._loaded[1], self._loaded[2]

    # ---- training ---------------------------------------------------------------------------

    def settings(self, spec: RunSpec) -> ExperimentSettings:
        """The grid's training settings with what the run's spec sets itself (a sweep's λ or PSU
        epochs, the variant's user features, user id, GSU recency and window)."""
        return self.config.training.replace(
            fusion_lambda=spec.fusion_lambda,
            user_features=spec.user_features,
            gsu_recency=spec.gsu_recency,
            item_popularity=spec.item_popularity,
            user_id=spec.user_id,
            max_length=spec.max_length or self.config.training.max_length,
            pretrain_epochs=spec.pretrain_epochs or self.config.training.pretrain_epochs,
        )

    def _guard(self, directory: Path, settings: dict[str, Any]) -> bool:
        """Record what a run directory is for; refuse one started with other settings.

        Returns True when the directory holds a checkpoint to resume from.
        """
        marker = directory / SETTINGS_FILE
        if marker.exists():
            if _check_same(directory, _read_json(marker), settings, CONTINUABLE):
                write_json_atomic(marker, settings)  # continued under more epochs or patience
            if not (directory / LAST).exists():  # stopped inside the first epoch: nothing to resume
                (directory / METRICS_FILE).unlink(missing_ok=True)
                shutil.rmtree(directory / BEST, ignore_errors=True)
        elif directory.exists() and any(directory.iterdir()):
            raise ConfigError(f"{directory} holds files not written by `seminar reproduce`; move them away")
        else:
            write_json_atomic(marker, settings)
        return (directory / LAST).exists()

    def psu_config(self, spec: RunSpec) -> PretrainConfig:
        """The PSU pretraining a run starts from, as its variant asks for it."""
        return self.settings(spec).pretrain_config(spec.pretrain or (), seed=spec.seed)

    def check_pretraining(self, cells: Sequence[Cell]) -> None:
        """Before any training: refuse a variant whose PSU tasks all need what its dataset lacks,
        and say which tasks will be switched off (the report's Table 3 says so too)."""
        seen: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for cell in cells:
            if cell.spec.pretrain is not None:
                variants = seen.setdefault((cell.dataset, cell.spec.pretrain), [])
                if cell.variant not in variants:
                    variants.append(cell.variant)
        for (name, tasks), variants in seen.items():
            _ds, tables = self.dataset(name)
            spec = next(c.spec for c in cells if c.dataset == name and c.spec.pretrain == tasks)
            label = ", ".join(repr(v) for v in variants)
            try:
                _config, dropped = feasible_tasks(self.psu_config(spec), tables)
            except NoPretrainingTask as exc:
                raise ConfigError(f"variant {label} on dataset {name!r}: {exc}") from exc
            for task, why in dropped.items():
                tqdm.write(f"note: variant {label} on dataset {name!r}: PSU task {task} switched off ({why})")

    def _pretrain(self, spec: RunSpec, settings: dict[str, Any]) -> tuple[Path | None, dict[str, str]]:
        """Pretrain (or resume) the PSU a run starts from; its folder and the tasks switched off."""
        psu_dir = self.layout.psu_dir(spec)
        if psu_dir is None or spec.pretrain is None or spec.pretrain_epochs is None:
            return None, {}
        psu_settings = {
            **{k: v for k, v in settings.items() if k not in ("model", "user_features", "recent")},
            "training": {k: v for k, v in settings["training"].items() if k not in _RANKER_ONLY},
        }
        ds, tables = self.dataset(spec.dataset)
        experiment = self.settings(spec)

        def waiting() -> None:
            tqdm.write(f"waiting for another process that is pretraining {psu_dir} ...")

        # rows that share a PSU may run in two processes at once: one pretrains, the other then resumes
        # the finished PSU (no epoch left to run)
        with exclusive_lock(psu_dir.parent / f".{psu_dir.name}.lock", on_wait=waiting):
            resume = self._guard(psu_dir, psu_settings)
            summary = pretrain(
                ds,
                psu_dir,
                experiment.pretrain_config(spec.pretrain, seed=spec.seed),
                experiment.pretrain_train_config(seed=spec.seed),
                resume=resume,
                tables=tables,
                settings=experiment,
            )
        return psu_dir, summary["dropped_tasks"]

    def run_spec(self, spec: RunSpec, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train (resuming) and evaluate one run; with ``previous``, only evaluate its missing modes."""
        t = self.config.training
        settings = _json_ready(run_settings(self.config, spec))
        experiment = self.settings(spec)
        run = self.layout.run_dir(spec)
        started = time.perf_counter()
        # a cell continued under more epochs or patience counts the time its run took before
        continued = (run / LAST).exists() and _read_json(self.layout.cell_file(spec))
        before = previous or continued or {}
        metrics: dict[str, Any] = dict(previous["metrics"]) if previous else {}
        dropped: dict[str, str] = dict(previous.get("dropped_tasks", {})) if previous else {}
        if previous is None:
            psu_dir, dropped = self._pretrain(spec, settings)
            resume = self._guard(run, settings)
            ds, tables = self.dataset(spec.dataset)
            ranker = experiment.ranker_config(spec.model, seed=spec.seed, recent=spec.recent)
            train = experiment.train_config(seed=spec.seed)
            summary = finetune(
                ds, run, ranker, train, pretrained=psu_dir, resume=resume, tables=tables, settings=experiment
            )
            if summary.get("test") and t.eval_mode in self.config.modes:
                metrics[t.eval_mode] = summary["test"]  # fit already tested the best weights in this mode
        todo = [m for m in self.config.modes if m not in metrics]
        if todo:
            ds, tables = self.dataset(spec.dataset)
            evaluation = experiment.train_config(seed=spec.seed)
            metrics.update(evaluate_run(ds, run, evaluation, todo, tables=tables))
        seconds = round(time.perf_counter() - started, 1) + before.get("seconds", 0.0)
        record = {"settings": settings, "metrics": metrics, "seconds": seconds}
        return {**record, "dropped_tasks": dropped} if dropped else record

    def _line(self, index: int, total: int, cell: Cell, record: dict[str, Any]) -> str:
        metric = self.config.training.monitor
        scores = "  ".join(
            f"{mode} {metric}={values[metric]:.4f}"
            for mode, values in record["metrics"].items()
            if mode in self.config.modes and metric in values
        )
        return f"[{index}/{total}] {cell.label}  {scores}  ({record['seconds']:.1f} s)"

    def existing(self, spec: RunSpec) -> dict[str, Any] | None:
        """The cell file of ``spec`` if it is finished with the current settings (error if not); a
        cell whose run the current epochs or patience let train on is not finished."""
        path = self.layout.cell_file(spec)
        record = _read_json(path) if path.exists() else None
        if record is None or "metrics" not in record:
            return None
        current = _json_ready(run_settings(self.config, spec))
        if _check_same(path, record.get("settings"), current, CONTINUABLE) and self._trains_on(spec):
            return None
        return record

    def _trains_on(self, spec: RunSpec) -> bool:
        """Whether the current epochs and patience let ``spec``'s run train further, as the trainer
        resumes it: fewer epochs run than allowed, and fewer epochs without improvement at its end
        than the patience. Read from its metrics; a fitted model (no epochs) never does, and a run
        whose folder is gone is trained again (nothing says where it stopped)."""
        path = self.layout.run_dir(spec) / METRICS_FILE
        if not path.exists():
            return True
        epochs = [r for r in read_jsonl(path) if r.get("stage") == "epoch"]
        if not epochs or epochs[-1].get("epoch", 0) == 0:
            return False
        bad = 0
        for record in reversed(epochs):
            if record.get("improved", True):
                break
            bad += 1
        t = self.config.training
        return epochs[-1]["epoch"] < t.epochs and not stops_early(bad, t.patience)

    def run(self, cells: Sequence[Cell]) -> int:
        """Run every unfinished cell of ``cells``; returns how many runs were trained or completed."""
        specs = unique_specs(list(cells))
        first_cell = {}
        for cell in cells:
            first_cell.setdefault(cell.spec, cell)
        records = {spec: self.existing(spec) for spec in specs}  # settings checked before any work
        todo = [s for s in specs if records[s] is None or set(self.config.modes) - set(records[s]["metrics"])]
        self.check_pretraining([first_cell[s] for s in todo if records[s] is None])
        if specs:
            tqdm.write(f"{len(specs) - len(todo)} of {len(specs)} runs already finished; {len(todo)} to run")
        bar = tqdm(total=len(todo), desc="reproduce", unit="run", disable=not self.progress)
        done = 0
        for index, spec in enumerate(todo, 1):
            cell = first_cell[spec]
            bar.set_postfix_str(cell.label)
            with try_lock(self.layout.run_lock(spec)) as ours:
                if not ours:
                    tqdm.write(f"[{index}/{len(todo)}] {cell.label}  being run by another process; skipped")
                    bar.update()
                    continue
                previous = self.existing(spec)  # another process may have finished it since the scan
                if previous is None or set(self.config.modes) - set(previous["metrics"]):
                    record = self.run_spec(spec, previous)
                    write_json_atomic(self.layout.cell_file(spec), record)
                    tqdm.write(self._line(index, len(todo), cell, record))
                    done += 1
            bar.update()
        bar.close()
        return done

    def run_retrieval(self, run: bool = True) -> dict[str, Any] | None:
        """The synthetic Recall@K grid (Figure 2), stored as one cell; ``run=False`` only reads it."""
        if self.config.retrieval is None:
            return None
        from seminar.retrieval.bench import run_recall_grid

        recall = self.config.retrieval.recall_config(self.layout.retrieval_dir, progress=self.progress)
        settings = _json_ready({k: v for k, v in asdict(recall).items() if k not in ("out", "progress")})
        path = self.layout.retrieval_cell
        record = _read_json(path) if path.exists() else None
        if record is not None and "results" in record:
            _check_same(path, record.get("settings"), settings)
            return record["results"]
        if not run:
            return None
        started = time.perf_counter()
        results = _json_ready(run_recall_grid(recall))
        seconds = round(time.perf_counter() - started, 1)
        write_json_atomic(path, {"settings": settings, "results": results, "seconds": seconds})
        tqdm.write(f"retrieval grid: {len(results['rows'])} rows ({seconds:.1f} s)")
        return results

    def finished(self, cells: Sequence[Cell]) -> list[FinishedCell]:
        """Cells whose run is finished, with their metrics (for the report)."""
        out = []
        for cell in cells:
            record = self.existing(cell.spec)
            if record is not None:
                dropped = record.get("dropped_tasks", {})
                out.append(FinishedCell(cell, record["metrics"], record.get("seconds"), dropped))
        return out


def default_out(config: ReproduceConfig) -> Path:
    return config.out if config.out is not None else Path("runs") / "reproduce" / (config.name or "reproduce")


class WorkerFailed(RuntimeError):
    """A process of ``jobs`` > 1 stopped with an error; the report holds what the others finished."""


def _cell_worker(config: ReproduceConfig, root: Path, cells: list[Cell], threads: int) -> None:
    """One extra process of ``jobs``: the same cells in the same order, each run claimed by a lock,
    so that every process takes the next run no other one holds."""
    torch.set_num_threads(threads)
    retain_freed_memory()
    GridRunner(config, Layout(root), progress=False).run(cells)


def run_reproduce(
    config: ReproduceConfig | Mapping[str, Any] | Path | str,
    out_dir: Path | str | None = None,
    *,
    only_datasets: Sequence[str] | None = None,
    only_models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    retrieval: bool = True,
    progress: bool = True,
    jobs: int = 1,
    sections: Sequence[SectionBuilder] = SECTIONS,
) -> dict[str, Any]:
    """Run the grid a config describes and write its report folder; returns what results.json holds.

    ``config`` is a YAML path, a mapping or a :class:`ReproduceConfig`; ``out_dir`` defaults to
    the config's ``out`` (else ``runs/reproduce/NAME``). ``only_datasets``, ``only_models`` (the
    rows' names; a sweep's cells go with the row they vary) and ``seeds`` restrict which cells run
    (seeds not in the config are added); the report covers every finished cell of the config.
    ``retrieval=False`` skips the retrieval grid. ``jobs`` > 1 runs that many runs at once, in as
    many processes with an equal share of the CPU's threads each (several
    ``seminar reproduce`` commands on one folder share the work the same way); the processes are
    spawned, so a script that asks for them calls this under ``if __name__ == "__main__":``.
    """
    config = load_config(config)
    layout = Layout(Path(out_dir) if out_dir is not None else default_out(config))
    known = [d.name for d in config.datasets]
    unknown = [d for d in only_datasets or [] if d not in known]
    if unknown:
        raise ConfigError(f"--only-datasets: unknown dataset(s) {unknown}; the config has {known}")
    rows = [v.name for v in config.models]
    unknown = [m for m in only_models or [] if m not in rows]
    if unknown:
        raise ConfigError(f"--only-models: unknown model row(s) {unknown}; the config has {rows}")
    if seeds is not None and (not seeds or min(seeds) < 0):
        raise ConfigError(f"--seeds: give seeds >= 0, got {list(seeds)}")
    planned = plan_cells(config, sorted({*config.seeds, *(seeds or [])}))
    to_run = [
        c
        for c in planned
        if (only_datasets is None or c.dataset in only_datasets)
        and (only_models is None or c.variant in only_models)
        and (seeds is None or c.seed in seeds)
    ]
    if jobs < 1:
        raise ConfigError(f"--jobs: give at least 1 process, got {jobs}")
    runner = GridRunner(config, layout, progress=progress)
    runner.check_inputs(list(dict.fromkeys(c.dataset for c in to_run)))
    workers: list[multiprocessing.process.BaseProcess] = []
    if jobs > 1:
        threads = max(1, (os.cpu_count() or jobs) // jobs)
        torch.set_num_threads(threads)
        spawn = multiprocessing.get_context("spawn")
        workers = [
            spawn.Process(target=_cell_worker, args=(config, layout.root, to_run, threads))
            for _ in range(jobs - 1)
        ]
        for worker in workers:
            worker.start()
    runner.run(to_run)
    for worker in workers:
        worker.join()
    recall = runner.run_retrieval(run=retrieval)
    context = ReportContext(config, layout, planned, runner.finished(planned), recall)
    results = write_report(context, sections)
    failed = sum(worker.exitcode != 0 for worker in workers)
    if failed:
        raise WorkerFailed(f"{failed} of {jobs - 1} worker processes failed (see their errors above)")
    return results
