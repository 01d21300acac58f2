"""Reference rankers: popularity, item-kNN and SASRec, the yardsticks the two-stage rankers must beat.

Popularity and item-kNN are fitted by counting over the training histories (every behaviour except
each user's last two, which are validation and test), so they never see a held-out positive. Their
fitted tables are persistent buffers: a model constructed from the feature tables alone loads a
saved state dict like any trained ranker. SASRec (Kang & McAuley 2018) is the standard causal
self-attention next-item model, trained on many targets per window at once.

Every ranker scores an evaluation batch with ``score_candidates(batch) -> [B, C]`` (higher = better).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminar.data.loader import training_history
from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import RankerConfig
from seminar.train.losses import ranking_loss

# Cap on the nonzeros of one block of the co-occurrence product (bounds item-kNN's fitting memory).
KNN_BLOCK_NONZEROS = 20_000_000
# Positional embeddings of SASRec; positions further from the end of the window share the last one.
MAX_POSITIONS = 512


class PopularityRanker(nn.Module):
    """Scores an item by how often it occurs in the training histories: the floor every model must clear."""

    many_targets = False
    trainable = False

    def __init__(self, tables: FeatureTables, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("counts", torch.zeros(tables.n_items + 1, dtype=torch.float32))

    def fit(self, ds: SeminarDataset) -> None:
        _, items = training_history(ds)
        counts = np.bincount(items, minlength=self.counts.numel())[: self.counts.numel()]
        self.counts.copy_(torch.from_numpy(counts.astype(np.float32)))

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        return self.counts[batch["cand_items"]]


def item_neighbours(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``width`` most cosine-similar items over binary user histories.

    co(i, j) counts the users who have both i and j (i != j); sim = co / sqrt(n_i n_j) with n_i the
    users who have i. Ties go to the smaller item id. Returns ids [n_items + 1, width] sorted ascending
    (padded with the sentinel n_items + 1, which keeps ``searchsorted`` exact) and their sims (0 pad).
    The product is taken in blocks of item rows so that no block holds more than KNN_BLOCK_NONZEROS
    entries: popular items co-occur with almost everything, and the whole product need not fit at once.
    """
    sentinel = n_items + 1
    ids = np.full((n_items + 1, width), sentinel, dtype=np.int64)
    sims = np.zeros((n_items + 1, width), dtype=np.float32)
    shape = (n_users, n_items + 1)
    user_item = sp.csr_matrix((np.ones(users.size, dtype=np.float64), (users, items)), shape=shape)
    user_item.sum_duplicates()
    user_item.data[:] = 1.0  # binary: a user who saw an item twice counts once
    item_user = user_item.T.tocsr()
    n = np.asarray(user_item.sum(axis=0)).ravel()
    # upper bound of each item row's nonzeros in the product: the summed history sizes of its users
    rows_bound = item_user @ np.asarray(user_item.sum(axis=1)).ravel()
    offset = np.concatenate([[0.0], np.cumsum(rows_bound)])
    start = 0
    while start <= n_items:
        stop = int(np.searchsorted(offset, offset[start] + KNN_BLOCK_NONZEROS, side="right")) - 1
        stop = min(max(stop, start + 1), n_items + 1)
        _keep_top(item_user[start:stop] @ user_item, start, n, ids, sims)
        start = stop
    return ids, sims


def span_groups(users: np.ndarray, span: int) -> tuple[np.ndarray, int]:
    """Each behaviour's group when a user's history (``users`` grouped, in order) is cut into spans
    of ``span`` consecutive behaviours, and the number of groups: item-kNN over groups counts two
    items together only when they lie in one span, so the fit costs O(Σ n_u · span), not O(Σ n_u²)."""
    position = _within_row_rank(users)
    chunk = position // span
    new_group = np.ones(users.size, dtype=bool)
    new_group[1:] = (users[1:] != users[:-1]) | (chunk[1:] != chunk[:-1])
    groups = np.cumsum(new_group) - 1
    return groups.astype(np.int64), int(groups[-1] + 1) if groups.size else 0


