"""Which codes should stand in for the GSU's keys: bytes per behaviour against Recall@K.

    .venv/bin/python benchmarks/gsu_codes.py [--length 10000] [--targets 200] [--k 50] [--seed 0]
    .venv/bin/python benchmarks/gsu_codes.py --export EXPORT      # a trained model's keys instead

The GSU scores a behaviour by <u, Σ_j γ_j x_j> over its channels j (query, text, image). The paper
quantizes each channel x_j; the score only needs the fused key Σ_j γ_j x_j, which can be quantized
instead. This compares, at equal bytes per behaviour, on synthetic channels that are clustered and
anisotropic (topics with their own elongated spread, not the i.i.d. Gaussians of the retrieval
grid), without and with an exact re-rank of the ADC shortlist (4·K, from the exact keys that
serving derives from the ids at no storage cost):

* per-channel PQ (the paper's layout; M·n_sub one-byte codes),
* PQ of the fused key, 8-bit and 4-bit codes,
* OPQ (a learned rotation, faiss) then PQ of the fused key.

ADC scores equal <u, decoded key>, so every method is scored through its reconstruction; speed is
measured by benchmarks/serve_candidates.py. Recall@K counts a kept behaviour as right when its exact
score reaches the exact K-th (ties are not held against a method). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

GAMMAS = (0.2, 0.5, 0.3)  # query, text, image channel weights of the fused key
TRAIN_SIZE = 12_800  # codebook training sample (50 points per 8-bit centroid)
OPQ_ITERATIONS = 12  # rotation / codebook alternations (faiss default 50: cut for time)


@dataclass
class Channels:
    """Behaviours [n, M, d] drawn from topic clusters, the same topic in every channel."""

    centres: np.ndarray  # [M, topics, d]
    spreads: np.ndarray  # [M, topics, d, d]: each topic's own elongated covariance factor

    @classmethod
    def make(cls, rng: np.random.Generator, topics: int, dim: int, channels: int) -> Channels:
        centres = rng.standard_normal((channels, topics, dim)).astype(np.float32)
        scales = np.exp(rng.normal(-1.5, 0.8, (channels, topics, dim)))  # a few long axes, many short
        rotations = np.linalg.qr(rng.standard_normal((channels, topics, dim, dim)))[0]
        spreads = (rotations * scales[:, :, None, :]).astype(np.float32)
        return cls(centres, spreads)

    def sample(self, rng: np.random.Generator, n: int, zipf: float = 1.1) -> np.ndarray:
        channels, topics, dim = self.centres.shape
        weights = 1.0 / np.arange(1, topics + 1) ** zipf
        topic = rng.choice(topics, n, p=weights / weights.sum())
        out = np.empty((n, channels, dim), dtype=np.float32)
        for t in np.unique(topic):
            members = np.flatnonzero(topic == t)
            for j in range(channels):
                noise = rng.standard_normal((members.size, dim)).astype(np.float32)
                out[members, j] = self.centres[j, t] + noise @ self.spreads[j, t].T
        return out


def fused(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_j w_j x_j [n, d] of channels [n, M, d]."""
    return np.einsum("nmd,m->nd", x, weights).astype(np.float32)


def pq_reconstruction(train: np.ndarray, data: np.ndarray, n_sub: int, bits: int, seed: int) -> np.ndarray:
    """Decoded PQ codes of ``data`` (what ADC scores against)."""
    quantizer = faiss.ProductQuantizer(train.shape[1], n_sub, bits)
    quantizer.cp.seed = seed
    quantizer.train(np.ascontiguousarray(train))
    return quantizer.decode(quantizer.compute_codes(np.ascontiguousarray(data)))


