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

from seminar.data.categories import item_categories
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
        value = np.ascontiguousarray(value)
        if not value.flags.writeable:  # a view of a read-only memory map: torch wants memory it may write
            value = value.copy()
        converted[key] = torch.from_numpy(value)
    return converted


def training_positions(ds: SeminarDataset) -> tuple[np.ndarray, np.ndarray]:
    """All (user, target position) training pairs, as two flat arrays."""
    per_user = np.maximum(ds.lengths - HELD_OUT - FIRST_TRAIN_POSITION, 0)
    users = np.repeat(np.arange(ds.n_users, dtype=np.int64), per_user)
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    positions = np.arange(users.size, dtype=np.int64) - np.repeat(first, per_user) + FIRST_TRAIN_POSITION
    return users, positions


NegativeSampling = Literal["uniform", "popularity", "category", "mixed"]
NEGATIVE_SAMPLING: tuple[str, ...] = ("uniform", "popularity", "category", "mixed")


def per_user_subset(users: np.ndarray, n_users: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random subset of at most ``cap`` entries per user.

    ``users`` must be grouped by user (as the sample arrays are): each entry gets a random
    priority and each user keeps its ``cap`` smallest.
    """
    priority = rng.random(users.size)
    order = np.lexsort((priority, users))
    counts = np.bincount(users, minlength=n_users)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(order.size) - np.repeat(first, counts)
    return np.sort(order[rank < cap])


@dataclass
class WindowConfig:
    max_length: int = 200
    train_negatives: int = 1
    positions_per_user: int | None = None  # cap per user and epoch, for very long sequences
    seed: int = 0
    targets_per_window: int = 32  # many-target samples: consecutive targets scored on one window
    negative_sampling: NegativeSampling = "uniform"


def training_history(ds: SeminarDataset) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every training behaviour: positions 0..n-3 of each user, flat, in CSR order.

    The last HELD_OUT behaviours of each user are the validation and test positives; a reference
    model fitted on them would be scored on what it memorised.
    """
    lengths = ds.lengths.astype(np.int64)
    kept = np.maximum(lengths - HELD_OUT, 0)
    users = np.repeat(np.arange(ds.n_users, dtype=np.int64), kept)
    first = np.cumsum(kept) - kept
    flat = np.repeat(ds.offsets[:-1].astype(np.int64), kept) + np.arange(users.size) - np.repeat(first, kept)
    return users, np.asarray(ds.items)[flat].astype(np.int64)


def training_item_counts(ds: SeminarDataset) -> np.ndarray:
    """How often each item id occurs in the training histories (each user's last two held out)."""
    _, items = training_history(ds)
    return np.bincount(items, minlength=ds.n_items + 1)


class NegativeSampler:
    """Training negatives: uniform over item ids, proportional to training popularity, from the
    positive's own category, or mixed (the first half of each positive's negatives from its
    category, the rest uniform).

    Uniform negatives are mostly of other categories than the positive, so a ranker learns to tell
    categories apart; where it will rank items of one category against each other (category-matched
    evaluation negatives, a search results page within a category) that skill says nothing, and
    ``category`` / ``mixed`` negatives ask for the distinction it needs (on the lifelong benchmark,
    with 8 broad categories, they changed nothing measurable: docs/guide.md). A positive without a
    category, or alone in its category, gets uniform negatives.

    ``log_q`` gives each item's log sampling probability for the sampled softmax's log-Q correction
    (None for uniform sampling, where the correction is a constant that cancels, and for the
    category forms, whose probabilities depend on the positive).
    """

    def __init__(self, ds: SeminarDataset, kind: NegativeSampling = "uniform") -> None:
        if kind not in NEGATIVE_SAMPLING:
            raise ValueError(f"unknown negative sampling {kind!r}; choose one of {NEGATIVE_SAMPLING}")
        self.kind, self.n_items = kind, ds.n_items
        self.log_q: np.ndarray | None = None
        if kind == "popularity":
            counts = training_item_counts(ds).astype(np.float64)
            counts[0] = 0.0
            counts[1:] += 1.0  # every item can be drawn: unseen ones keep a small probability
            probability = counts / counts.sum()
            self._cumulative = np.cumsum(probability)
            self.log_q = np.log(np.maximum(probability, 1e-30)).astype(np.float32)
        if kind in ("category", "mixed"):
            self._category = item_categories(ds)
            self._category[0] = 0
            # items grouped by category: category c's items are _by_category[_start[c] : _start[c] + _size[c]]
            self._by_category = np.argsort(self._category, kind="stable")
            self._size = np.bincount(self._category, minlength=1)
            self._start = np.cumsum(self._size) - self._size
            if not self._category[1:].any():
                raise ValueError(
                    f"negative sampling {kind!r} needs item categories; this dataset's items have none"
                )

    def sample(self, rng: np.random.Generator, positives: np.ndarray, n: int) -> np.ndarray:
        """``n`` negatives per positive [..., n], never the positive itself."""
        shape = (*positives.shape, n)
        if self.kind == "popularity":
            draws = rng.random(shape) * self._cumulative[-1]
            neg = np.minimum(np.searchsorted(self._cumulative, draws, side="right"), self.n_items)
            neg = np.maximum(neg, 1)
        else:
            neg = rng.integers(1, self.n_items + 1, size=shape)
            if self.kind in ("category", "mixed"):
                m = n if self.kind == "category" else -(-n // 2)
                neg[..., :m] = self._same_category(rng, positives, m, neg[..., :m])
        clash = neg == positives[..., None]
        neg[clash] = neg[clash] % self.n_items + 1  # never the positive itself
        return neg

    def _same_category(
        self, rng: np.random.Generator, positives: np.ndarray, n: int, fallback: np.ndarray
    ) -> np.ndarray:
        """``n`` items per positive from its category other than itself (``fallback`` where the
        category has no other item)."""
        category = self._category[np.clip(positives, 0, self.n_items)]
        size = self._size[category][..., None]
        usable = (category[..., None] > 0) & (size > 1)
        # a uniform draw among the category's other items: slots 0..size-2, skipping the positive's
        offset = (rng.random((*positives.shape, n)) * np.maximum(size - 1, 1)).astype(np.int64)
        start = self._start[category][..., None]
        drawn = self._by_category[start + offset]
        drawn = np.where(drawn == positives[..., None], self._by_category[start + size - 1], drawn)
        return np.where(usable, drawn, fallback)


class TrainSamples(Dataset):
    """Training samples; call :meth:`set_epoch` to redraw capped positions and negatives."""

    def __init__(self, ds: SeminarDataset, config: WindowConfig | None = None) -> None:
        self.ds = ds
        self.config = config or WindowConfig()
        self.sampler = NegativeSampler(ds, self.config.negative_sampling)
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
        keep = per_user_subset(self._all_users, self.ds.n_users, cap, rng)
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
        neg = self.sampler.sample(rng, target_items, self.config.train_negatives)
        batch.update(
            user=users,
            target_items=target_items,
            target_queries=target_queries,
            target_behaviour=self.ds.behaviour[flat],
            target_timestamps=self.ds.timestamps[flat],
            neg_items=neg,
            neg_queries=np.repeat(target_queries[:, None], neg.shape[1], axis=1),
        )
        if self.sampler.log_q is not None:
            batch.update(target_log_q=self.sampler.log_q[target_items], neg_log_q=self.sampler.log_q[neg])
        return _to_torch(batch)


def window_chunks(ds: SeminarDataset, targets: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, end) of every chunk of ``targets`` consecutive training targets, the latest chunk first.

    A user's training targets are positions 1..N-3; chunk ends (exclusive) are N-2, N-2-T, ... so
    every target lies in exactly one chunk; the earliest chunk of a user may be partial.
    """
    n_targets = np.maximum(ds.lengths - HELD_OUT - FIRST_TRAIN_POSITION, 0)
    per_user = -(-n_targets // targets)
    users = np.repeat(np.arange(ds.n_users, dtype=np.int64), per_user)
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    rank = np.arange(users.size, dtype=np.int64) - np.repeat(first, per_user)
    ends = ds.lengths[users].astype(np.int64) - HELD_OUT - rank * targets
    return users, ends


class WindowSamples(Dataset):
    """Many-target training samples: T consecutive targets of one user scored on one shared window.

    A sample is ``(user, end)``: its targets are positions ``end - T .. end - 1`` and its buffer
    holds the ``L + T - 1`` behaviours before the last target, so target t sees exactly the L
    behaviours before it (``target_ends`` [B, T] is the exclusive end of its history in the
    buffer), the same history the one-target :class:`TrainSamples` gives it. Every training
    position is a target once per epoch; ``positions_per_user`` keeps a random subset of each
    user's chunks (about that many targets) per epoch instead.

    Batch keys: the buffer (``hist_*``, ``mask`` [B, W]), ``user`` [B], ``target_items``,
    ``target_queries``, ``target_timestamps``, ``target_valid``, ``target_ends`` [B, T],
    ``neg_items``, ``neg_queries`` [B, T, N], and with popularity sampling ``target_log_q`` [B, T]
    and ``neg_log_q`` [B, T, N].
    """

    def __init__(self, ds: SeminarDataset, config: WindowConfig | None = None) -> None:
        self.ds = ds
        self.config = config = config or WindowConfig()
        if config.targets_per_window < 1:
            raise ValueError(f"targets_per_window must be >= 1, got {config.targets_per_window}")
        self.sampler = NegativeSampler(ds, config.negative_sampling)
        self.epoch = 0
        self._all_users, self._all_ends = window_chunks(ds, config.targets_per_window)
        self.users, self.ends = self._all_users, self._all_ends
        self.set_epoch(0)

    @property
    def buffer_length(self) -> int:
        return self.config.max_length + self.config.targets_per_window - 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        cap = self.config.positions_per_user
        if cap is None:
            return
        chunks = -(-cap // self.config.targets_per_window)
        rng = np.random.default_rng((self.config.seed, epoch, 3))
        keep = per_user_subset(self._all_users, self.ds.n_users, chunks, rng)
        self.users, self.ends = self._all_users[keep], self._all_ends[keep]

    def __len__(self) -> int:
        return int(self.users.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        users, ends = self.users[index], self.ends[index]
        t = self.config.targets_per_window
        batch = gather_windows(self.ds, users, ends - 1, self.buffer_length)
        positions = ends[:, None] - t + np.arange(t, dtype=np.int64)[None, :]  # B T
        valid = positions >= FIRST_TRAIN_POSITION
        flat = self.ds.offsets[users][:, None] + np.where(valid, positions, FIRST_TRAIN_POSITION)
        target_items = np.where(valid, self.ds.items[flat], 0).astype(np.int64)
        target_queries = np.where(valid, self.ds.queries[flat], 0).astype(np.int64)
        rng = np.random.default_rng((self.config.seed, self.epoch, int(index[0]) if index.size else 0, 4))
        neg = self.sampler.sample(rng, target_items, self.config.train_negatives)
        target_ends = self.config.max_length + np.arange(t, dtype=np.int64)  # exclusive, in the buffer
        batch.update(
            user=users,
            target_items=target_items,
            target_queries=target_queries,
            target_timestamps=np.where(valid, self.ds.timestamps[flat], 0),
            target_valid=valid,
            target_ends=np.broadcast_to(target_ends, valid.shape),
            neg_items=neg,
            neg_queries=np.repeat(target_queries[:, :, None], neg.shape[-1], axis=2),
        )
        if self.sampler.log_q is not None:
            batch.update(target_log_q=self.sampler.log_q[target_items], neg_log_q=self.sampler.log_q[neg])
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
    samples: TrainSamples | WindowSamples | EvalSamples,
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
