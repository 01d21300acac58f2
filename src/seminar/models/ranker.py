"""The downstream two-stage ranker: embeddings -> GSU top-K -> ESU over K -> MLP head (BCE).

One class serves SEMINAR and every baseline; only the GSU strategy differs (``RankerConfig.model``).
Features are identical across models: the ESU's lifelong interest, the user, the fused target
pair and context (behaviour type of the target, time since the last behaviour).

SEMINAR's GSU has parameters of its own (``G_j`` and ``W^GSU``) that top-K selection cannot train,
so it gets a GSU-ESU consistency loss: on the K kept behaviours, the GSU's attention distribution
is pulled towards the ESU's (detached), weighted by ``gsu_consistency``.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminar.data.schema import EMPTY_QUERY
from seminar.models.attention import TargetAttention
from seminar.models.embedding import BehaviourEmbedding, Gate
from seminar.models.features import FeatureTables
from seminar.models.search import (
    EtaSearch,
    GeneralSearch,
    KeyTables,
    QinSearch,
    RecencySearch,
    SearchInputs,
    SeminarSearch,
    SimHardSearch,
    SimSoftSearch,
    TwinSearch,
    select_top_k,
)

MODELS = ("recency", "sim_hard", "sim_soft", "eta", "twin", "qin", "seminar")
TIME_BUCKETS = 40


@dataclass
class RankerConfig:
    model: str = "seminar"
    dim: int = 64
    heads: int = 4
    top_k: int = 50
    qin_first_stage: int | None = None  # default 2 * top_k
    eta_bits: int = 64
    fusion_lambda: float = 0.5
    gate: Gate = "behaviour"
    gsu_consistency: float = 0.1
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    user_features: bool = True  # pool the dataset's user profile attributes into the user vector
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RankerConfig:
        """The config saved with a run or export; unknown keys are ignored.

        Runs saved before user features existed have no ``user_features`` key and were trained
        without them, so it reads as False there.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{"user_features": False, **{k: v for k, v in values.items() if k in known}})