def opq_reconstruction(train: np.ndarray, data: np.ndarray, n_sub: int, bits: int, seed: int) -> np.ndarray:
    """OPQ: a learned rotation R, PQ in the rotated space, mapped back (<u, Rᵀ ŷ> = <R u, ŷ>)."""
    rotation = faiss.OPQMatrix(train.shape[1], n_sub)
    rotation.niter = OPQ_ITERATIONS
    rotation.train(np.ascontiguousarray(train))
    rotated_train, rotated = rotation.apply(train), rotation.apply(data)
    decoded = pq_reconstruction(rotated_train, rotated, n_sub, bits, seed)
    return rotation.reverse_transform(decoded)


def recall(scores_by: np.ndarray, exact: np.ndarray, k: int, rerank: int) -> float:
    """Recall@k of the top-k by ``scores_by`` [C, n] (after an exact re-rank of its top ``rerank``
    when > 0) against the exact scores [C, n]."""
    if rerank:
        shortlist = np.argpartition(-scores_by, rerank - 1, axis=1)[:, :rerank]
        rescored = np.take_along_axis(exact, shortlist, axis=1)
        kept = np.take_along_axis(shortlist, np.argpartition(-rescored, k - 1, axis=1)[:, :k], axis=1)
    else:
        kept = np.argpartition(-scores_by, k - 1, axis=1)[:, :k]
    kth = -np.partition(-exact, k - 1, axis=1)[:, k - 1 : k]
    return float((np.take_along_axis(exact, kept, axis=1) >= kth).mean())


def methods(
    train: np.ndarray, data: np.ndarray, weights: np.ndarray, seed: int
) -> dict[str, tuple[int, Callable[[], np.ndarray]]]:
    """name -> (bytes per behaviour, the fused keys it scores with [n, d])."""
    channels = train.shape[1]
    fused_train, fused_data = fused(train, weights), fused(data, weights)

    def per_channel(n_sub: int) -> Callable[[], np.ndarray]:
        def build() -> np.ndarray:
            parts = [pq_reconstruction(train[:, j], data[:, j], n_sub, 8, seed) for j in range(channels)]
            return fused(np.stack(parts, axis=1), weights)

        return build

    table: dict[str, tuple[int, Callable[[], np.ndarray]]] = {
        "exact fused fp32": (4 * data.shape[2], lambda: fused_data)
    }
    for n_sub in (4, 8, 16):
        table[f"per-channel PQ {n_sub}×8 bit"] = (channels * n_sub, per_channel(n_sub))
    for n_sub in (8, 16, 32):
        table[f"fused PQ {n_sub}×8 bit"] = (
            n_sub,
            lambda n_sub=n_sub: pq_reconstruction(fused_train, fused_data, n_sub, 8, seed),
        )
        table[f"fused OPQ {n_sub}×8 bit"] = (
            n_sub,
            lambda n_sub=n_sub: opq_reconstruction(fused_train, fused_data, n_sub, 8, seed),
        )
    table["fused PQ 32×4 bit"] = (16, lambda: pq_reconstruction(fused_train, fused_data, 32, 4, seed))
    return table


def compare(
    train: np.ndarray,
    history: np.ndarray,
    u: np.ndarray,
    weights: np.ndarray,
    k: int,
    seed: int,
    factors: tuple[int, ...] = (4,),
) -> list[dict[str, float | str]]:
    """Every method's bytes and Recall@k for GSU queries ``u`` [C, d] over ``history`` [n, M, d]
    (codebooks fitted on ``train`` [T, M, d], never on the history): without a re-rank, and with an
    exact re-rank of the top factor·k for each of ``factors`` (``recall_rerank`` is the first's,
    ``recall_rerank_F`` each one's)."""
    exact = u @ fused(history, weights).T
    rows: list[dict[str, float | str]] = []
    for name, (size, build) in methods(train, history, weights, seed).items():
        approx = u @ build().T
        row: dict[str, float | str] = {"method": name, "bytes": size, "recall": recall(approx, exact, k, 0)}
        for factor in factors:
            row[f"recall_rerank_{factor}"] = recall(approx, exact, k, min(factor * k, exact.shape[1]))
        row["recall_rerank"] = row[f"recall_rerank_{factors[0]}"]
        rows.append(row)
    return rows