def _within_row_rank(rows: np.ndarray) -> np.ndarray:
    """Rank of each entry among the entries of its row, for entries already grouped by row."""
    _, first, counts = np.unique(rows, return_index=True, return_counts=True)
    return np.arange(rows.size) - np.repeat(first, counts)


def _keep_top(block: sp.csr_matrix, start: int, n: np.ndarray, ids: np.ndarray, sims: np.ndarray) -> None:
    """Write the top neighbours of the co-occurrence rows ``block`` (item rows from ``start``) into
    ``ids``/``sims``: best first by sim, then by smaller id; then stored by ascending id."""
    rows = np.repeat(np.arange(block.shape[0], dtype=np.int64) + start, np.diff(block.indptr))
    cols = block.indices.astype(np.int64)
    off_diagonal = rows != cols
    rows, cols, co = rows[off_diagonal], cols[off_diagonal], block.data[off_diagonal]
    sim = co / np.sqrt(n[rows] * n[cols])
    order = np.lexsort((cols, -sim, rows))
    rows, cols, sim = rows[order], cols[order], sim[order]
    top = _within_row_rank(rows) < ids.shape[1]
    rows, cols, sim = rows[top], cols[top], sim[top]
    order = np.lexsort((cols, rows))
    rows, cols, sim = rows[order], cols[order], sim[order]
    slot = _within_row_rank(rows)
    ids[rows, slot] = cols
    sims[rows, slot] = sim


