"""The grid as a list of cells, and where each cell's files live in the output folder.

A *cell* is one entry of the report: (dataset, variant, seed) for Tables 2 and 3, plus the sweep
name and value for Figures 3 and 4. What a cell trains is its :class:`RunSpec`; cells with equal
specs (a sweep value equal to the grid's own setting, 0 pretraining epochs and the variant without
pretraining) share one run, so nothing is trained twice. Directory names come from the spec, not
from variant labels, so renaming a variant never orphans a finished run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seminar.reproduce.config import PSU_TASKS, ReproduceConfig, VariantConfig
from seminar.settings import ExperimentSettings, field_defaults

SWEEPS = ("pretrain_epochs", "fusion_lambda")
_TASK_SHORT = {"next_pair": "next", "align": "align", "relevance": "rel"}
# Training settings that do not change what a run computes, so finished cells survive their change;
# pretrain_epochs and fusion_lambda are part of each run's spec instead.
# not compared as training settings: run-time only, or a field of the run's spec instead
UNCOMPARED_TRAINING = frozenset(
    {"device", "workers", "eval_batch_size", "pretrain_epochs", "fusion_lambda", "user_features"}
)
PSU_ONLY_TRAINING = frozenset({"align_chunks", "align_window", "temperature", "pretrain_lr"})
# Settings added after cells were first written: left out at their default, so those cells still match.
LATER_TRAINING = frozenset(
    {
        "knn_history",
        "knn_neighbours",
        "layers",
        "pretrain_lr",
        "gsu_recency",
        "align_window",
        "item_popularity",
    }
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that distinguishes one trained ranker from another within a grid."""

    dataset: str
    model: str
    pretrain: tuple[str, ...] | None
    pretrain_epochs: int | None  # None exactly when there is no pretraining
    fusion_lambda: float
    seed: int
    user_features: bool = True
    recent: int = 0
    gsu_recency: bool = False
    max_length: int | None = None  # the variant's own window; None: the grid's
    item_popularity: bool = False
    user_id: bool = True

    @property
    def key(self) -> str:
        """A readable folder name, unique per (model, pretraining, λ, user features, user id, recent,
        GSU recency, item popularity, own window)."""
        profile = "" if self.user_features else "-no-user-features"
        ids = "" if self.user_id else "-no-user-id"
        recent = f"-recent{self.recent}" if self.recent else ""
        timed = ("-gsu-recency" if self.gsu_recency else "") + ("-pop" if self.item_popularity else "")
        lam = f"lambda{self.fusion_lambda:g}"
        return f"{self.model}-{self.psu_key or 'scratch'}-{lam}{profile}{ids}{recent}{timed}{self.window_key}"

    @property
    def window_key(self) -> str:
        return f"-L{self.max_length}" if self.max_length is not None else ""

    @property
    def psu_key(self) -> str | None:
        if self.pretrain is None:
            return None
        tasks = "all" if self.pretrain == PSU_TASKS else "+".join(_TASK_SHORT[t] for t in self.pretrain)
        return f"psu-{tasks}-e{self.pretrain_epochs}"


@dataclass(frozen=True)
class Cell:
    """One entry of the report; ``sweep`` is None for the main grid (Tables 2 and 3)."""

    dataset: str
    variant: str
    seed: int
    spec: RunSpec
    sweep: str | None = None
    value: float | None = None

    @property
    def label(self) -> str:
        extra = f" [{self.sweep}={self.value:g}]" if self.sweep is not None and self.value is not None else ""
        return f"{self.dataset} | {self.variant}{extra} | seed {self.seed}"


def make_spec(
    dataset: str,
    model: str,
    pretrain: tuple[str, ...] | None,
    pretrain_epochs: int,
    fusion_lambda: float,
    seed: int,
    user_features: bool = True,
    recent: int = 0,
    gsu_recency: bool = False,
    max_length: int | None = None,
    item_popularity: bool = False,
    user_id: bool = True,
) -> RunSpec:
    """A normalised spec: zero pretraining epochs is the same run as no pretraining."""
    tasks = None if pretrain is None or pretrain_epochs == 0 else tuple(pretrain)
    epochs = None if tasks is None else int(pretrain_epochs)
    return RunSpec(
        dataset,
        model,
        tasks,
        epochs,
        float(fusion_lambda),
        seed,
        user_features,
        recent,
        gsu_recency,
        max_length,
        item_popularity,
        user_id,
    )


def variant_spec(
    config: ReproduceConfig,
    dataset: str,
    variant: VariantConfig,
    seed: int,
    pretrain_epochs: int | None = None,
    fusion_lambda: float | None = None,
) -> RunSpec:
    """The run of one row on one dataset and seed: the row's own settings, else the grid's (a sweep
    passes the PSU epochs or λ it varies)."""
    train = config.training
    return make_spec(
        dataset,
        variant.model,
        variant.psu_tasks,
        train.pretrain_epochs if pretrain_epochs is None else pretrain_epochs,
        train.fusion_lambda if fusion_lambda is None else fusion_lambda,
        seed,
        config.user_features(variant),
        variant.recent,
        config.gsu_recency(variant),
        config.max_length(variant),
        config.item_popularity(variant),
        config.user_id(variant),
    )


