"""One training loop for pretraining and fine-tuning: the model owns its loss, the trainer the rest.

The trainer runs epochs of Adam steps through ``model.forward`` (so DDP hooks fire), validates
with ``model.score_candidates`` on the validation candidates, keeps ``last/`` and ``best/``
checkpoints, stops early, logs one JSON record per epoch to ``metrics.jsonl`` and finally reloads
the best weights and evaluates the test candidates.

Reproducibility: on a fresh start ``fit`` seeds Python, NumPy and torch with ``seed`` (+ rank);
shuffling uses ``seed + epoch`` and the training samples are redrawn with ``set_epoch(epoch)``.
Resuming restores weights, optimizer, counters and RNG states saved at the end of the last
finished epoch, so a run stopped after epoch k and resumed ends bitwise equal to an uninterrupted
one on CPU. An epoch interrupted midway is restarted from its beginning (there is no mid-epoch
resume). Models without ``score_candidates`` (e.g. pretraining) are monitored by their mean
training loss, lower being better.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from seminar import __version__
from seminar.data.loader import (
    MODES,
    NEGATIVE_SAMPLING,
    EvalSamples,
    Mode,
    TrainSamples,
    WindowConfig,
    WindowSamples,
    make_loader,
)
from seminar.data.schema import SeminarDataset, manifest_digest
from seminar.data.tables import DataError
from seminar.errors import StaleRun
from seminar.io import write_bytes_atomic
from seminar.train import distributed as ddp
from seminar.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_weights,
    read_checkpoint_config,
    restore_rng_state,
    save_checkpoint,
)
from seminar.train.evaluation import EvalSettings, rank_held_out
from seminar.train.metrics import DEFAULT_KS, ranking_metric_names

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LAST = "last"
BEST = "best"
LOSS_MONITOR = "loss"
# Fields that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "progress",
        "log_every",
        "num_workers",
        "eval_batch_size",
        "out_dir",
        "device",
        "early_stopping_patience",
    }
)


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256  # training targets per step (a many-target sample holds targets_per_window)
    eval_batch_size: int = 1024
    max_length: int = 200
    train_negatives: int = 1
    positions_per_user: int | None = None
    targets_per_window: int = 32  # models that score many targets per window (rankers)
    negative_sampling: str = "uniform"  # uniform | popularity (log-Q corrected) | category | mixed
    early_stopping_patience: int | None = 3  # epochs without improvement; None never stops early
    monitor: str = "ndcg@10"  # a ranking metric on validation, or "loss" (mean training loss)
    eval_mode: Mode = "recommendation"
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # bfloat16 autocast, on CUDA only
    grad_clip: float | None = None
    num_workers: int = 0
    log_every: int = 50
    out_dir: str = "runs/seminar"
    progress: bool = True
    deterministic: bool = True
    find_unused_parameters: bool = False  # DDP only: for models whose loss skips some parameters

    def __post_init__(self) -> None:
        self.out_dir = str(self.out_dir)
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        names = ("lr", "batch_size", "eval_batch_size", "max_length", "train_negatives", "log_every")
        for name in (*names, "targets_per_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or None")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("grad_clip must be positive or None")
        if self.positions_per_user is not None and self.positions_per_user < 1:
            raise ValueError("positions_per_user must be >= 1 or None")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(
                f"unknown negative_sampling {self.negative_sampling!r}; choose one of {NEGATIVE_SAMPLING}"
            )
        if self.eval_mode not in MODES:
            raise ValueError(f"unknown eval_mode {self.eval_mode!r}; choose one of {MODES}")
        allowed = (*ranking_metric_names(DEFAULT_KS), LOSS_MONITOR)
        if self.monitor not in allowed:
            raise ValueError(f"unknown monitor {self.monitor!r}; choose one of {allowed}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """Counters that make early stopping and resumption exact; saved in every checkpoint."""

    epoch: int = 0  # finished epochs
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_record: dict[str, Any] = field(default_factory=dict)


def _as_current_fields(config: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved model config read as the config class reads it (``from_dict``): a field added since
    the run was saved takes the value the run was trained with, so it is not a change."""
    read = getattr(type(config), "from_dict", None)
    if not saved or read is None:
        return saved
    try:
        return _json_safe(asdict(read(saved)))
    except (TypeError, ValueError):  # not readable as the current class: compare as saved
        return saved


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it, so a crash never loses an acknowledged epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Prefer deterministic kernels (warning where none exists) and restore the previous setting after."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)
        torch.backends.cudnn.benchmark = previous_benchmark


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stops_early(bad_epochs: int, patience: int | None) -> bool:
    """The early-stopping rule: ``patience`` epochs in a row without improvement (None: never).
    Training, resumption and a reproduce grid's continued runs all decide by it."""
    return patience is not None and bad_epochs >= patience