class ItemKnnRanker(nn.Module):
    """Item-item cosine kNN: a candidate scores the summed similarity to the user's recent items.

    Only each item's ``knn_neighbours`` best neighbours are kept (sorted by id), so scoring looks
    candidates up with ``searchsorted`` in O(B * N * (M + C)) memory, never a row over all items.
    """

    many_targets = False
    trainable = False

    def __init__(self, tables: FeatureTables, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.history = int(getattr(config, "knn_history", 20))
        width = max(1, min(int(getattr(config, "knn_neighbours", 200)), tables.n_items))
        self.register_buffer("neighbour_ids", torch.full((tables.n_items + 1, width), tables.n_items + 1))
        self.register_buffer("neighbour_sims", torch.zeros(tables.n_items + 1, width))

    def fit(self, ds: SeminarDataset) -> None:
        users, items = training_history(ds)
        n_groups = ds.n_users
        span = getattr(self.config, "knn_span", None)
        if span is not None:
            users, n_groups = span_groups(users, span)
        rows, width = self.neighbour_ids.shape
        ids, sims = item_neighbours(users, items, n_groups, rows - 1, width)
        self.neighbour_ids.copy_(torch.from_numpy(ids))
        self.neighbour_sims.copy_(torch.from_numpy(sims))

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        hist, mask, cand = batch["hist_items"], batch["mask"], batch["cand_items"]
        # the last `history` real behaviours, wherever the mask puts them (padding ranks below them)
        positions = torch.arange(hist.shape[1], device=hist.device).expand_as(hist)
        keep = torch.where(mask, positions, -1).topk(min(self.history, hist.shape[1]), dim=1).indices
        items, real = hist.gather(1, keep), mask.gather(1, keep)  # B N
        ids, sims = self.neighbour_ids[items], self.neighbour_sims[items]  # B N M, ids ascending
        wanted = cand[:, None, :].expand(-1, items.shape[1], -1).contiguous()  # B N C
        slot = torch.searchsorted(ids, wanted).clamp_max(ids.shape[-1] - 1)
        found = (ids.gather(2, slot) == wanted) & real[..., None]
        return torch.where(found, sims.gather(2, slot), torch.zeros((), device=sims.device)).sum(1)


class _Block(nn.Module):
    """One pre-LN transformer block: masked multi-head self-attention, then a pointwise feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.attention_norm, self.feed_forward_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """x [B, W, d]; allowed [B, W, W] (query, key) True where attention may look, none empty."""
        b, w, d = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(b, w, 3, self.heads, d // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed[:, None],
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, w, d)))
        return x + self.drop(self.feed_forward(self.feed_forward_norm(x)))


class SasRec(nn.Module):
    """SASRec: causal self-attention over the item ids of a window; score(i) = <h, e_i>, e shared.

    Positions are counted backwards from the end of the window (0 = last slot), so that the newest
    item of an evaluation window gets the same positional embedding as in original SASRec's
    right-aligned windows. In a many-target training buffer a target's history is a band ending
    inside the buffer, so there its positions are shifted by the distance to the buffer's end: the
    two paths agree exactly only for the buffer's last target and with a single layer (stacked
    layers widen the band's receptive field). Positions beyond MAX_POSITIONS share the last embedding.
    """

    many_targets = True
    trainable = True

    def __init__(self, tables: FeatureTables, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        dim, dropout = config.dim, float(getattr(config, "dropout", 0.2))
        with torch.random.fork_rng():  # seeded initialisation, the caller's RNG untouched
            torch.manual_seed(config.seed)
            self.items = nn.Embedding(tables.n_items + 1, dim, padding_idx=0)
            self.positions = nn.Embedding(MAX_POSITIONS, dim)
            self.blocks = nn.ModuleList(
                _Block(dim, config.heads, dropout) for _ in range(int(getattr(config, "layers", 2)))
            )
            self.norm = nn.LayerNorm(dim)
            self.drop = nn.Dropout(dropout)
            for table in (self.items, self.positions):
                nn.init.normal_(table.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()

    def encode(self, items: Tensor, mask: Tensor, band: int | None = None) -> Tensor:
        """Hidden states [B, W, d]: position i attends to real j with i - band < j <= i (all j <= i when
        ``band`` is None). Padded slots enter as zeros and attend to themselves only, so they never
        yield NaN and never reach a real slot."""
        w = items.shape[1]
        slots = torch.arange(w, device=items.device)
        from_end = (w - 1 - slots).clamp_max(MAX_POSITIONS - 1)
        x = (self.items(items) + self.positions(from_end)) * mask[..., None]
        x = self.drop(x)
        lag = slots[:, None] - slots[None, :]  # query - key
        causal = (lag >= 0) & (lag < (band if band is not None else w))
        allowed = (causal & mask[:, None, :]) | torch.eye(w, dtype=torch.bool, device=items.device)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def target_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Positive [B, T] and negative [B, T, N] logits of a many-target batch: target t is predicted
        from the state at buffer position ``target_ends - 1``, which sees the band of ``max_length``."""
        hist, ends = batch["hist_items"], batch["target_ends"]
        band = hist.shape[1] - ends.shape[1] + 1
        states = self.encode(hist, batch["mask"], band)
        index = (ends - 1).clamp(0, hist.shape[1] - 1)
        h = states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))  # B T d
        positive = (h * self.items(batch["target_items"])).sum(-1)
        negative = torch.einsum("btd,btnd->btn", h, self.items(batch["neg_items"]))
        return positive, negative

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss over every valid target of the buffer (``ranking_loss``, sampled negatives)."""
        kind = getattr(self.config, "loss", "softmax")
        positive, negative = self.target_logits(batch)
        loss = ranking_loss(
            positive,
            negative,
            batch["target_valid"],
            kind=kind,
            positive_log_q=batch.get("target_log_q"),
            negative_log_q=batch.get("neg_log_q"),
        )
        return loss, {kind: loss.detach()}

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.encode(batch["hist_items"], batch["mask"])[:, -1]  # the state after the newest slot
        return torch.einsum("bd,bcd->bc", h, self.items(batch["cand_items"]))
