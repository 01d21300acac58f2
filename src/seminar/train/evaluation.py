"""Ranking metrics of a model on a dataset's held-out candidates: what training validates with and
what `seminar evaluate` reports, without a trainer (no training samples, no optimizer).

Under ``torchrun`` each rank scores a disjoint shard of the users and the metric sums are
all-reduced, so every rank returns the same numbers; the caller owns the process group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from seminar.data.loader import EvalSamples, make_loader
from seminar.data.schema import SeminarDataset
from seminar.train import distributed as ddp
from seminar.train.metrics import DEFAULT_KS, RankingAccumulator

__all__ = ["EvalSettings", "rank_held_out"]


@dataclass(frozen=True)
class EvalSettings:
    """How held-out candidates are scored: the history window, batching and where."""

    max_length: int
    batch_size: int = 256
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    workers: int = 0
    distributed: bool = False
    progress: bool = False


def rank_held_out(
    model: nn.Module, dataset: SeminarDataset, stage: str, mode: str, settings: EvalSettings
) -> dict[str, float]:
    """Metrics of ``model.score_candidates`` on the ``stage`` candidates in test ``mode``; ``users``
    is the number of ranking tasks. Scores in full precision (bf16 would tie far more often)."""
    if not callable(getattr(model, "score_candidates", None)):
        raise TypeError(f"{type(model).__name__} has no score_candidates; it cannot be evaluated")
    samples = EvalSamples(dataset, stage, mode, settings.max_length)  # type: ignore[arg-type]
    if len(samples) == 0:  # e.g. search mode on a dataset without queries: nothing to rank
        return {"users": 0}
    loader = make_loader(  # under DDP: disjoint shards, no padding duplicates, so sums stay exact
        samples, settings.batch_size, num_workers=settings.workers, distributed=settings.distributed
    )
    accumulator = RankingAccumulator(DEFAULT_KS, device=settings.device)
    non_blocking = settings.device.type == "cuda"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            bar = tqdm(loader, desc=f"{stage} ({mode})", leave=False, disable=not settings.progress)
            for batch in bar:
                on_device = {k: v.to(settings.device, non_blocking=non_blocking) for k, v in batch.items()}
                accumulator.update(model.score_candidates(on_device).float())
    finally:
        model.train(was_training)
    ddp.all_reduce_sum_(accumulator.totals)
    metrics = accumulator.compute()
    metrics["users"] = accumulator.count
    return metrics
