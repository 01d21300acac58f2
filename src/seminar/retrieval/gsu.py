"""Product quantization as the ranker's GSU at inference (``seminar evaluate --gsu pq``).

A trained SEMINAR (or TWIN, or SIM soft) GSU scores a behaviour by ``<u_target, Σ_m z_m>`` where
``z_0`` depends only on the behaviour's query id and ``z_m`` (m ≥ 1) only on its item id
(:class:`~seminar.models.search.BilinearSearch`). So each channel has a finite key table, one row
per id: exactly the "embedding table" the paper trains its per-channel codebooks on. Every
behaviour is then held as M × n_sub codes, and the GSU's top-K is taken over ADC scores (optionally
re-ranked exactly on a shortlist), while the ESU and head are unchanged.

ADC with unit channel weights equals ``<u, Σ_m decode(code_m)>``, so for evaluation the relevance is
formed from per-id decoded keys (one matmul on the ranker's device); a test holds it equal to the
table look-ups of :class:`~seminar.retrieval.kernels.ADCEngine`, which the serving GSU scans with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seminar.errors import InvalidValue
from seminar.models.embedding import PairEmbedding
from seminar.models.ranker import Ranker
from seminar.models.search import NEG_INF, BilinearSearch, GeneralSearch, KeyTables, SearchInputs
from seminar.parsing import described
from seminar.retrieval.pq import MultiModalPQ, PQConfig

PQ_FILE = "gsu_pq.safetensors"


MAX_DEFAULT_SUB = 32  # the default n_sub: the largest divisor of the key dimension up to this


@dataclass(frozen=True)
class PQGsuConfig:
    """Codes of the GSU keys: 8-bit codes and a 4·K exact re-rank by default.

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

    def __post_init__(self) -> None:
        for name in ("n_centroids", "n_iter"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be ≥ 1, got {getattr(self, name)}")
        if self.n_sub is not None and self.n_sub < 1:
            raise InvalidValue("n_sub", f"must be ≥ 1, got {self.n_sub}")
        for name in ("rerank_factor", "seed"):
            if getattr(self, name) < 0:
                raise InvalidValue(name, f"must be ≥ 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    def sub_vectors(self, dim: int) -> int:
        """``n_sub``, or the default for keys of dimension ``dim``."""
        if self.n_sub is not None:
            return self.n_sub
        return max(n for n in range(1, min(dim, MAX_DEFAULT_SUB) + 1) if dim % n == 0)


@dataclass
class GsuKeyTables:
    """Per-id keys of a trained bilinear GSU: query [Nq+1, d] and item [Ni+1, M-1, d]; row 0 is padding."""

    query: np.ndarray
    items: np.ndarray

    @property
    def n_channels(self) -> int:
        return 1 + self.items.shape[1]

    @property
    def dim(self) -> int:
        return self.query.shape[1]

    def channel_tables(self) -> list[np.ndarray]:
        """The embedding table of each channel (real ids only) that its codebooks are trained on."""
        items = [np.ascontiguousarray(self.items[1:, m]) for m in range(self.items.shape[1])]
        return [self.query[1:], *items]

    def behaviour_vectors(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Key channels [L, M, d] of behaviours given by their query and item ids."""
        return np.concatenate([self.query[queries][:, None, :], self.items[items]], axis=1)


def bilinear_search(ranker: Ranker) -> BilinearSearch:
    search = ranker.search
    if isinstance(search, PQSearch):
        search = search.exact
    if not isinstance(search, BilinearSearch):
        raise ValueError(
            f"the PQ GSU needs a model whose GSU is an inner product (seminar, twin, sim_soft); "
            f"this run is {ranker.config.model!r}"
        )
    return search


@torch.no_grad()
def gsu_key_tables(ranker: Ranker) -> GsuKeyTables:
    """Every query's and item's GSU key channels under the ranker's current weights."""
    was_training = ranker.training
    ranker.eval()
    try:
        query, items = bilinear_search(ranker).key_tables(ranker.embedding.id_tables())
    finally:
        ranker.train(was_training)
    return GsuKeyTables(query.float().cpu().numpy(), items.float().cpu().numpy())


@torch.no_grad()
def target_query_vectors(
    ranker: Ranker, queries: np.ndarray, items: np.ndarray, id_tables: PairEmbedding | None = None
) -> np.ndarray:
    """The GSU's query vector u [N, d] of (query, item) targets (``id_tables``: see ``encode``)."""
    q = torch.as_tensor(queries, dtype=torch.long)[None]
    i = torch.as_tensor(items, dtype=torch.long)[None]
    target = ranker.embedding.encode(q, i, id_tables)
    empty = torch.zeros((1, 0), dtype=torch.long)
    inputs = SearchInputs(target, i, target, empty, empty, empty.bool(), target.fused())
    return bilinear_search(ranker).query_vectors(inputs)[0].float().numpy()


def pad_table_rows(table: np.ndarray, rows: int) -> np.ndarray:
    """Repeat a table smaller than the codebook, so k-means keeps every row as a centroid (exact codes)."""
    if table.shape[0] >= rows:
        return table
    return np.ascontiguousarray(np.resize(table, (rows, table.shape[1])))


def fit_gsu_pq(keys: GsuKeyTables, config: PQGsuConfig | None = None) -> MultiModalPQ:
    """Train one product quantizer per channel on that channel's key table (faiss k-means).

    A channel with fewer distinct ids than centroids (a small query vocabulary) gets exact codes.
    """
    config = config or PQGsuConfig()
    pq_config = PQConfig(
        keys.n_channels,
        keys.dim,
        config.sub_vectors(keys.dim),
        config.n_centroids,
        n_iter=config.n_iter,
        seed=config.seed,
    )
    tables = [pad_table_rows(t, config.n_centroids) for t in keys.channel_tables()]
    return MultiModalPQ.train(tables, pq_config)


def encode_key_tables(pq: MultiModalPQ, keys: GsuKeyTables) -> tuple[np.ndarray, np.ndarray]:
    """Per-id codes: query [Nq+1, n_sub] and items [Ni+1, M-1, n_sub]; a behaviour's codes are its rows."""
    if (pq.config.n_channels, pq.config.dim) != (keys.n_channels, keys.dim):
        raise ValueError(
            f"quantizer is for M={pq.config.n_channels}, d={pq.config.dim}; "
            f"the GSU keys have M={keys.n_channels}, d={keys.dim}"
        )
    items = [pq.encode_channel(m, keys.items[:, m - 1]) for m in range(1, keys.n_channels)]
    return pq.encode_channel(0, keys.query), np.stack(items, axis=1)


class PQSearch(GeneralSearch):
    """The ranker's GSU with behaviours held as PQ codes: ADC top-R, then exact re-rank to K.

    With a recency bias (a ``gsu_recency`` ranker) both stages rank by score plus bias: the
    shortlist is the top R of ADC + bias, re-ranked by exact + bias, as the exact GSU ranks.
    """

    scores_content = True  # it is a bilinear GSU, held as codes

    def __init__(
        self, exact: BilinearSearch, pq: MultiModalPQ, keys: GsuKeyTables, top_k: int, rerank_factor: int
    ) -> None:
        super().__init__()
        self.exact = exact
        self.pq = pq
        self.top_k, self.rerank_factor = top_k, rerank_factor
        query_codes, item_codes = encode_key_tables(pq, keys)
        channels = range(1, keys.n_channels)
        decoded_query = pq.decode_channel(0, query_codes)
        decoded_items = sum(pq.decode_channel(m, item_codes[:, m - 1]) for m in channels)
        self.register_buffer("query_codes", torch.from_numpy(query_codes.astype(np.int64)), persistent=False)
        self.register_buffer("item_codes", torch.from_numpy(item_codes.astype(np.int64)), persistent=False)
        self.register_buffer("decoded_query", torch.from_numpy(decoded_query), persistent=False)
        self.register_buffer("decoded_items", torch.from_numpy(np.asarray(decoded_items)), persistent=False)
        self.register_buffer("exact_query", torch.from_numpy(keys.query.copy()), persistent=False)
        self.register_buffer("exact_items", torch.from_numpy(keys.items.sum(axis=1)), persistent=False)

    def esu_tables(self, pair: PairEmbedding) -> KeyTables:
        return self.exact.esu_tables(pair)

    def esu_target(self, target: PairEmbedding) -> Tensor:
        return self.exact.esu_target(target)

    def codes(self, hist_queries: Tensor, hist_items: Tensor) -> Tensor:
        """Codes [..., M, n_sub] of behaviours: the query channel's and the item channels' codes."""
        return torch.cat([self.query_codes[hist_queries].unsqueeze(-2), self.item_codes[hist_items]], dim=-2)

    def approximate(self, inputs: SearchInputs, u: Tensor | None = None) -> Tensor:
        """ADC relevance [B, C, L] of every behaviour against every target (``u``: their query vectors)."""
        u = self.exact.query_vectors(inputs) if u is None else u
        keys = self.decoded_query[inputs.hist_queries] + self.decoded_items[inputs.hist_items]
        return torch.einsum("bcd,bld->bcl", u.float(), keys).masked_fill(~inputs.target_mask, NEG_INF)

    def relevance(self, inputs: SearchInputs) -> Tensor:
        return self.biased_relevance(inputs, None)

    def biased_relevance(
        self, inputs: SearchInputs, bias: Tensor | None, history_tables: KeyTables | None = None
    ) -> Tensor:
        """ADC (+ bias) of every behaviour, or with a re-rank: exact (+ bias) on the ADC (+ bias)
        top R and -inf elsewhere. ``history_tables`` is unused: codes are of the GSU's own keys."""
        u = self.exact.query_vectors(inputs).float()
        approx = self.approximate(inputs, u)
        if bias is not None:
            approx = approx + bias
        length = approx.shape[-1]
        if self.rerank_factor <= 0:
            return approx
        shortlist = approx.topk(min(self.rerank_factor * self.top_k, length), dim=-1).indices  # B C R
        # exact scores of the shortlisted behaviours only; the rest stay out of the top-K
        b, c, r = shortlist.shape
        flat = shortlist.reshape(b, c * r)
        queries = torch.gather(inputs.hist_queries, 1, flat).view(b, c, r)
        items = torch.gather(inputs.hist_items, 1, flat).view(b, c, r)
        keys = self.exact_query[queries] + self.exact_items[items]  # B C R d
        exact = torch.einsum("bcd,bcrd->bcr", u, keys)
        if bias is not None:
            exact = exact + torch.gather(bias.expand(b, c, -1), 2, shortlist)
        real = torch.gather(inputs.mask, 1, flat).view(b, c, r)
        exact = exact.masked_fill(~real, NEG_INF)
        return torch.full_like(approx, NEG_INF).scatter_(2, shortlist, exact)


def attach_pq_gsu(
    ranker: Ranker, config: PQGsuConfig | None = None, pq: MultiModalPQ | None = None
) -> MultiModalPQ:
    """Replace the ranker's GSU by its PQ version (inference only); returns the quantizer used."""
    config = config or PQGsuConfig()
    exact = bilinear_search(ranker)
    keys = gsu_key_tables(ranker)
    pq = pq or fit_gsu_pq(keys, config)
    # the GSU picks K - R when the ranker always keeps its last R behaviours; it shortlists for those
    picked = max(1, ranker.config.top_k - ranker.config.recent)
    search = PQSearch(exact, pq, keys, picked, config.rerank_factor)
    device = next(ranker.parameters()).device
    ranker.search = search.to(device)
    ranker.eval()
    return pq


def detach_pq_gsu(ranker: Ranker) -> None:
    """Put the exact GSU back."""
    if isinstance(ranker.search, PQSearch):
        ranker.search = ranker.search.exact


def save_gsu_pq(pq: MultiModalPQ, run_dir: Path | str) -> Path:
    """Store the quantizer beside the run's checkpoints (atomic), for serving and re-use."""
    path = Path(run_dir) / PQ_FILE
    pq.save(path)
    return path
