"""Product quantization as the ranker's GSU at inference (``seminar evaluate --gsu pq``).

A trained SEMINAR (or TWIN, or SIM soft) GSU scores a behaviour by ``<u_target, Σ_m z_m>`` where
``z_0`` depends only on the behaviour's query id and ``z_m`` (m ≥ 1) only on its item id
(:class:`~seminar.models.search.BilinearSearch`). So each channel has a finite key table, one row
per id: exactly the "embedding table" the paper trains its per-channel codebooks on. In that form
(``layout="channels"``) every behaviour is held as M × n_sub codes, and the GSU's top-K is taken
over ADC scores (optionally re-ranked exactly on a shortlist), while the ESU and head are unchanged.

ADC with unit channel weights equals ``<u, Σ_m decode(code_m)>``, so for evaluation the relevance is
formed from per-id decoded keys (one matmul on the ranker's device); a test holds it equal to the
table look-ups of :class:`~seminar.retrieval.kernels.ADCEngine`, which the serving GSU scans with.

``layout="fused"`` (the default) quantizes what the score reads instead, the fused key Σ_m z_m,
with one set of codebooks (trained on the fused keys of sampled (query, item) pairs): at equal
bytes it recalls more than per-channel codes (docs/serving.md, "Which codes for the GSU"). A fused
key depends on the pair, not on one id, so each behaviour is encoded from its own key (at append
in serving, per batch in evaluation) instead of looked up in per-id code tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seminar.models.embedding import PairEmbedding
from seminar.models.ranker import Ranker
from seminar.models.search import NEG_INF, BilinearSearch, GeneralSearch, KeyTables, SearchInputs
from seminar.retrieval.gsu_config import MAX_DEFAULT_SUB as MAX_DEFAULT_SUB
from seminar.retrieval.gsu_config import PQGsuConfig as PQGsuConfig
from seminar.retrieval.gsu_config import PQLayout as PQLayout
from seminar.retrieval.pq import MultiModalPQ, PQConfig

PQ_FILE = "gsu_pq.safetensors"


FUSED_TRAINING_PAIRS = 50_000  # (query, item) pairs whose fused keys train the fused codebooks


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

    def fused_keys(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Fused keys [..., d] (the sum of the channels, what the GSU scores) of behaviours by their ids."""
        return self.query[queries] + self.items[items].sum(axis=-2)


def is_fused(pq: MultiModalPQ, keys: GsuKeyTables) -> bool:
    """Whether ``pq`` quantizes fused keys (one channel) rather than each of the keys' M ≥ 2 channels."""
    if pq.config.dim != keys.dim or pq.config.n_channels not in (1, keys.n_channels):
        raise ValueError(
            f"quantizer is for M={pq.config.n_channels}, d={pq.config.dim}; "
            f"the GSU keys have M={keys.n_channels} channels (or 1 fused), d={keys.dim}"
        )
    return pq.config.n_channels == 1


