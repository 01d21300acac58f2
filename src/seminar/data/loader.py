"""PyTorch datasets over the canonical arrays: a sample is ``(user, position)``, never a copy.

A batch is gathered in one vectorised step: the last ``L`` behaviours before each target are
sliced from the flat CSR arrays and left-padded with 0 (``mask`` marks real behaviours). The
datasets implement ``__getitems__`` so a ``DataLoader`` (and ``DistributedSampler`` under DDP)
hands them a whole batch of indices at once; use :func:`make_loader`.

Training targets are positions 1..N-3 of each user (N-2 is validation, N-1 test). Training
negatives are drawn uniformly per sample and keep the target's query, so a search target is
ranked against other items for the same query and a recommendation target for the empty one.
Evaluation candidates are the positive (column 0) plus the stored negatives, in one of three
modes: ``recommendation`` (every candidate with the empty query), ``search`` (every candidate
with the positive's query; users whose positive is not a search are left out) and ``pair``
(each negative with an observed query of its own item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from seminar.data.schema import EMPTY_QUERY, SEARCH, SeminarDataset

Mode = Literal["recommendation", "search", "pair"]
Stage = Literal["valid", "test"]
MODES: tuple[str, ...] = ("recommendation", "search", "pair")
FIRST_TRAIN_POSITION = 1
HELD_OUT = 2  # validation and test positives at the end of each sequence


def gather_windows(
    ds: SeminarDataset, users: np.ndarray, ends: np.ndarray, length: int
) -> dict[str, np.ndarray]:
    """History windows ``[end - length, end)`` of each user's sequence, left-padded with 0.

    ``ends`` are positions within each user's sequence (exclusive). Returns items, queries,
    behaviour types, timestamps and the boolean mask, each [B, length].
    """
    start = ds.offsets[users]
    stop = start + ends
    idx = stop[:, None] - length + np.arange(length, dtype=np.int64)[None, :]
    mask = idx >= start[:, None]
    idx = np.where(mask, idx, 0)
    out = {"mask": mask}
    for name, arr in (
        ("hist_items", ds.items),
        ("hist_queries", ds.queries),
        ("hist_behaviour", ds.behaviour),
        ("hist_timestamps", ds.timestamps),
    ):
        values = arr[idx]
        values[~mask] = 0
        out[name] = values
    return out


def _to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in batch.items():
        if value.dtype in (np.int32, np.int8, np.int16):
            value = value.astype(np.int64)
        converted[key] = torch.from_numpy(np.ascontiguousarray(value))
    return converted


def training_positions(ds: SeminarDataset) -> tuple[np.ndarray, np.ndarray]:
    """All (user, target position) training pairs, as two flat arrays."""
    per_user = np.maximum(ds.lengths - HELD_OUT - FIRST_TRAIN_POSITION, 0)
    users = np.repeat(np.arange(ds.n_users, dtype=np.int64), per_user)
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    positions = np.arange(users.size, dtype=np.int64) - np.repeat(first, per_user) + FIRST_TRAIN_POSITION
    return users, positions


@dataclass
class WindowConfig:
    max_length: int = 200
    train_negatives: int = 1
    positions_per_user: int | None = None  # cap per user and epoch, for very long sequences
    seed: int = 0


class TrainSamples(Dataset):
    """Training samples; call :meth:`set_epoch` to redraw capped positions and negatives."""

    def __init__(self, ds: SeminarDataset, config: WindowConfig | None = None) -> None:
        self.ds = ds
        self.config = config or WindowConfig()
        self.epoch = 0
        self._all_users, self._all_positions = training_positions(ds)
        self.users, self.positions = self._all_users, self._all_positions
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        cap = self.config.positions_per_user
        if cap is None:
            return
        rng = np.random.default_rng((self.config.seed, epoch, 1))
        # Random priority per position; keep each user's `cap` smallest: a uniform subset.
        priority = rng.random(self._all_users.size)
        order = np.lexsort((priority, self._all_users))
        counts = np.bincount(self._all_users, minlength=self.ds.n_users)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(order.size) - np.repeat(first, counts)
        keep = np.sort(order[rank < cap])
        self.users, self.positions = self._all_users[keep], self._all_positions[keep]

    def __len__(self) -> int:
        return int(self.users.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        users, pos = self.users[index], self.positions[index]
        batch = gather_windows(self.ds, users, pos, self.config.max_length)
        flat = self.ds.offsets[users] + pos
        target_items = self.ds.items[flat]
        target_queries = self.ds.queries[flat]
        rng = np.random.default_rng((self.config.seed, self.epoch, int(index[0]) if index.size else 0, 2))
        neg = rng.integers(1, self.ds.n_items + 1, size=(index.size, self.config.train_negatives))
        clash = neg == target_items[:, None]
        neg[clash] = neg[clash] % self.ds.n_items + 1  # never the positive itself
        batch.update(
            user=users,
            target_items=target_items,
            target_queries=target_queries,
            target_behaviour=self.ds.behaviour[flat],
            target_timestamps=self.ds.timestamps[flat],
            neg_items=neg,
            neg_queries=np.repeat(target_queries[:, None], neg.shape[1], axis=1),
        )
        return _to_torch(batch)


class EvalSamples(Dataset):
    """One ranking task per user: the held-out positive against its stored negatives."""

    def __init__(
        self, ds: SeminarDataset, stage: Stage = "test", mode: Mode = "recommendation", max_length: int = 200
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown test mode {mode!r}; choose one of {MODES}")
        if stage not in ("valid", "test"):
            raise ValueError(f"unknown stage {stage!r}; choose 'valid' or 'test'")
        self.ds, self.stage, self.mode, self.max_length = ds, stage, mode, max_length
        back = 1 if stage == "test" else HELD_OUT
        self.ends_all = ds.lengths - back
        users = np.arange(ds.n_users, dtype=np.int64)
        if mode == "search":
            users = users[ds.behaviour[ds.offsets[:-1] + self.ends_all] == SEARCH]
        self.users = users
        self.negatives = ds.test_negatives if stage == "test" else ds.valid_negatives

    def __len__(self) -> int:
        return int(self.users.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        users = self.users[np.asarray(indices, dtype=np.int64)]
        ends = self.ends_all[users]
        batch = gather_windows(self.ds, users, ends, self.max_length)
        flat = self.ds.offsets[users] + ends
        positive, pos_query = self.ds.items[flat], self.ds.queries[flat]
        negatives = np.asarray(self.negatives[users])
        items = np.concatenate([positive[:, None], negatives], axis=1)
        if self.mode == "recommendation":
            queries = np.full(items.shape, EMPTY_QUERY, dtype=np.int32)
        elif self.mode == "search":
            queries = np.repeat(pos_query[:, None], items.shape[1], axis=1)
        else:
            queries = np.concatenate([pos_query[:, None], self.ds.representative_query[negatives]], axis=1)
        batch.update(
            user=users, cand_items=items, cand_queries=queries, target_timestamps=self.ds.timestamps[flat]
        )
        return _to_torch(batch)


def _identity(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: disjoint shards without padding.

    DistributedSampler pads the last shard with repeated samples, which is harmless for training
    but would count some users twice in evaluation; with these shards per-rank sums add up exactly.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    samples: TrainSamples | EvalSamples,
    batch_size: int = 256,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader that hands whole index batches to the dataset (one vectorised gather each).

    ``distributed`` shards by the initialised process group: training samples through a
    DistributedSampler, evaluation samples through disjoint, unpadded :class:`ShardSampler` shards.
    """
    if distributed and isinstance(samples, EvalSamples):
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        sampler: Sampler[int] = ShardSampler(len(samples), rank, world)
    elif distributed:
        sampler = DistributedSampler(samples, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(samples, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(samples)
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=_identity,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
