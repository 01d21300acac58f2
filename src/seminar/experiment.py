"""Library calls behind `seminar pretrain`, `train`, `evaluate` and the demo pipeline.

A run directory holds what the trainer writes (``best/``, ``last/``, ``metrics.jsonl``); the
checkpoint's config names the model class and its config, so a run can be rebuilt for
evaluation by :func:`load_run_model`, which lives in :mod:`seminar.train.runs` (so retrieval and
serving can load a run without this module) and is re-exported here with its registry.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.psu import TASKS as PSU_TASKS
from seminar.models.psu import PretrainConfig, PretrainingSearchUnit, feasible_tasks
from seminar.models.ranker import Ranker, RankerConfig
from seminar.models.registry import build_ranker
from seminar.retrieval.gsu import PQGsuConfig, attach_pq_gsu, save_gsu_pq
from seminar.settings import DemoConfig as DemoConfig
from seminar.settings import ExperimentSettings
from seminar.settings import demo_settings as demo_settings
from seminar.train import distributed as ddp
from seminar.train.evaluation import EvalSettings, rank_held_out
from seminar.train.runs import MODEL_REGISTRY as MODEL_REGISTRY
from seminar.train.runs import _config_from_dict as _config_from_dict
from seminar.train.runs import load_run_model as load_run_model
from seminar.train.runs import run_max_length as run_max_length
from seminar.train.trainer import LAST, StaleRun, TrainConfig, Trainer, started_without_checkpoint

logger = logging.getLogger(__name__)


def pretrain(
    ds: SeminarDataset,
    out_dir: Path | str,
    model_config: PretrainConfig,
    train: TrainConfig,
    *,
    resume: bool = False,
    tables: FeatureTables | None = None,
    settings: ExperimentSettings | None = None,
) -> dict[str, Any]:
    """Pretrain the PSU (monitors its loss: it has no ranking head); ``settings``, when given, are
    recorded beside the checkpoints once training ends.

    Tasks the dataset cannot support are switched off with a logged note (:func:`feasible_tasks`);
    the summary's ``dropped_tasks`` says which and why.
    """
    tables = tables or FeatureTables.from_dataset(ds)
    model_config, dropped = feasible_tasks(model_config, tables)
    for task, why in dropped.items():
        logger.warning("PSU task %s switched off: %s", task, why)
    train.out_dir = str(out_dir)
    with Trainer(PretrainingSearchUnit(tables, model_config), ds, train) as trainer:
        summary = trainer.fit(resume=resume)
    _record(settings, out_dir)
    return {**summary, "tasks": model_config.tasks(), "dropped_tasks": dropped}


def _record(settings: ExperimentSettings | None, run_dir: Path | str) -> None:
    """Write a run's settings after training (so a refused resume never overwrites the old ones)."""
    if settings is not None and ddp.env_dist_info().is_main:
        settings.save(run_dir)


def restore_pretrained(ranker: Ranker, psu_run: Path | str, tables: FeatureTables) -> None:
    """Initialise the ranker's embeddings and content projections from a PSU run's best weights."""
    psu = load_run_model(psu_run, tables)
    if not isinstance(psu, PretrainingSearchUnit):
        raise ValueError(f"{psu_run} is not a PSU pretraining run")
    for name in ("dim", "gate", "fusion_lambda"):
        mine, theirs = getattr(ranker.config, name), getattr(psu.config, name)
        if mine != theirs:
            raise ValueError(f"{psu_run}: pretrained with {name}={theirs}, the ranker uses {name}={mine}")
    ranker.load_pretrained(psu.embedding.state_dict())


def finetune(
    ds: SeminarDataset,
    out_dir: Path | str,
    model_config: RankerConfig,
    train: TrainConfig,
    *,
    pretrained: Path | str | None = None,
    resume: bool = False,
    tables: FeatureTables | None = None,
    settings: ExperimentSettings | None = None,
) -> dict[str, Any]:
    """Train a ranker (SEMINAR, a baseline or a reference ranker), optionally initialised from a PSU run;
    ``settings``, when given, are recorded beside the checkpoints once training ends.

    Popularity and item-kNN are fitted by counting; their run holds the fitted tables as its checkpoint.
    """
    tables = tables or FeatureTables.from_dataset(ds)
    ranker = build_ranker(tables, model_config, ds)
    # a resumed run restores its own weights; one with nothing to resume starts from the PSU's
    if pretrained is not None and not (resume and (Path(out_dir) / LAST).exists()):
        if not isinstance(ranker, Ranker):
            raise ValueError(
                f"{model_config.model} has no PSU embeddings to initialise from a pretrained run"
            )
        restore_pretrained(ranker, pretrained, tables)
    train.out_dir = str(out_dir)
    with Trainer(ranker, ds, train) as trainer:
        summary = trainer.fit(resume=resume)
    _record(settings, out_dir)
    return summary


