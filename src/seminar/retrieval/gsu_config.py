"""How the GSU's keys are quantized (``evaluate --gsu pq``, ``export``): the settings alone, without
torch, so that the command line builds its ``--pq-*`` flags from them before any model is loaded.
The quantizer itself is :mod:`seminar.retrieval.gsu`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from seminar.errors import InvalidValue
from seminar.parsing import described

__all__ = ["MAX_DEFAULT_SUB", "PQGsuConfig", "PQLayout"]

MAX_DEFAULT_SUB = 32  # the default n_sub: the largest divisor of the key dimension up to this
PQLayout = Literal["channels", "fused"]


@dataclass(frozen=True)
class PQGsuConfig:
    """Codes of the GSU keys: 8-bit codes of the fused key and a 4·K exact re-rank by default.

    ``n_sub`` (sub-vectors per channel) defaults to the largest divisor of the key dimension that
    is at most 32, so any model dimension can be quantized without choosing it by hand.
    """

    n_sub: int | None = described(
        None,
        "PQ sub-vectors per channel (default: the largest divisor of the model's dimension ≤ 32)",
        flag="--pq-sub",
    )
    n_centroids: int = described(256, "PQ centroids per sub-vector (≤ 256: 8 bit)", flag="--pq-centroids")
    rerank_factor: int = described(
        4, "exact re-rank of the ADC top factor·K (0: none)", flag="--pq-rerank", aliases=("--rerank-factor",)
    )
    n_iter: int = described(20, "k-means iterations", flag="--pq-iter")
    seed: int = described(0, "k-means seed of the PQ codebooks", flag="--seed")
    layout: PQLayout = described(
        "fused",
        "what is quantized: the fused key the GSU scores (n_sub codes per behaviour; more recall per "
        "byte, docs/serving.md) or each key channel (the paper's form; M·n_sub codes per behaviour)",
        flag="--pq-layout",
    )

    def __post_init__(self) -> None:
        for name in ("n_centroids", "n_iter"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.n_sub is not None and self.n_sub < 1:
            raise InvalidValue("n_sub", f"must be ≥ 1, got {self.n_sub}")
        for name in ("rerank_factor", "seed"):
            if getattr(self, name) < 0:
                raise InvalidValue(name, f"must be ≥ 0, got {getattr(self, name)}")
        if self.layout not in ("channels", "fused"):
            raise InvalidValue("layout", f"must be channels or fused, got {self.layout!r}")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    def sub_vectors(self, dim: int) -> int:
        """``n_sub``, or the default for keys of dimension ``dim``."""
        if self.n_sub is not None:
            return self.n_sub
        return max(n for n in range(1, min(dim, MAX_DEFAULT_SUB) + 1) if dim % n == 0)
