"""Leave-one-out split (paper 4.1) and sampled evaluation negatives.

Per user with N behaviours (chronological index 0..N-1): index N-1 is the test positive,
N-2 the validation positive, and 1..N-3 are training targets (each predicted from the
behaviours before it). Test and validation each get their own negatives, drawn without
replacement from items the user never interacted with: from all items (``uniform``, by default),
from the held-out positive's own category (``category``), so that knowing the category, which a
generated query may name, does not single out the positive, or from the items other users clicked
under the held-out behaviour's own query (``query``): negatives the query retrieves as well as it
retrieves the positive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from seminar.data.tables import DataError

Sampling = Literal["uniform", "popularity"]
EvalNegatives = Literal["uniform", "category", "query"]
EVAL_NEGATIVES: tuple[str, ...] = ("uniform", "category", "query")
MIN_BEHAVIOURS = 3


@dataclass(frozen=True)
class SplitConfig:
    negatives: int = 99
    sampling: Sampling = "uniform"
    seed: int = 0
    min_behaviours: int = MIN_BEHAVIOURS
    eval_negatives: EvalNegatives = "uniform"  # which items a negative may be (see the module doc)

    def __post_init__(self) -> None:
        if self.eval_negatives not in EVAL_NEGATIVES:
            raise ValueError(f"eval_negatives must be one of {EVAL_NEGATIVES}, got {self.eval_negatives!r}")

    def identity(self) -> dict[str, object]:
        """What decides the split, for a dataset's fingerprint. ``eval_negatives`` appears only when
        it is not the default, so datasets built before it existed keep their identity."""
        out = asdict(self)
        if out["eval_negatives"] == "uniform":
            del out["eval_negatives"]
        return out


def sample_category_negatives(
    offsets: np.ndarray,
    items: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    category: np.ndarray,
    positives: np.ndarray,
) -> tuple[np.ndarray, int]:
    """``n_negatives`` distinct items per user, outside the user's history, from the category of the
    user's held-out positive (``category`` [n_items + 1], ``positives`` [n_users] item ids).

    A user whose category has too few unseen items gets all of them, then uniform items outside its
    history for the rest; how many users needed that is returned with the negatives. Items without
    a category (0) form no category: their users get uniform negatives.
    """

    def pool(value: int) -> np.ndarray:
        return np.flatnonzero(category[1:] == value) + 1

    return sample_pooled_negatives(offsets, items, n_items, n_negatives, rng, category[positives], pool)


def query_pools(
    offsets: np.ndarray, items: np.ndarray, queries: np.ndarray, n_items: int, held_out: int, empty: int
) -> Callable[[int], np.ndarray]:
    """Each query's pool: the distinct items clicked under it in the training part of the log (each
    user's last ``held_out`` behaviours left out, so no test or validation click builds a pool)."""
    lengths = np.diff(offsets)
    position = np.arange(items.size) - np.repeat(offsets[:-1], lengths)
    training = position < np.repeat(lengths - held_out, lengths)
    searched = training & (queries != empty)
    keys = np.unique(queries[searched].astype(np.int64) * (n_items + 1) + items[searched].astype(np.int64))
    by_query, clicked = keys // (n_items + 1), keys % (n_items + 1)

    def pool(query: int) -> np.ndarray:
        start, stop = np.searchsorted(by_query, [query, query + 1])
        return clicked[start:stop]

    return pool


def sample_pooled_negatives(
    offsets: np.ndarray,
    items: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    wanted: np.ndarray,
    pool_of: Callable[[int], np.ndarray],
) -> tuple[np.ndarray, int]:
    """``n_negatives`` distinct items per user, outside the user's history, from the pool
    ``pool_of(wanted[user])`` (``wanted`` [n_users]; 0: the user has no pool and gets uniform items).

    A user whose pool has too few unseen items gets all of them, then uniform items outside its
    history for the rest; how many users (with a pool) needed that is returned with the negatives.
    """
    n_users = offsets.size - 1
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(offsets))
    stride = np.int64(n_items + 1)
    history = np.unique(user_of * stride + items.astype(np.int64))
    out = np.zeros((n_users, n_negatives), dtype=np.int32)
    kept = np.zeros(n_users, dtype=np.int64)  # pooled negatives already placed per user
    for value in np.unique(wanted[wanted != 0]):
        pool = pool_of(int(value))
        for user in np.flatnonzero(wanted == value):  # one pool per value, less each history
            keys = user * stride + pool
            pos = np.searchsorted(history, keys)
            unseen = pool[history[np.minimum(pos, history.size - 1)] != keys]
            take = min(unseen.size, n_negatives)
            out[user, :take] = rng.choice(unseen, size=take, replace=False) if take == n_negatives else unseen
            kept[user] = take
    short_users = np.flatnonzero(kept < n_negatives)
    short = int(np.count_nonzero(wanted[short_users] != 0))  # users without a pool are not "short"
    if short_users.size:  # uniform items outside the history fill the rest, for these users only
        starts, stops = offsets[short_users], offsets[short_users + 1]
        sub_items = np.concatenate([items[a:b] for a, b in zip(starts, stops, strict=True)])
        sub_offsets = np.concatenate([[0], np.cumsum(stops - starts)])
        uniform = sample_negatives(sub_offsets, sub_items, n_items, n_negatives, rng)
        for row, user in enumerate(short_users):
            have = out[user, : kept[user]]
            fill = uniform[row][~np.isin(uniform[row], have)][: n_negatives - kept[user]]
            out[user, kept[user] :] = fill
    return out, short


