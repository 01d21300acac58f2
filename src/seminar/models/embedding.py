"""Per-channel embeddings of (query, item) pairs, the gating network and the λ query/item fusion.

A behaviour has up to four channels: ``query`` (query id embedding plus projected query text or
token bag; the empty query is id 1 with its own embedding), ``text`` (projected item text vector
or caption token bag), ``image`` (projected image vector) and ``attributes`` (item id plus pooled
attribute ids, projected). A channel whose inputs the dataset lacks is simply absent.

Fusion (paper eq. 1): ``x = λ x_query + (1-λ) Σ_i w_i x_item(i) = Σ_m γ_m x(m)`` with ``w`` the
softmax output of a gating network (per behaviour, or one global vector), so Σγ = 1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminar.models.features import FeatureTables

Gate = Literal["behaviour", "global"]
ID_INIT_STD = 0.05


def item_channel_names(tables: FeatureTables) -> list[str]:
    """The item channels built from these tables: text and image when present, attributes always
    (the item id plus its attribute values)."""
    names = []
    has_tokens = tables.item_tokens is not None and tables.query_tokens is not None
    if tables.item_text_vectors is not None or has_tokens:
        names.append("text")
    if tables.item_image_vectors is not None:
        names.append("image")
    return [*names, "attributes"]


class BehaviourEmbedding(nn.Module):
    def __init__(
        self, tables: FeatureTables, dim: int = 64, gate: Gate = "behaviour", fusion_lambda: float = 0.5
    ) -> None:
        super().__init__()
        if not 0.0 <= fusion_lambda <= 1.0:
            raise ValueError(f"fusion λ must lie in [0, 1], got {fusion_lambda}")
        self.dim, self.fusion_lambda, self.gate_kind = dim, fusion_lambda, gate
        self.query_ids = nn.Embedding(tables.n_queries + 1, dim, padding_idx=0)
        self.item_ids = nn.Embedding(tables.n_items + 1, dim, padding_idx=0)
        self.attribute_ids = nn.EmbeddingBag(max(tables.n_attributes, 1) + 1, dim, mode="mean", padding_idx=0)
        self.register_buffer("item_attributes", tables.item_attributes, persistent=False)
        self.channels: list[str] = ["query"]

        self.token_bag = None
        if tables.item_tokens is not None and tables.query_tokens is not None:
            self.token_bag = nn.EmbeddingBag(tables.n_tokens + 1, dim, mode="mean", padding_idx=0)
            self.register_buffer("item_tokens", tables.item_tokens, persistent=False)
            self.register_buffer("query_tokens", tables.query_tokens, persistent=False)
        self.W_q = self._content("query_content", tables.query_vectors)
        self.W_t = self._content("item_text_content", tables.item_text_vectors)
        self.W_i = self._content("item_image_content", tables.item_image_vectors)
        self.channels += item_channel_names(tables)
        self.W_a = nn.Linear(2 * dim, dim)
        n_item = len(self.channels) - 1
        self.gate = (
            nn.Linear(n_item * dim, n_item) if gate == "behaviour" else nn.Parameter(torch.zeros(n_item))
        )
        self._init_ids()

    def _content(self, name: str, vectors: Tensor | None) -> nn.Linear | None:
        """Register content vectors as a buffer (inputs, never re-initialised) and their projection."""
        if vectors is None:
            return None
        self.register_buffer(name, vectors.float(), persistent=False)
        return nn.Linear(vectors.shape[1], self.dim)

    def _init_ids(self) -> None:
        """Initialise learned id embeddings only; content buffers are left exactly as loaded."""
        for table in (self.query_ids, self.item_ids):
            nn.init.normal_(table.weight, std=ID_INIT_STD)
            with torch.no_grad():
                table.weight[0].zero_()
        nn.init.normal_(self.attribute_ids.weight, std=ID_INIT_STD)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def _bag(self, bag: nn.EmbeddingBag, ids: Tensor) -> Tensor:
        """Mean of the bag rows for ids [..., T] (all-padding rows give zeros)."""
        flat = ids.reshape(-1, ids.shape[-1])
        return bag(flat).view(*ids.shape[:-1], self.dim)

    def query_channel(self, queries: Tensor) -> Tensor:
        """Query channel [..., d] of query ids."""
        query = self.query_ids(queries)
        if self.W_q is not None:
            query = query + self.W_q(self.query_content[queries])
        if self.token_bag is not None:
            query = query + self._bag(self.token_bag, self.query_tokens[queries])
        return query

    def item_channels(self, items: Tensor) -> Tensor:
        """Item channels [..., M, d] (text, image, attributes as present) of item ids."""
        parts = []
        if "text" in self.channels:
            parts.append(
                self.W_t(self.item_text_content[items])
                if self.W_t is not None
                else self._bag(self.token_bag, self.item_tokens[items])
            )
        if self.W_i is not None:
            parts.append(self.W_i(self.item_image_content[items]))
        pooled = self._bag(self.attribute_ids, self.item_attributes[items])
        parts.append(self.W_a(torch.cat([self.item_ids(items), pooled], dim=-1)))
        return torch.stack(parts, dim=-2)

    def item_weights(self, item_channels: Tensor) -> Tensor:
        """Gate w [..., M] over item channels (softmax; sums to 1)."""
        if isinstance(self.gate, nn.Linear):
            logits = self.gate(item_channels.flatten(-2))
        else:
            logits = self.gate.expand(*item_channels.shape[:-2], -1)
        return torch.softmax(logits, dim=-1)

    def forward(self, queries: Tensor, items: Tensor) -> Tensor:
        """Channel embeddings [..., C, d] of (query id, item id) pairs of any leading shape."""
        return torch.cat([self.query_channel(queries).unsqueeze(-2), self.item_channels(items)], dim=-2)

    def weights(self, channels: Tensor) -> Tensor:
        """γ [..., C]: λ for the query channel, (1-λ)·softmax(gate) over item channels; sums to 1."""
        w = self.item_weights(channels[..., 1:, :]) * (1.0 - self.fusion_lambda)
        return torch.cat([torch.full_like(w[..., :1], self.fusion_lambda), w], dim=-1)

    @staticmethod
    def fuse(channels: Tensor, gamma: Tensor) -> Tensor:
        """Σ_m γ_m x(m): [..., C, d] x [..., C] -> [..., d]."""
        return (channels * gamma.unsqueeze(-1)).sum(dim=-2)

    def pairs(self, queries: Tensor, items: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(channels [..., C, d], γ [..., C], fused [..., d]) of (query, item) pairs, materialised."""
        pair = self.encode(queries, items)
        return pair.channels(), pair.gamma(), pair.fused()

    def encode(self, queries: Tensor, items: Tensor, id_tables: PairEmbedding | None = None) -> PairEmbedding:
        """Embed (query, item) pairs lazily: channels once per distinct id, gathered only on demand.

        A channel depends only on the query id or only on the item id, so every quantity a model
        needs (fused vector, item-side fusion, per-channel projections) can be formed on the
        distinct ids and gathered as [..., d], never materialising [..., C, d] for long histories.
        ``id_tables`` (:meth:`id_tables`, computed once by a caller that scores often with fixed
        weights, as serving does) are looked up instead of recomputing the channels.
        """
        q_ids, q_inverse = torch.unique(queries, return_inverse=True)
        i_ids, i_inverse = torch.unique(items, return_inverse=True)
        if id_tables is not None:
            query = id_tables.query_table[q_ids]
            item_channels, item_weight = id_tables.item_table[i_ids], id_tables.item_weight[i_ids]
        else:
            query, item_channels = self.query_channel(q_ids), self.item_channels(i_ids)
            item_weight = self.item_weights(item_channels)
        return PairEmbedding(query, q_inverse, item_channels, item_weight, i_inverse, self.fusion_lambda)

    def id_tables(self) -> PairEmbedding:
        """Every query id and every item id embedded once (row = id), for per-id key tables."""
        queries = torch.arange(self.query_ids.num_embeddings, device=self.query_ids.weight.device)
        items = torch.arange(self.item_ids.num_embeddings, device=self.item_ids.weight.device)
        item_channels = self.item_channels(items)
        return PairEmbedding(
            self.query_channel(queries),
            queries,
            item_channels,
            self.item_weights(item_channels),
            items,
            self.fusion_lambda,
        )