def make_search(
    config: RankerConfig, tables: FeatureTables, esu: TargetAttention, n_channels: int
) -> GeneralSearch:
    """The GSU strategy named by ``config.model``."""
    if config.model == "recency":
        return RecencySearch()
    if config.model == "sim_hard":
        return SimHardSearch(tables.item_category)
    if config.model == "sim_soft":
        return SimSoftSearch()
    if config.model == "eta":
        return EtaSearch(config.dim, config.eta_bits, seed=config.seed)
    if config.model == "twin":
        return TwinSearch(esu)
    if config.model == "qin":
        return QinSearch(config.qin_first_stage or 2 * config.top_k)
    if config.model == "seminar":
        return SeminarSearch(config.dim, n_channels, config.heads)
    raise ValueError(f"unknown model {config.model!r}; choose one of {MODELS}")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Ranker(nn.Module):
    def __init__(self, tables: FeatureTables, config: RankerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RankerConfig()
        with torch.random.fork_rng():  # seeded initialisation, the caller's RNG untouched
            torch.manual_seed(config.seed)
            self.embedding = BehaviourEmbedding(tables, config.dim, config.gate, config.fusion_lambda)
            self.esu = TargetAttention(config.dim, config.heads)
            self.search = make_search(config, tables, self.esu, self.embedding.n_channels)
            self.users = nn.Embedding(tables.n_users, config.dim)
            self.behaviour_type = nn.Embedding(2, config.dim)
            self.time_gap = nn.Embedding(TIME_BUCKETS, config.dim)
            self.head = _mlp([4 * config.dim, *config.hidden, 1])
            # made last, so that adding it leaves every other module's seeded initialisation as it was
            self.user_features: nn.EmbeddingBag | None = None
            if config.user_features and tables.user_attributes is not None and tables.n_user_attributes:
                self.user_features = nn.EmbeddingBag(
                    tables.n_user_attributes + 1, config.dim, mode="mean", padding_idx=0
                )
                self.register_buffer("user_attributes", tables.user_attributes, persistent=False)

    def load_pretrained(self, embedding_state: dict[str, Tensor]) -> None:
        """Restore PSU embeddings and content projections as the initialisation (strict)."""
        self.embedding.load_state_dict(embedding_state, strict=True)

    def _search_inputs(self, batch: dict[str, Tensor], items: Tensor, queries: Tensor) -> SearchInputs:
        target = self.embedding.encode(queries, items)
        history = self.embedding.encode(batch["hist_queries"], batch["hist_items"])
        return SearchInputs(
            target,
            items,
            history,
            batch["hist_items"],
            batch["hist_queries"],
            batch["mask"],
            target.fused(),
        )

    def _context(self, batch: dict[str, Tensor], queries: Tensor) -> Tensor:
        is_search = (queries != EMPTY_QUERY).long()
        last = batch["hist_timestamps"][:, -1:]
        gap = (batch["target_timestamps"][:, None] - last).clamp_min(0).float()
        bucket = torch.log2(gap + 1).long().clamp(max=TIME_BUCKETS - 1).expand_as(queries)
        return self.behaviour_type(is_search) + self.time_gap(bucket)

    def logits(self, batch: dict[str, Tensor], items: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        """CTR logits [B, C] for C candidate pairs per user, and the auxiliary GSU loss."""
        inputs = self._search_inputs(batch, items, queries)
        seminar = isinstance(self.search, SeminarSearch)
        train_gsu = seminar and self.training and self.config.gsu_consistency > 0
        # SEMINAR's projected history keys: made once, detached for selection, reused by the loss
        gsu_tables = self.search.key_tables(inputs.history) if train_gsu else None
        indices, valid = self._select(inputs, gsu_tables)
        b, c, k = indices.shape
        flat_keys = inputs.history.fused_at(indices).reshape(b * c, k, -1)
        flat_valid = valid.reshape(b * c, k)
        target = inputs.target_fused.reshape(b * c, 1, -1)
        esu_logits = self.esu.logits(target, flat_keys, flat_valid)
        interest, weights = self.esu.attend(esu_logits, flat_keys, flat_valid)
        interest = interest.view(b, c, -1)
        user = self.user_vector(batch["user"])[:, None].expand(-1, c, -1)
        features = torch.cat([interest, user, inputs.target_fused, self._context(batch, queries)], dim=-1)
        aux = torch.zeros((), device=items.device)
        if gsu_tables is not None:
            # B C K, differentiable w.r.t. G_j and W^GSU
            kept = self.search.logits_at(inputs, indices, gsu_tables)
            aux = consistency_loss(kept, weights.detach().mean(dim=2).view(b, c, k), valid)
        return self.head(features).squeeze(-1), aux

    def _select(self, inputs: SearchInputs, gsu_tables: KeyTables | None) -> tuple[Tensor, Tensor]:
        """The GSU's top-K positions [B, C, K] for every target, and which of them are real."""
        length = inputs.mask.shape[1]
        if gsu_tables is None and self.config.top_k >= length:
            # every behaviour is kept (a short history, or serving's pre-selected K): the GSU's
            # scores would only reorder them, and the ESU's attention does not depend on order
            positions = torch.arange(length, device=inputs.mask.device)
            indices = positions.expand(*inputs.target_items.shape, length)
            return indices, inputs.mask[:, None, :].expand_as(indices)
        with torch.no_grad():  # selection has no gradient; SEMINAR's GSU is trained by the consistency loss
            if gsu_tables is None:
                relevance = self.search.relevance(inputs)  # B C L
            else:
                relevance = self.search.relevance(inputs, (gsu_tables[0].detach(), gsu_tables[1].detach()))
        return select_top_k(relevance, inputs.mask, self.config.top_k)

    def user_vector(self, users: Tensor) -> Tensor:
        """The user feature [B, d]: the user's id embedding plus the mean of its profile attributes."""
        vector = self.users(users)
        if self.user_features is not None:
            vector = vector + self.user_features(self.user_attributes[users])
        return vector

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: BCE of the positive pair (label 1) and its sampled negatives (label 0)."""
        items = torch.cat([batch["target_items"][:, None], batch["neg_items"]], dim=1)
        queries = torch.cat([batch["target_queries"][:, None], batch["neg_queries"]], dim=1)
        logits, aux = self.logits(batch, items, queries)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        loss = bce + self.config.gsu_consistency * aux
        return loss, {"bce": bce.detach(), "gsu_consistency": aux.detach()}

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self.logits(batch, batch["cand_items"], batch["cand_queries"])
        return logits


def consistency_loss(gsu_logits: Tensor, esu_weights: Tensor, valid: Tensor) -> Tensor:
    """KL(ESU attention || GSU softmax) over the kept behaviours; rows without a real one are skipped."""
    log_q = torch.log_softmax(gsu_logits.float().masked_fill(~valid, float("-inf")), dim=-1)
    p = esu_weights.float() * valid
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    terms = torch.where(valid & (p > 0), p * (torch.log(p.clamp_min(1e-12)) - log_q), torch.zeros_like(p))
    rows = valid.any(dim=-1)
    return terms.sum(dim=-1)[rows].mean() if rows.any() else terms.sum() * 0.0