def sample_negatives(
    offsets: np.ndarray,
    items: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    sampling: Sampling = "uniform",
) -> np.ndarray:
    """Draw ``n_negatives`` distinct items per user that are absent from the user's history.

    Vectorised rejection sampling: candidates are checked against a sorted array of
    ``user * (n_items + 1) + item`` keys, and only rows still short are redrawn.
    """
    n_users = offsets.size - 1
    lengths = np.diff(offsets)
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    stride = np.int64(n_items + 1)
    history = np.unique(user_of * stride + items.astype(np.int64))
    distinct = np.bincount(history // stride, minlength=n_users)
    free = n_items - distinct
    if n_users and free.min() < n_negatives:
        bad = int(np.argmin(free))
        raise DataError(
            f"cannot sample {n_negatives} negatives for user index {bad}: only {int(free[bad])} "
            f"of {n_items} items are outside their history (lower --negatives)"
        )
    if sampling == "popularity":
        weights = np.bincount(items, minlength=n_items + 1)[1:].astype(np.float64)
        probs = weights / weights.sum()
    elif sampling == "uniform":
        probs = None
    else:
        raise ValueError(f"unknown negative sampling {sampling!r}; use 'uniform' or 'popularity'")

    out = np.zeros((n_users, n_negatives), dtype=np.int32)
    filled = np.zeros(n_users, dtype=np.int64)
    pending = np.arange(n_users)
    draw = max(2 * n_negatives, 8)
    first_round = True
    while pending.size:
        if probs is None:
            cand = rng.integers(1, n_items + 1, size=(pending.size, draw), dtype=np.int64)
        else:
            cand = rng.choice(n_items, size=(pending.size, draw), p=probs).astype(np.int64) + 1
        keys = pending[:, None] * stride + cand
        pos = np.searchsorted(history, keys)
        cand[history[np.minimum(pos, history.size - 1)] == keys] = 0
        if first_round:
            _fill_distinct(out, filled, pending, cand, n_negatives)
            first_round = False
        else:
            for row, user in enumerate(pending):
                fresh = cand[row][cand[row] > 0]
                fresh = fresh[~np.isin(fresh, out[user, : filled[user]])]
                fresh = np.unique(fresh)[: n_negatives - filled[user]]
                out[user, filled[user] : filled[user] + fresh.size] = fresh
                filled[user] += fresh.size
        pending = pending[filled[pending] < n_negatives]
    return out


def _fill_distinct(
    out: np.ndarray, filled: np.ndarray, users: np.ndarray, cand: np.ndarray, n_negatives: int
) -> None:
    """Keep the first ``n_negatives`` distinct non-zero candidates per row (in draw order), all rows at once.

    Draw order matters: keeping the smallest ids instead would bias negatives towards low ids.
    """
    order = np.argsort(cand, axis=1, kind="stable")
    ranked = np.take_along_axis(cand, order, axis=1)
    first_seen = ranked > 0
    first_seen[:, 1:] &= ranked[:, 1:] != ranked[:, :-1]  # stable sort: first occurrence kept
    valid = np.empty_like(first_seen)
    np.put_along_axis(valid, order, first_seen, axis=1)
    pick = np.argsort(~valid, axis=1, kind="stable")[:, :n_negatives]
    picked = np.take_along_axis(cand, pick, axis=1)
    picked[~np.take_along_axis(valid, pick, axis=1)] = 0
    out[users] = picked
    filled[users] = np.minimum(valid.sum(axis=1), n_negatives)
