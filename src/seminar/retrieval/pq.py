"""Multi-modal product quantizer: one trained PQ per channel, SDC and ADC look-up tables.

A behaviour with M channel vectors becomes M × n_sub integer codes. The target is scored against
the codes with tables instead of O(M·d) float work per behaviour:

* SDC (the paper): both sides quantized; tables of inner products between the centroids of every
  channel pair and sub-vector, score = Σ_ij γ_i γ_j Σ_b <e_{i,b,c_t}, e_{j,b,c_l}>.
* ADC: the target is known exactly at serving time, so per target one table per channel and
  sub-vector, T_j[b, c] = γ_j <q_b, e_{j,b,c}> with q = Σ_i γ_i x_t(i); score = Σ_j Σ_b T_j[b, code].
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from seminar.io import atomic_path
from seminar.retrieval.common import ArrayLike, as_gammas, as_sequence, as_target, merge, to_numpy

# An SDC pair table larger than this many float32 values is not materialised (it would be
# O(M²·n_sub·C²)); SDC tables are then built from the decoded target, which is the same number.
SDC_PAIR_TABLE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class PQConfig:
    """Shape of the quantizer; n_centroids need not be a power of two (codes use ceil(log2) bits)."""

    n_channels: int
    dim: int
    n_sub: int = 8
    n_centroids: int = 256
    n_iter: int = 20
    max_points_per_centroid: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_channels <= 16:
            raise ValueError(f"n_channels must be in [1, 16], got {self.n_channels}")
        if self.dim <= 0 or self.n_sub <= 0:
            raise ValueError(f"dim and n_sub must be positive, got dim={self.dim}, n_sub={self.n_sub}")
        if self.dim % self.n_sub != 0:
            raise ValueError(f"dim={self.dim} is not divisible by n_sub={self.n_sub}")
        if not 2 <= self.n_centroids <= 65536:
            raise ValueError(f"n_centroids must be in [2, 65536], got {self.n_centroids}")

    @property
    def dsub(self) -> int:
        return self.dim // self.n_sub

    @property
    def nbits(self) -> int:
        """Bits needed for one code: 4 for 16 centroids, 8 for 256, 9 for 512."""
        return max(1, math.ceil(math.log2(self.n_centroids)))

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.n_centroids <= 256 else np.dtype(np.uint16)

    @property
    def bytes_per_behaviour(self) -> int:
        """Packed code size of one behaviour (all channels), as stored on disk or in faiss."""
        return math.ceil(self.n_channels * self.n_sub * self.nbits / 8)


class MultiModalPQ:
    """Per-channel product quantizers with codebooks [M, n_sub, C, dsub]."""

    def __init__(self, config: PQConfig, codebooks: ArrayLike) -> None:
        cb = np.ascontiguousarray(to_numpy(codebooks), dtype=np.float32)
        want = (config.n_channels, config.n_sub, config.n_centroids, config.dsub)
        if cb.shape != want:
            raise ValueError(f"codebooks must have shape {want}, got {cb.shape}")
        if not np.isfinite(cb).all():
            raise ValueError("codebooks contain NaN or infinite values")
        self.config = config
        self.codebooks = cb
        self._pair_table: np.ndarray | None = None

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, tables: Sequence[ArrayLike], config: PQConfig, verbose: bool = False) -> MultiModalPQ:
        """Train each channel's sub-quantizers with faiss k-means on that channel's embedding table.

        ``tables[m]`` is the embedding table of channel m (items, queries, ...), shape [N_m, d]; it is
        deliberately separate from any sequence that will be searched.
        """
        if len(tables) != config.n_channels:
            raise ValueError(f"expected {config.n_channels} embedding tables, got {len(tables)}")
        cfg = config
        codebooks = np.empty((cfg.n_channels, cfg.n_sub, cfg.n_centroids, cfg.dsub), dtype=np.float32)
        for m, table in enumerate(tables):
            x = np.ascontiguousarray(to_numpy(table), dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != cfg.dim:
                raise ValueError(f"embedding table of channel {m} must be [N, d={cfg.dim}], got {x.shape}")
            if not np.isfinite(x).all():
                raise ValueError(f"embedding table of channel {m} contains NaN or infinite values")
            if x.shape[0] < cfg.n_centroids:
                raise ValueError(
                    f"channel {m}: cannot train {cfg.n_centroids} centroids on {x.shape[0]} training vectors;"
                    " use a larger embedding table or fewer centroids"
                )
            for b in range(cfg.n_sub):
                import faiss  # here, not at module top: quantized codes are read and scored without it

                sub = np.ascontiguousarray(x[:, b * cfg.dsub : (b + 1) * cfg.dsub])
                km = faiss.Kmeans(
                    cfg.dsub,
                    cfg.n_centroids,
                    niter=cfg.n_iter,
                    seed=cfg.seed + 1009 * m + b,
                    max_points_per_centroid=cfg.max_points_per_centroid,
                    min_points_per_centroid=1,  # small tables are valid input, not a warning per run
                    verbose=verbose,
                )
                km.train(sub)
                codebooks[m, b] = km.centroids
        return cls(cfg, codebooks)

    # ------------------------------------------------------------------ codes
    def encode(self, vectors: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
        """Nearest-centroid codes [L, M, n_sub] (uint8 up to 256 centroids, else uint16).

        Codes are kept one per element in memory; ``bytes_per_behaviour`` reports the packed size.
        """
        cfg = self.config
        x = as_sequence(vectors, cfg.n_channels, cfg.dim)
        codes = np.empty((x.shape[0], cfg.n_channels, cfg.n_sub), dtype=cfg.code_dtype)
        if x.shape[0] == 0:
            return codes
        for m in range(cfg.n_channels):
            codes[:, m] = self.encode_channel(m, x[:, m])
        return codes

    def encode_channel(self, channel: int, vectors: np.ndarray) -> np.ndarray:
        """Codes [N, n_sub] of one channel's vectors [N, d] (channels may have different row counts)."""
        cfg = self.config
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != cfg.dim:
            raise ValueError(f"channel {channel} vectors must be [N, d={cfg.dim}], got {x.shape}")
        codes = np.empty((x.shape[0], cfg.n_sub), dtype=cfg.code_dtype)
        import faiss

        for b in range(cfg.n_sub):
            sub = np.ascontiguousarray(x[:, b * cfg.dsub : (b + 1) * cfg.dsub])
            _, idx = faiss.knn(sub, self.codebooks[channel, b], 1)
            codes[:, b] = idx[:, 0]
        return codes

    def decode_channel(self, channel: int, codes: np.ndarray) -> np.ndarray:
        """Vectors [N, d] of one channel's codes [N, n_sub]."""
        cfg = self.config
        c = np.asarray(codes).astype(np.int64)
        parts = self.codebooks[channel, np.arange(cfg.n_sub)[None, :], c]  # [N, n_sub, dsub]
        return parts.reshape(c.shape[0], cfg.dim)

    def check_codes(self, codes: ArrayLike) -> np.ndarray:
        """Validate codes [..., M, n_sub] and return them as an int64 numpy array."""
        c = to_numpy(codes)
        cfg = self.config
        if c.ndim < 2 or c.shape[-2:] != (cfg.n_channels, cfg.n_sub):
            raise ValueError(
                f"codes must have shape [..., M={cfg.n_channels}, n_sub={cfg.n_sub}], got {c.shape}"
            )
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"codes must be integers, got {c.dtype}")
        c = c.astype(np.int64)
        if c.size and (c.min() < 0 or c.max() >= cfg.n_centroids):
            raise ValueError(f"codes must lie in [0, {cfg.n_centroids}), got range [{c.min()}, {c.max()}]")
        return c

    def decode(self, codes: ArrayLike) -> np.ndarray:
        """Reconstruct vectors [..., M, d] from codes [..., M, n_sub]."""
        cfg = self.config
        c = self.check_codes(codes)
        m_idx = np.arange(cfg.n_channels)[:, None]
        b_idx = np.arange(cfg.n_sub)[None, :]
        parts = self.codebooks[m_idx, b_idx, c]  # [..., M, n_sub, dsub]
        return parts.reshape(*c.shape[:-1], cfg.dim)

    @property
    def bytes_per_behaviour(self) -> int:
        return self.config.bytes_per_behaviour

    # ------------------------------------------------------------------ tables
    def adc_tables(self, target: ArrayLike, gammas: ArrayLike | Sequence[float]) -> np.ndarray:
        """Per-target tables T[j, b, c] = γ_j <q_b, e_{j,b,c}>, q = Σ_i γ_i x_t(i); shape [M, n_sub, C]."""
        cfg = self.config
        t = as_target(target, cfg.n_channels, cfg.dim)
        g = as_gammas(gammas, cfg.n_channels)
        return self._tables_for_query(merge(t, g), g)

    def _tables_for_query(self, query: np.ndarray, g: np.ndarray) -> np.ndarray:
        q = query.reshape(self.config.n_sub, self.config.dsub, 1).astype(np.float32, copy=False)
        inner = np.matmul(self.codebooks, q)[..., 0]  # [M, n_sub, C]
        inner *= g[:, None, None]
        return inner

    @property
    def sdc_pair_table(self) -> np.ndarray:
        """S[i, j, b, c, c'] = <e_{i,b,c}, e_{j,b,c'}>: the paper's O(M²·n_sub·C²) centroid table."""
        cfg = self.config
        size = cfg.n_channels**2 * cfg.n_sub * cfg.n_centroids**2
        if size > SDC_PAIR_TABLE_LIMIT:
            raise MemoryError(
                f"SDC pair table would hold {size} floats; use sdc_tables(), which then works from the"
                " decoded target (identical scores)"
            )
        if self._pair_table is None:
            self._pair_table = np.einsum("ibcs,jbes->ijbce", self.codebooks, self.codebooks).astype(
                np.float32
            )
        return self._pair_table

    def sdc_tables(self, target_codes: ArrayLike, gammas: ArrayLike | Sequence[float]) -> np.ndarray:
        """Per-target SDC tables [M, n_sub, C]: T[j, b, c'] = Σ_i γ_i γ_j S[i, j, b, c_t(i,b), c'].

        Summing these over the behaviour's codes gives exactly the paper's SDC score.
        """
        cfg = self.config
        tc = self.check_codes(target_codes)
        if tc.shape != (cfg.n_channels, cfg.n_sub):
            raise ValueError(f"target codes must be [M={cfg.n_channels}, n_sub={cfg.n_sub}], got {tc.shape}")
        g = as_gammas(gammas, cfg.n_channels)
        size = cfg.n_channels**2 * cfg.n_sub * cfg.n_centroids**2
        if size > SDC_PAIR_TABLE_LIMIT:
            return self._tables_for_query(merge(self.decode(tc), g), g)
        s = self.sdc_pair_table
        b_idx = np.arange(cfg.n_sub)
        rows = np.stack([s[i, :, b_idx, tc[i]] for i in range(cfg.n_channels)])  # [i, b, j, c']
        table = np.einsum("i,ibjc->jbc", g, rows) * g[:, None, None]
        return np.ascontiguousarray(table, dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write codebooks and config to one safetensors file, atomically (tmp file + os.replace)."""
        meta = {"config": json.dumps(asdict(self.config), sort_keys=True), "format": "seminar.MultiModalPQ/1"}
        with atomic_path(path) as tmp:
            save_file({"codebooks": self.codebooks}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> MultiModalPQ:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != "seminar.MultiModalPQ/1" or "config" not in meta:
            raise ValueError(f"{path} is not a saved MultiModalPQ (missing format/config metadata)")
        config = PQConfig(**json.loads(meta["config"]))
        return cls(config, load_file(str(path))["codebooks"])

    def quantization_mse(self, vectors: ArrayLike | Sequence[ArrayLike]) -> float:
        """Mean squared reconstruction error per coordinate (for checking that training worked)."""
        x = as_sequence(vectors, self.config.n_channels, self.config.dim)
        return float(np.mean((self.decode(self.encode(x)) - x) ** 2))