GSU_CHOICES = ("exact", "pq")


def evaluate_run(
    ds: SeminarDataset,
    run_dir: Path | str,
    train: TrainConfig,
    modes: Sequence[str],
    stage: str = "test",
    tables: FeatureTables | None = None,
    gsu: str = "exact",
    pq_config: PQGsuConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of a finished ranker run in each test mode.

    ``gsu="pq"`` swaps the trained GSU for its product-quantized version (codebooks fitted on the
    run's fused keys, or per channel on its key tables, as ``pq_config.layout`` says, and saved beside
    it as ``gsu_pq.safetensors``); the ESU and head are unchanged.
    """
    if gsu not in GSU_CHOICES:
        raise ValueError(f"unknown GSU {gsu!r}; choose one of {GSU_CHOICES}")
    tables = tables or FeatureTables.from_dataset(ds)
    model = load_run_model(run_dir, tables)
    if gsu == "pq":
        if not isinstance(model, Ranker):
            raise ValueError(f"{run_dir} is not a ranker run; the PQ GSU replaces a ranker's GSU")
        save_gsu_pq(attach_pq_gsu(model, pq_config), run_dir)
    dist = ddp.env_dist_info()
    device = ddp.resolve_device(train.device, dist)
    owns_group = ddp.init_process_group(dist, device)
    try:
        settings = EvalSettings(
            max_length=train.max_length,
            batch_size=train.eval_batch_size,
            device=device,
            workers=train.num_workers,
            distributed=dist.enabled,
            progress=train.progress and dist.is_main,
        )
        model = model.to(device)
        return {mode: rank_held_out(model, ds, stage, mode, settings) for mode in modes}
    finally:
        if owns_group:
            ddp.shutdown()


def resume_or_restart(run_dir: Path, fit: Callable[[bool], Any]) -> Any:
    """``fit(resume)``: resume a run that has a checkpoint; a stale one (made for another dataset or
    configuration, e.g. by an older version) is moved to ``RUN.stale`` and started again."""
    if not (run_dir / LAST).exists():  # a run killed before its first checkpoint is started again
        return fit(started_without_checkpoint(run_dir))
    try:
        return fit(True)
    except StaleRun as exc:
        stale = run_dir.with_name(run_dir.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(run_dir, stale)
        logger.warning("%s; it was moved to %s and starts again", exc, stale)
        return fit(False)


def run_demo(
    ds: SeminarDataset, out_dir: Path | str, config: DemoConfig | None = None
) -> list[dict[str, Any]]:
    """Pretrain the PSU, fine-tune SEMINAR from it and the baselines, and evaluate each in every mode.

    A run with a ``last`` checkpoint is resumed (a finished one returns at once), so an interrupted
    demo picks up where it stopped.
    """
    config = config or DemoConfig()
    out_dir = Path(out_dir)
    tables = FeatureTables.from_dataset(ds)
    torch.manual_seed(config.seed)
    psu_dir = out_dir / "psu"
    settings = config.settings
    train = settings.pretrain_train_config(seed=config.seed, progress=config.progress)
    psu_config = settings.pretrain_config(PSU_TASKS, seed=config.seed)
    resume_or_restart(
        psu_dir,
        lambda resume: pretrain(
            ds, psu_dir, psu_config, train, resume=resume, tables=tables, settings=settings
        ),
    )
    ranker_train = settings.train_config(seed=config.seed, progress=config.progress)
    rows = []
    for model in ["seminar", *config.baselines]:
        run = out_dir / model
        recent = config.seminar_recent if model == "seminar" else 0
        ranker_config = settings.ranker_config(model, seed=config.seed, recent=recent)
        resume_or_restart(
            run,
            lambda resume, run=run, ranker_config=ranker_config: finetune(
                ds,
                run,
                ranker_config,
                ranker_train,
                pretrained=psu_dir if ranker_config.model == "seminar" else None,
                resume=resume,
                tables=tables,
                settings=settings,
            ),
        )
        metrics = evaluate_run(ds, run, ranker_train, config.modes, tables=tables)
        rows += [{"model": model, "mode": mode, **values} for mode, values in metrics.items()]
    return rows