def run(
    length: int,
    targets: int,
    k: int,
    seed: int,
    dim: int = 64,
    topics: int = 64,
    train_size: int = TRAIN_SIZE,
    factors: tuple[int, ...] = (4,),
) -> list[dict[str, float | str]]:
    """:func:`compare` on synthetic clustered channels; targets look like behaviours of the same topics."""
    rng = np.random.default_rng(seed)
    source = Channels.make(rng, topics, dim, len(GAMMAS))
    weights = np.asarray(GAMMAS, dtype=np.float32)
    train, history = source.sample(rng, train_size), source.sample(rng, length)
    u = fused(source.sample(rng, targets), weights)
    return compare(train, history, u, weights, k, seed, factors)


def run_trained(
    export: Path, length: int, targets: int, k: int, seed: int, factors: tuple[int, ...] = (4,)
) -> list[dict[str, float | str]]:
    """:func:`compare` on a trained model's GSU keys: channel keys of a random history of the
    export's ids (half of them searches), u of random (query, item) candidates; the codebooks are
    fitted on random (query, item) pairs. The keys already carry their channel weights."""
    import torch

    from seminar.retrieval.gsu import gsu_key_tables, target_query_vectors
    from seminar.serving import ScoringService
    from seminar.serving.bundle import load_export

    torch.set_num_threads(1)
    ranker = ScoringService(load_export(export), threads=1).ranker
    tables = gsu_key_tables(ranker)  # query [Nq+1, d], items [Ni+1, M-1, d]
    rng = np.random.default_rng(seed)

    def channels_of(n: int) -> np.ndarray:
        queries = np.where(rng.random(n) < 0.5, rng.integers(1, tables.query.shape[0], n), 0)
        items = rng.integers(1, tables.items.shape[0], n)
        return np.concatenate([tables.query[queries][:, None], tables.items[items]], axis=1)

    train, history = channels_of(TRAIN_SIZE), channels_of(length)
    u = target_query_vectors(
        ranker,
        rng.integers(0, tables.query.shape[0], targets),
        rng.integers(1, tables.items.shape[0], targets),
    )
    return compare(train, history, u, np.ones(train.shape[1], dtype=np.float32), k, seed, factors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=10_000, help="behaviours per user (L)")
    parser.add_argument("--targets", type=int, default=200, help="GSU queries (candidates)")
    parser.add_argument("--k", type=int, default=50, help="K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--export", type=Path, default=None, help="a `seminar export`: its trained keys instead"
    )
    parser.add_argument(
        "--rerank-factors",
        type=int,
        nargs="+",
        default=[4],
        help="a column per factor F: the codes' top F·K re-scored exactly (serving re-ranks 4·K by default)",
    )
    args = parser.parse_args()
    factors = tuple(args.rerank_factors)
    faiss.omp_set_num_threads(1)
    if args.export is None:
        rows = run(args.length, args.targets, args.k, args.seed, factors=factors)
        source = "synthetic clustered channels, d = 64, 3 channels"
    else:
        rows = run_trained(args.export, args.length, args.targets, args.k, args.seed, factors)
        source = f"trained GSU keys of {args.export}"
    print(f"{source}; L = {args.length}, {args.targets} targets, K = {args.k}, seed {args.seed}\n")
    reranked = " | ".join(f"Recall@{args.k}, exact re-rank of {f * args.k}" for f in factors)
    print(f"| codes | bytes/behaviour | Recall@{args.k} | {reranked} |")
    print("|---|---|---|" + "---|" * len(factors))
    for row in rows:
        cells = " | ".join(f"{row[f'recall_rerank_{f}']:.4f}" for f in factors)
        print(f"| {row['method']} | {row['bytes']} | {row['recall']:.4f} | {cells} |")


if __name__ == "__main__":
    main()
