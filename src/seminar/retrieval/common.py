"""Shared validation and the exact merged-vector score, so every method checks inputs the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def to_numpy(x: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
    """Convert tensors or a list of per-channel arrays to one float numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        parts = [to_numpy(p) for p in x]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"channel arrays have different shapes: {sorted(shapes)}")
        # list of M arrays [L, d] -> [L, M, d]; list of M vectors [d] -> [M, d]
        return np.stack(parts, axis=-2)
    return np.asarray(x)


def as_sequence(vectors: ArrayLike | Sequence[ArrayLike], n_channels: int, dim: int) -> np.ndarray:
    """Validate behaviour vectors and return them as a contiguous float32 array [L, M, d].

    Accepts an array [L, M, d] or a list of M arrays [L, d] (one per channel).
    """
    arr = to_numpy(vectors)
    if arr.ndim != 3:
        raise ValueError(f"expected behaviour vectors of shape [L, M={n_channels}, d={dim}], got {arr.shape}")
    if arr.shape[1] != n_channels:
        raise ValueError(f"expected {n_channels} channels, got {arr.shape[1]} (shape {arr.shape})")
    if arr.shape[2] != dim:
        raise ValueError(f"expected dimension d={dim}, got {arr.shape[2]} (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("behaviour vectors contain NaN or infinite values")
    return arr


def as_target(target: ArrayLike | Sequence[ArrayLike], n_channels: int, dim: int) -> np.ndarray:
    """Validate one target (all channels) and return it as float32 [M, d]."""
    arr = to_numpy(target)
    if arr.shape != (n_channels, dim):
        raise ValueError(f"expected a target of shape [M={n_channels}, d={dim}], got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("target vectors contain NaN or infinite values")
    return arr


def as_gammas(gammas: ArrayLike | Sequence[float], n_channels: int) -> np.ndarray:
    """Validate fusion weights: one finite non-negative weight per channel, summing to 1."""
    g = np.asarray(to_numpy(gammas) if isinstance(gammas, torch.Tensor) else gammas, dtype=np.float64)
    if g.shape != (n_channels,):
        raise ValueError(f"expected {n_channels} channel weights, got shape {g.shape}")
    values = g.tolist()  # M is tiny: plain floats are cheaper than numpy reductions here
    if not all(math.isfinite(v) and v >= 0.0 for v in values):
        raise ValueError(f"channel weights must be finite and non-negative, got {values}")
    total = math.fsum(values)
    if abs(total - 1.0) > 1e-4:
        raise ValueError(f"channel weights must sum to 1, got sum {total:.6f}")
    return g.astype(np.float32)


def merge(vectors: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Merged vector Σ_j γ_j x(j); works on [M, d] and [..., M, d]."""
    return np.matmul(gammas, vectors).astype(np.float32, copy=False)


def exact_scores(vectors: np.ndarray, target: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Ground-truth scores s_l = <Σ_i γ_i x_t(i), Σ_j γ_j x_l(j)> in float32, shape [L]."""
    query = merge(target, gammas)
    return merge(vectors, gammas) @ query


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (k is clipped to the length)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int, scores: np.ndarray | None = None) -> float:
    """|approx top-k ∩ exact top-k| / k; indices < 0 (padding) never count.

    With the exact ``scores`` of every position, ties are honoured: a returned position counts when
    its score reaches the k-th best, since repeated behaviours (same query and item) score the same
    and any of them is a correct answer. "Reaches" allows float32 rounding (1e-6 of the largest
    score's magnitude): a re-rank that sums the same products in another order may put one of
    several tied behaviours an ulp below the others.
    """
    a = {int(i) for i in np.asarray(approx)[:k] if i >= 0}
    if scores is None:
        e = {int(i) for i in np.asarray(exact)[:k]}
        return len(a & e) / k
    kth = scores[np.asarray(exact)[:k]].min()
    tolerance = 1e-6 * float(np.abs(scores).max(initial=0.0))
    return min(k, sum(scores[i] >= kth - tolerance for i in a)) / k