def plan_cells(config: ReproduceConfig, seeds: list[int] | None = None) -> list[Cell]:
    """Every cell of the config in run order: the main grid seed by seed, then the sweeps.

    ``seeds`` replaces the config's seeds (for the main grid and for sweeps without their own).
    """
    seeds = list(seeds) if seeds is not None else list(config.seeds)
    cells: list[Cell] = []
    for ds in config.datasets:
        for seed in seeds:
            for v in config.models:
                cells.append(Cell(ds.name, v.name, seed, variant_spec(config, ds.name, v, seed)))
    for sweep_name in SWEEPS:
        sweep = getattr(config.sweeps, sweep_name)
        if sweep is None:
            continue
        variant = config.variant(sweep.variant)
        assert variant is not None  # checked when the config was parsed
        for ds in config.datasets:
            if sweep.datasets is not None and ds.name not in sweep.datasets:
                continue
            for seed in sweep.seeds if sweep.seeds is not None else seeds:
                for value in sweep.values:
                    if sweep_name == "pretrain_epochs":
                        spec = variant_spec(config, ds.name, variant, seed, pretrain_epochs=int(value))
                    else:
                        spec = variant_spec(config, ds.name, variant, seed, fusion_lambda=float(value))
                    cells.append(Cell(ds.name, variant.name, seed, spec, sweep_name, value))
    return cells


def unique_specs(cells: list[Cell]) -> list[RunSpec]:
    """Specs in first-use order, each once; two specs mapping to one folder would be a bug."""
    seen: dict[tuple[str, str, int], RunSpec] = {}
    for cell in cells:
        where = (cell.spec.dataset, cell.spec.key, cell.spec.seed)
        if where in seen and seen[where] != cell.spec:
            raise ValueError(f"two different runs share the folder {where}: {seen[where]} and {cell.spec}")
        seen.setdefault(where, cell.spec)
    return list(seen.values())


@dataclass(frozen=True)
class Layout:
    """Paths inside the output folder."""

    root: Path

    def cell_file(self, spec: RunSpec) -> Path:
        return self.root / "cells" / spec.dataset / spec.key / f"seed{spec.seed}.json"

    def run_dir(self, spec: RunSpec) -> Path:
        return self.root / "runs" / spec.dataset / spec.key / f"seed{spec.seed}"

    def run_lock(self, spec: RunSpec) -> Path:
        """The lock file beside a run's folder: the process that holds it is the one training it."""
        run = self.run_dir(spec)
        return run.parent / f".{run.name}.lock"

    def psu_dir(self, spec: RunSpec) -> Path | None:
        if spec.psu_key is None:
            return None
        name = f"{spec.psu_key}-lambda{spec.fusion_lambda:g}{spec.window_key}"
        return self.root / "psu" / spec.dataset / name / f"seed{spec.seed}"

    def data_dir(self, config: ReproduceConfig, dataset: str) -> Path:
        ds = config.dataset(dataset)
        if ds is not None and ds.data_dir is not None:
            return ds.data_dir
        return self.root / "data" / dataset

    @property
    def retrieval_dir(self) -> Path:
        return self.root / "retrieval"

    @property
    def retrieval_cell(self) -> Path:
        return self.root / "cells" / "retrieval.json"


def compared_training(training: ExperimentSettings, pretrained: bool) -> dict[str, Any]:
    """The training settings a finished cell must agree with to be reused."""
    skip = UNCOMPARED_TRAINING if pretrained else UNCOMPARED_TRAINING | PSU_ONLY_TRAINING
    defaults = field_defaults()
    return {
        k: v
        for k, v in asdict(training).items()
        if k not in skip and not (k in LATER_TRAINING and v == defaults[k])
    }


def run_settings(config: ReproduceConfig, spec: RunSpec) -> dict[str, Any]:
    """What decides a run's result: its spec, the dataset's source and build options, the training."""
    plain = config.to_dict()
    dataset = next(d for d in plain["datasets"] if d["name"] == spec.dataset)
    dataset.pop("data_dir", None)
    dataset["build"].pop("cache_dir", None)
    if dataset["build"].get("eval_negatives") == "uniform":  # at its default: cells from before it match
        del dataset["build"]["eval_negatives"]
    settings: dict[str, Any] = {
        "dataset": dataset,
        "model": spec.model,
        "pretrain": list(spec.pretrain) if spec.pretrain else None,
        "pretrain_epochs": spec.pretrain_epochs,
        "fusion_lambda": spec.fusion_lambda,
        "user_features": spec.user_features,
        "seed": spec.seed,
        # the variant's own GSU recency and window are training settings of its run (as if the grid set them)
        "training": compared_training(
            config.training.replace(
                gsu_recency=spec.gsu_recency,
                max_length=spec.max_length or config.training.max_length,
                item_popularity=spec.item_popularity,
                user_id=spec.user_id,
            ),
            spec.pretrain is not None,
        ),
    }
    if spec.recent:  # absent at its default, so that cells from before it still match
        settings["recent"] = spec.recent
    return settings
