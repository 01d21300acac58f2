"""The retrieval grid's method names (no heavy imports: the CLI's choices are built from them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BASELINES", "METHODS", "PQ_METHODS", "PQMethod"]


@dataclass(frozen=True)
class PQMethod:
    """A PQ configuration in the grid; ``rerank`` re-scores the top factor·K exactly.

    ``factor`` None means the grid's ``rerank_factor``.
    """

    n_sub: int
    n_centroids: int
    mode: str = "adc"
    rerank: bool = False
    factor: int | None = None


def _pq_methods() -> dict[str, PQMethod]:
    shapes = {
        "pq_paper": (8, 512),
        "pq4x16": (16, 16),
        "pq4x32": (32, 16),
        "pq4x64": (64, 16),
        "pq8x32": (32, 256),
    }
    out: dict[str, PQMethod] = {}
    for prefix, (n_sub, c) in shapes.items():
        modes = ("sdc", "adc") if prefix == "pq_paper" else ("adc",)
        for mode in modes:
            out[f"{prefix}_{mode}"] = PQMethod(n_sub, c, mode)
            out[f"{prefix}_{mode}_rr"] = PQMethod(n_sub, c, mode, rerank=True)
    # larger shortlists for the compact codes: how far re-rank alone can carry them
    out["pq_paper_adc_rr16"] = PQMethod(8, 512, "adc", rerank=True, factor=16)
    out["pq4x32_adc_rr16"] = PQMethod(32, 16, "adc", rerank=True, factor=16)
    return out


PQ_METHODS = _pq_methods()
BASELINES = ("hnsw", "lsh", "rqvae")
METHODS = (*BASELINES, *PQ_METHODS)