class PairEmbedding:
    """Embeddings of (query, item) pairs held as per-distinct-id tables plus inverse indices."""

    def __init__(
        self,
        query_table: Tensor,
        query_inverse: Tensor,
        item_table: Tensor,
        item_weight: Tensor,
        item_inverse: Tensor,
        fusion_lambda: float,
    ) -> None:
        self.query_table, self.query_inverse = query_table, query_inverse  # [Uq, d], [...]
        self.item_table, self.item_weight = item_table, item_weight  # [Ui, M, d], [Ui, M]
        self.item_inverse, self.fusion_lambda = item_inverse, fusion_lambda

    def latest(self, n: int) -> PairEmbedding:
        """The same pairs' last ``n`` positions along the last axis (the tables shared, not copied)."""
        return PairEmbedding(
            self.query_table,
            self.query_inverse[..., -n:],
            self.item_table,
            self.item_weight,
            self.item_inverse[..., -n:],
            self.fusion_lambda,
        )

    @staticmethod
    def _gather(table: Tensor, inverse: Tensor) -> Tensor:
        """Rows of a [U, d] table (an embedding lookup: its backward is much cheaper than indexing's)."""
        return F.embedding(inverse, table)

    def query(self) -> Tensor:
        """Query channel [..., d]."""
        return self._gather(self.query_table, self.query_inverse)

    def item(self) -> Tensor:
        """Item-side fusion Σ_i w_i x_item(i) [..., d] (w sums to 1)."""
        table = (self.item_table * self.item_weight.unsqueeze(-1)).sum(dim=-2)
        return self._gather(table, self.item_inverse)

    def fused(self) -> Tensor:
        """x = λ x_query + (1-λ) Σ_i w_i x_item(i) [..., d]."""
        lam = self.fusion_lambda
        item_part = (self.item_table * self.item_weight.unsqueeze(-1)).sum(dim=-2) * (1.0 - lam)
        return lam * self.query() + self._gather(item_part, self.item_inverse)

    def _inverse_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Distinct-row indices (query, item) [B, C, K] of the behaviours at ``positions`` [B, C, K]."""
        b, c, k = positions.shape
        flat = positions.reshape(b, c * k)
        queries = torch.gather(self.query_inverse, 1, flat).view(b, c, k)
        return queries, torch.gather(self.item_inverse, 1, flat).view(b, c, k)

    def fused_at(self, positions: Tensor) -> Tensor:
        """Fused vectors [B, C, K, d] of the behaviours at ``positions`` [B, C, K] (the ESU's keys).

        Gathers only the selected rows, so the ESU never needs the whole fused history [B, L, d].
        """
        return self.sum_at(self.weighted_channel_tables(), positions)

    def sum_all(self, tables: tuple[Tensor, Tensor]) -> Tensor:
        """Channel-summed rows of :meth:`weighted_channel_tables` for every pair: [..., d]."""
        query, items = tables
        return self._gather(query, self.query_inverse) + self._gather(items.sum(dim=1), self.item_inverse)

    def sum_at(self, tables: tuple[Tensor, Tensor], positions: Tensor) -> Tensor:
        """Channel-summed rows of :meth:`weighted_channel_tables` at ``positions`` [B, C, K]: [B, C, K, d].

        Without gradients (evaluation, serving), when the targets keep more slots than the
        sequences hold, each behaviour's sum is formed once (:meth:`sum_all`) and gathered: one
        gather of C·K rows instead of two and an addition. The same additions, so the same values.
        Training keeps the per-slot form, whose gradients accumulate in the order they always did.
        """
        query, items = tables
        b, c, k = positions.shape
        length = self.query_inverse.shape[1]
        if not torch.is_grad_enabled() and c * k > length:
            per_behaviour = self.sum_all(tables).reshape(b * length, -1)  # [B·L, d]
            offsets = torch.arange(b, device=positions.device)[:, None, None] * length
            return self._gather(per_behaviour, positions + offsets)
        query_rows, item_rows = self._inverse_at(positions)
        return self._gather(query, query_rows) + self._gather(items.sum(dim=1), item_rows)

    def projected(self, projections: Tensor) -> Tensor:
        """Σ_m γ_m x(m) G_m [..., d] for per-channel matrices ``projections`` [C, d, d]."""
        lam = self.fusion_lambda
        query = self.query_table @ projections[0]
        items = torch.einsum("umd,mde->ume", self.item_table, projections[1:])
        item_part = (items * self.item_weight.unsqueeze(-1)).sum(dim=-2) * (1.0 - lam)
        return lam * self._gather(query, self.query_inverse) + self._gather(item_part, self.item_inverse)

    def weighted_channel_tables(self, projections: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per distinct id, the channels already weighted by γ (and projected by G_m when given).

        Returns (query [Uq, d] = λ x_q G_0, items [Ui, M-1, d] = (1-λ) w_m x_m G_m); summed over
        channels and gathered they give :meth:`projected` (or :meth:`fused` without projections).
        """
        lam = self.fusion_lambda
        query, items = self.query_table, self.item_table
        if projections is not None:
            query = query @ projections[0]
            items = torch.einsum("umd,mde->ume", items, projections[1:])
        return lam * query, items * self.item_weight.unsqueeze(-1) * (1.0 - lam)

    def channels(self) -> Tensor:
        """All channels [..., C, d] (materialised: use for short sequences or targets)."""
        return torch.cat([self.query().unsqueeze(-2), self.item_table[self.item_inverse]], dim=-2)

    def gamma(self) -> Tensor:
        """γ [..., C]: λ then (1-λ)·w."""
        w = self.item_weight[self.item_inverse] * (1.0 - self.fusion_lambda)
        return torch.cat([torch.full_like(w[..., :1], self.fusion_lambda), w], dim=-1)