def started_without_checkpoint(out_dir: Path | str) -> bool:
    """Whether ``out_dir`` holds a run stopped before its first complete checkpoint (its first
    epoch's metrics line or ``best/``, no ``last/``): resuming it starts it again."""
    out_dir = Path(out_dir)
    partial = (out_dir / METRICS_FILE).exists() or (out_dir / BEST).exists()
    return partial and not (out_dir / LAST).exists()


class Trainer:
    """Trains ``model`` on ``dataset``; see the module docstring for the contract and guarantees.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the trainer starts the process group if none exists
    (call :meth:`close`, or use the trainer as a context manager, to end it), wraps the model in
    DDP, shards training with a ``DistributedSampler`` and evaluation by user, all-reduces the
    metric sums so every rank returns the same numbers, and writes files from rank 0 only.
    """

    def __init__(self, model: nn.Module, dataset: SeminarDataset, config: TrainConfig) -> None:
        self.config = config
        self.dataset = dataset
        self.dist = ddp.env_dist_info()
        self.device = ddp.resolve_device(config.device, self.dist)
        self._owns_group = ddp.init_process_group(self.dist, self.device)
        self.model = model.to(self.device)
        self.out_dir = Path(config.out_dir)
        window = WindowConfig(
            max_length=config.max_length,
            train_negatives=config.train_negatives,
            positions_per_user=config.positions_per_user,
            seed=config.seed,
            targets_per_window=config.targets_per_window,
            negative_sampling=config.negative_sampling,  # type: ignore[arg-type]
        )
        samples = WindowSamples if getattr(model, "many_targets", False) else TrainSamples
        self.train_samples: TrainSamples | WindowSamples = samples(dataset, window)
        if len(self.train_samples) == 0:
            raise ValueError(f"{dataset.root}: no training positions (every sequence is too short)")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer | None = None
        if getattr(self.model, "trainable", True):
            if not params:
                raise ValueError("the model has no trainable parameters")
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.can_score = callable(getattr(self.model, "score_candidates", None))
        self.monitor = config.monitor if self.can_score else LOSS_MONITOR
        if self.monitor != config.monitor:
            logger.info("model has no score_candidates: monitoring the training loss, not %s", config.monitor)
        self.higher_is_better = self.monitor != LOSS_MONITOR
        self.progress = Progress()
        self._train_module: nn.Module = self.model
        if self.dist.enabled:
            self._train_module = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """End the process group if this trainer started it."""
        if self._owns_group:
            ddp.shutdown()
            self._owns_group = False

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS_FILE

    def _autocast(self) -> contextlib.AbstractContextManager:
        enabled = self.config.bf16 and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}

    def _bar(self, iterable: Any, **kwargs: Any) -> Any:
        show = self.config.progress and self.dist.is_main
        return tqdm(iterable, disable=not show, dynamic_ncols=True, **kwargs)

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.epochs`` (or an early stop), reload the best weights, evaluate on test.

        ``resume=True`` continues from ``out_dir/last`` (which must exist and verify); without it
        ``out_dir`` must not already hold a run. Returns a summary with the best validation record
        and the test metrics (empty for models without ``score_candidates``).
        """
        self._check_validation_users()
        with deterministic_algorithms(self.config.deterministic):
            if resume:
                self._resume()
            else:
                self._start_fresh()
            if self.optimizer is None:
                self._keep_fitted()
            while (
                self.optimizer is not None
                and self.progress.epoch < self.config.epochs
                and not self.progress.stopped_early
            ):
                self._run_epoch(self.progress.epoch)
            ddp.barrier()
            if (self.out_dir / BEST).exists():
                load_weights(self.out_dir / BEST, self.model)
            test: dict[str, float] = {}
            if self.can_score:
                test = self.evaluate("test")
                if self.dist.is_main:
                    record = {"stage": "test", "mode": self.config.eval_mode, "metrics": test}
                    append_jsonl(self.metrics_path, {**record, "best_epoch": self.progress.best_epoch})
        return {
            "epochs_run": self.progress.epoch,
            "global_step": self.progress.global_step,
            "stopped_early": self.progress.stopped_early,
            "monitor": self.monitor,
            "best_epoch": self.progress.best_epoch,
            "best_value": self.progress.best_value,
            "best": self.progress.best_record,
            "test": test,
        }

    def _check_validation_users(self) -> None:
        """Refuse, before any work, to early-stop on a validation mode that has no user."""
        if not self.can_score or self.monitor == LOSS_MONITOR:
            return
        mode = self.config.eval_mode
        if len(EvalSamples(self.dataset, "valid", mode, self.config.max_length)) == 0:
            raise DataError(
                f"no validation user in {mode} mode (no user's validation behaviour is a search); "
                "train with --eval-mode recommendation"
            )

    def _keep_fitted(self) -> None:
        """A model fitted without gradient steps (popularity, item-kNN): validate it once and keep it."""
        if (self.out_dir / BEST).exists():
            return
        valid = self.evaluate("valid") if self.can_score else {}
        record = {"stage": "epoch", "epoch": 0, "global_step": 0, "train": {}, "valid": valid}
        self.progress.best_epoch = 0
        self.progress.best_value = valid.get(self.monitor)
        self.progress.best_record = record
        if self.dist.is_main:
            append_jsonl(self.metrics_path, record)
        self._save(BEST)
        self._save(LAST)

    def _start_fresh(self) -> None:
        if (self.out_dir / LAST).exists() or (self.out_dir / BEST).exists() or self.metrics_path.exists():
            raise FileExistsError(
                f"{self.out_dir} already holds a run; resume it (fit(resume=True)) or choose another out_dir"
            )
        ddp.barrier()  # every rank checks before rank 0 writes anything
        seed_everything(self.config.seed + self.dist.rank)
        self.progress = Progress()

    def _resume(self) -> None:
        if started_without_checkpoint(self.out_dir):
            # stopped before its first checkpoint was complete: there is nothing to resume, and the
            # first epoch's partial files (its metrics line, a best/ checkpoint) are not trusted
            logger.warning("%s has no complete checkpoint yet: starting it again", self.out_dir)
            ddp.barrier()
            if self.dist.is_main:
                self.metrics_path.unlink(missing_ok=True)
                shutil.rmtree(self.out_dir / BEST, ignore_errors=True)
            self._start_fresh()
            return
        self._check_resumable(read_checkpoint_config(self.out_dir / LAST))
        state, _ = load_checkpoint(self.out_dir / LAST, self.model)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        # the patience may differ from the run's (a resumable change): a run that stopped early under a
        # smaller one goes on, as an uninterrupted run with this patience would have (the decision to
        # stop changes no state), and one that a smaller patience would have stopped stops here
        patience = self.config.early_stopping_patience
        self.progress.stopped_early = stops_early(self.progress.bad_epochs, patience)
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            logger.warning(
                "resuming a %d-process run with %d processes: not bitwise reproducible",
                len(rng),
                self.dist.world_size,
            )
        restore_rng_state(rng[min(self.dist.rank, len(rng) - 1)])
        self.train_samples.set_epoch(int(state["sampler_epoch"]))
        ddp.barrier()
        if self.dist.is_main:
            kept = [
                r
                for r in read_jsonl(self.metrics_path)
                if r.get("stage") == "epoch" and r.get("epoch", 0) <= self.progress.epoch
            ]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            write_bytes_atomic(self.metrics_path, text.encode())
        ddp.barrier()
        logger.info("resumed from %s after epoch %d", self.out_dir / LAST, self.progress.epoch)

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        """Refuse (StaleRun) to continue a run whose training or model configuration, or dataset, changed."""
        current = self._checkpoint_config()
        saved_train, train = saved.get("train", {}), current["train"]
        changed = [
            f"{n}: {saved_train.get(n)!r} -> {train[n]!r}"
            for n in sorted(train)
            if n not in RESUMABLE_CHANGES and saved_train.get(n) != train[n]
        ]
        saved_model, model = saved.get("model_config") or {}, current["model_config"] or {}
        saved_model = _as_current_fields(getattr(self.model, "config", None), saved_model)
        changed += [
            f"model {n}: {saved_model.get(n)!r} -> {model[n]!r}"
            for n in sorted(model)
            if saved_model.get(n) != model[n]
        ]
        if "dataset" in saved and saved["dataset"] != current["dataset"]:  # older runs did not record it
            changed.append(f"dataset: {self.dataset.root} is not the dataset the run was trained on")
        if changed:
            raise StaleRun(f"cannot resume {self.out_dir}: the configuration changed ({', '.join(changed)})")

    def _train_loader(self, epoch: int) -> Any:
        self.train_samples.set_epoch(epoch)
        cfg = self.config
        if self.dist.enabled:
            loader = make_loader(
                self.train_samples,
                self.samples_per_step,
                shuffle=True,
                seed=cfg.seed,
                num_workers=cfg.num_workers,
                distributed=True,
            )
            loader.sampler.set_epoch(epoch)
            return loader
        return make_loader(
            self.train_samples,
            self.samples_per_step,
            shuffle=True,
            seed=cfg.seed + epoch,
            num_workers=cfg.num_workers,
        )

    @property
    def samples_per_step(self) -> int:
        """``batch_size`` counts training targets; a many-target sample holds ``targets_per_window``."""
        if isinstance(self.train_samples, WindowSamples):
            return max(1, self.config.batch_size // self.config.targets_per_window)
        return self.config.batch_size

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training samples; returns mean loss and mean loss parts over batches."""
        cfg = self.config
        loader = self._train_loader(epoch)
        module = self._train_module
        module.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        part_sums: dict[str, torch.Tensor] = {}
        window = torch.zeros((), dtype=torch.float64, device=self.device)
        window_steps = 0
        batches = 0
        bar = self._bar(loader, total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for batch in bar:
            batch = self._to_device(batch)
            assert self.optimizer is not None
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, parts = module(batch)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.progress.global_step += 1
            batches += 1
            detached = loss.detach().to(torch.float64)
            loss_sum += detached
            window += detached
            window_steps += 1
            for name, value in parts.items():
                part = torch.as_tensor(value).detach().to(device=self.device, dtype=torch.float64)
                part_sums[name] = part_sums.get(name, torch.zeros_like(part)) + part
            if self.progress.global_step % cfg.log_every == 0:
                mean = self._finite(window.item() / window_steps, epoch)
                bar.set_postfix(loss=f"{mean:.4f}")
                logger.info("epoch %d step %d loss %.6f", epoch + 1, self.progress.global_step, mean)
                window.zero_()
                window_steps = 0
        names = sorted(part_sums)
        totals = torch.stack(
            [
                loss_sum,
                *(part_sums[n] for n in names),
                torch.tensor(float(batches), dtype=torch.float64, device=self.device),
            ]
        )
        ddp.all_reduce_sum_(totals)
        count = float(totals[-1])
        means = (totals[:-1] / max(count, 1.0)).tolist()
        stats = {"loss": self._finite(means[0], epoch)}
        stats.update({name: float(v) for name, v in zip(names, means[1:], strict=True)})
        return stats

    def _finite(self, value: float, epoch: int) -> float:
        if not np.isfinite(value):
            raise FloatingPointError(
                f"non-finite training loss ({value}) in epoch {epoch + 1} by step {self.progress.global_step}"
            )
        return value

    def _run_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        train = self._train_epoch(epoch)
        valid = self.evaluate("valid") if self.can_score else {}
        value = train["loss"] if self.monitor == LOSS_MONITOR else valid[self.monitor]
        prog = self.progress
        improved = prog.best_value is None or (
            value > prog.best_value if self.higher_is_better else value < prog.best_value
        )
        prog.epoch = epoch + 1
        record = {
            "stage": "epoch",
            "epoch": prog.epoch,
            "global_step": prog.global_step,
            "train": train,
            "valid": valid,
            "monitor": self.monitor,
            "value": value,
            "improved": improved,
        }
        if improved:
            prog.best_value, prog.best_epoch, prog.bad_epochs = value, prog.epoch, 0
            prog.best_record = {k: v for k, v in record.items() if k != "improved"}
        else:
            prog.bad_epochs += 1
        if stops_early(prog.bad_epochs, self.config.early_stopping_patience):
            prog.stopped_early = True
            logger.info(
                "early stop after epoch %d: no improvement of %s for %d epochs",
                prog.epoch,
                self.monitor,
                prog.bad_epochs,
            )
        record["best_epoch"] = prog.best_epoch
        record["seconds"] = round(time.perf_counter() - start, 3)
        if self.dist.is_main:
            append_jsonl(self.metrics_path, record)
        # Best before last: a crash in between leaves a last/ that redoes this epoch and rewrites best/.
        if improved:
            self._save(BEST)
        self._save(LAST)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_config(self) -> dict[str, Any]:
        model_config = getattr(self.model, "config", None)
        return _json_safe(
            {
                "train": self.config.to_dict(),
                "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
                "model_config": asdict(model_config) if is_dataclass(model_config) else None,
                "world_size": self.dist.world_size,
                "dataset": manifest_digest(self.dataset.manifest),
                "seminar_version": __version__,
            }
        )

    def _save(self, name: str) -> None:
        rng = ddp.gather_objects(capture_rng_state())
        if self.dist.is_main:
            state = {
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {},
                "progress": asdict(self.progress),
                "rng": rng,
                "sampler_epoch": self.progress.epoch,
            }
            save_checkpoint(self.out_dir / name, self.model, state, self._checkpoint_config())
        ddp.barrier()

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, stage: str = "test", mode: Mode | None = None, *, record: bool = False
    ) -> dict[str, float]:
        """Ranking metrics of the held-out candidates (identities checked), equal on every rank.

        Scoring runs without bf16 autocast so that rounding does not create ties between
        candidates. ``record=True`` also appends the metrics to ``metrics.jsonl``. ``users`` in
        the result is the number of ranking tasks evaluated.
        """
        mode = mode or self.config.eval_mode
        settings = EvalSettings(
            max_length=self.config.max_length,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            workers=self.config.num_workers,
            distributed=self.dist.enabled,
            progress=self.config.progress and self.dist.is_main,
        )
        metrics = rank_held_out(self.model, self.dataset, stage, mode, settings)
        if record and self.dist.is_main:
            append_jsonl(self.metrics_path, {"stage": stage, "mode": mode, "metrics": metrics})
        return metrics
