"""Row-wise thresholds from a column sample, for top-k over long rows.

A row's k-th largest score is estimated from every ``SAMPLE_STRIDE``-th column (a small
partition); the scores at or above that estimate are typically a few k per row, and only they are
packed into a dense [rows, few·k] matrix for the exact selection. A row whose estimate kept fewer
than k (the sample missed its best scores) or too many (many equal scores) is reported, and its
caller takes the plain path there, so the result never depends on the estimate. The ranker's
GSU selection (:func:`seminar.models.search.top_k_latest_first`) and serving's exact GSU
(:func:`seminar.retrieval.topk.top_k_latest`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_STRIDE = 16  # one column in 16 estimates the threshold
SAMPLE_MARGIN = 8  # extra sample ranks, so that rows rarely keep fewer than k scores
MAX_KEPT_FACTOR = 16  # rows keeping more than this many times k scores take the plain path


def sample_rank(length: int, k: int) -> int | None:
    """Which best of a row's column sample estimates its k-th best, or None where a sample says
    too little (rows under 4·k long, or k near the sample's width): those take the plain path."""
    k = min(k, length)
    width = -(-length // SAMPLE_STRIDE)
    rank = -(-k // SAMPLE_STRIDE) + SAMPLE_MARGIN
    return None if length <= 4 * k or 4 * rank >= width else rank


def sample_threshold(values: np.ndarray, k: int) -> np.ndarray | None:
    """Per-row threshold estimates [N] of rows [N, L] from their every 16th column, or None where
    :func:`sample_rank` says the rows are too short."""
    rank = sample_rank(values.shape[1], k)
    if rank is None or values.shape[0] == 0:
        return None
    sample = values[:, ::SAMPLE_STRIDE]
    width = sample.shape[1]
    return np.partition(sample, width - rank, axis=1)[:, width - rank]


@dataclass
class Passing:
    """The scores at or above each row's threshold, packed left: ``rows`` are the rows that kept
    between k and ``MAX_KEPT_FACTOR``·k of them; ``values`` / ``positions`` [len(rows), width]
    their scores and columns in column order, padded with -inf / -1."""

    rows: np.ndarray
    values: np.ndarray
    positions: np.ndarray


def passing(values: np.ndarray, threshold: np.ndarray, k: int) -> Passing:
    """Pack each row's scores at or above ``threshold`` [N] (rows [N, L], k ≤ L)."""
    n, length = values.shape
    hits = np.flatnonzero(values >= np.asarray(threshold, dtype=values.dtype)[:, None])
    row, column = np.divmod(hits, length)
    counts = np.bincount(row, minlength=n)
    good = (counts >= k) & (counts <= MAX_KEPT_FACTOR * k)
    if not good.all():
        keep = good[row]
        hits, column = hits[keep], column[keep]
    rows = np.flatnonzero(good)
    counts = counts[rows]
    width = int(counts.max()) if rows.size else 0
    packed = np.full((rows.size, width), -np.inf, dtype=values.dtype)
    positions = np.full(packed.shape, -1, dtype=np.int64)
    if hits.size:
        # hit i of dense row r goes to flat slot r·width + (i - first hit of r): one 1-D scatter
        shift = np.arange(rows.size) * width - (np.cumsum(counts) - counts)
        slots = np.arange(hits.size) + np.repeat(shift, counts)
        packed.reshape(-1)[slots] = values.reshape(-1)[hits]
        positions.reshape(-1)[slots] = column
    return Passing(rows, packed, positions)


def top_of_packed(
    values: np.ndarray, positions: np.ndarray, k: int, kth: np.ndarray | None = None
) -> np.ndarray:
    """Top-k positions [N, k] of packed rows of (value, position) pairs whose positions ascend
    (padding: -inf, -1; at least k real pairs per row), ascending; equal values: the later wins.

    Each row's k-th value (``kth`` [N] when the caller has it) splits it: everything above is kept,
    and of the values equal to it the latest fill the remaining places.
    """
    if kth is None:
        kth = -np.partition(-values, k - 1, axis=1)[:, k - 1]
    kth = kth[:, None]
    above = values > kth
    equal = values == kth
    missing = k - np.count_nonzero(above, axis=1)
    equal_from_right = np.cumsum(equal[:, ::-1], axis=1)[:, ::-1]
    take = above | (equal & (equal_from_right <= missing[:, None]))
    return positions[take].reshape(values.shape[0], k)