def encode_fused(pq: MultiModalPQ, keys: GsuKeyTables, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Codes [..., n_sub] of behaviours' fused keys (a fused quantizer: one channel)."""
    queries, items = np.asarray(queries), np.asarray(items)
    fused = keys.fused_keys(queries.reshape(-1), items.reshape(-1))
    return pq.encode_channel(0, fused).reshape(*queries.shape, pq.config.n_sub)


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
    """Train one product quantizer per channel on that channel's key table (faiss k-means), or with
    ``layout="fused"`` one quantizer on the fused keys of sampled pairs (:func:`fused_training_keys`).

    A channel with fewer distinct ids than centroids (a small query vocabulary) gets exact codes.
    """
    config = config or PQGsuConfig()
    fused = config.layout == "fused"
    pq_config = PQConfig(
        1 if fused else keys.n_channels,
        keys.dim,
        config.sub_vectors(keys.dim),
        config.n_centroids,
        n_iter=config.n_iter,
        seed=config.seed,
    )
    if fused:
        return MultiModalPQ.train([fused_training_keys(keys, config.seed)], pq_config)
    tables = [pad_table_rows(t, config.n_centroids) for t in keys.channel_tables()]
    return MultiModalPQ.train(tables, pq_config)


def fused_training_keys(keys: GsuKeyTables, seed: int, n: int = FUSED_TRAINING_PAIRS) -> np.ndarray:
    """Fused keys [n, d] of random pairs: n distinct random items (every item about n / Ni times when
    there are fewer), with no query half of the time and a random query otherwise (a history mixes
    browsing and searches)."""
    rng = np.random.default_rng(seed)
    n_items, n_queries = keys.items.shape[0] - 1, keys.query.shape[0] - 1
    items = 1 + rng.permutation(max(n, n_items))[:n] % max(n_items, 1)  # distinct ids while they last
    queries = np.where(rng.random(n) < 0.5, 0, rng.integers(1, max(n_queries, 1) + 1, n))
    if n_queries == 0:
        queries[:] = 0
    return np.ascontiguousarray(keys.fused_keys(queries, items), dtype=np.float32)


def encode_key_tables(pq: MultiModalPQ, keys: GsuKeyTables) -> tuple[np.ndarray, np.ndarray]:
    """Per-id codes: query [Nq+1, n_sub] and items [Ni+1, M-1, n_sub]; a behaviour's codes are its rows."""
    if is_fused(pq, keys):
        raise ValueError("a fused quantizer has no per-id codes: encode each behaviour (encode_fused)")
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
        self.keys = keys
        self.fused = is_fused(pq, keys)
        self.top_k, self.rerank_factor = top_k, rerank_factor
        if self.fused:  # no per-id tables: each behaviour is encoded from its fused key (decoded_keys)
            query_codes = np.zeros((0, 0), dtype=np.int64)
            item_codes = np.zeros((0, keys.n_channels - 1, 0), dtype=np.int64)
            decoded_query = decoded_items = np.zeros((0, keys.dim), dtype=np.float32)
        else:
            query_codes, item_codes = encode_key_tables(pq, keys)
            channels = range(1, keys.n_channels)
            decoded_query = pq.decode_channel(0, query_codes)
            decoded_items = np.asarray(sum(pq.decode_channel(m, item_codes[:, m - 1]) for m in channels))
        self.register_buffer("query_codes", torch.from_numpy(query_codes.astype(np.int64)), persistent=False)
        self.register_buffer("item_codes", torch.from_numpy(item_codes.astype(np.int64)), persistent=False)
        self.register_buffer("decoded_query", torch.from_numpy(decoded_query), persistent=False)
        self.register_buffer("decoded_items", torch.from_numpy(decoded_items), persistent=False)
        self.register_buffer("exact_query", torch.from_numpy(keys.query.copy()), persistent=False)
        self.register_buffer("exact_items", torch.from_numpy(keys.items.sum(axis=1)), persistent=False)

    def esu_tables(self, pair: PairEmbedding) -> KeyTables:
        return self.exact.esu_tables(pair)

    def esu_target(self, target: PairEmbedding) -> Tensor:
        return self.exact.esu_target(target)

    def codes(self, hist_queries: Tensor, hist_items: Tensor) -> Tensor:
        """Codes [..., M, n_sub] of behaviours: the query channel's and the item channels' codes (a
        fused quantizer: [..., 1, n_sub], each behaviour's fused key encoded)."""
        if self.fused:
            codes = encode_fused(self.pq, self.keys, hist_queries.cpu().numpy(), hist_items.cpu().numpy())
            return torch.from_numpy(codes.astype(np.int64)).unsqueeze(-2).to(hist_queries.device)
        return torch.cat([self.query_codes[hist_queries].unsqueeze(-2), self.item_codes[hist_items]], dim=-2)

    def decoded_keys(self, hist_queries: Tensor, hist_items: Tensor) -> Tensor:
        """What the codes of behaviours [..., L] stand for: the sum of the decoded channels [..., L, d]
        (fused: the decoded fused key)."""
        if self.fused:
            codes = self.codes(hist_queries, hist_items)[..., 0, :].cpu().numpy()
            decoded = self.pq.decode_channel(0, codes.reshape(-1, codes.shape[-1]))
            return torch.from_numpy(decoded.reshape(*codes.shape[:-1], -1)).to(hist_queries.device)
        return self.decoded_query[hist_queries] + self.decoded_items[hist_items]

    def approximate(self, inputs: SearchInputs, u: Tensor | None = None) -> Tensor:
        """ADC relevance [B, C, L] of every behaviour against every target (``u``: their query vectors)."""
        u = self.exact.query_vectors(inputs) if u is None else u
        keys = self.decoded_keys(inputs.hist_queries, inputs.hist_items)
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
