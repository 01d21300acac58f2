"""The Pretraining Search Unit (PSU) and its three losses (paper 3.3.1).

1. Next pair prediction: the target pair x_L is hidden, a learned ``<EOS>`` is appended to
   x_{1:L-1}, and MHTA with each candidate pair as the target classifies the true pair against
   sampled negative pairs (other items with the same query, and the true item with other queries).
2. Multi-modal alignment: CLIP InfoNCE, symmetric, between every pair of item channels, on unit
   vectors, divided by the temperature, inside chunks of L/N_ch behaviours (cost O(L²/N_ch)),
   padding and repeated items excluded from the negatives.
3. Query-item relevance: binary classification of true (query, item) pairs of search behaviours
   against random pairs.

Each loss has a weight and an on/off switch (the paper's Table 3 ablations). A task the dataset
cannot support is switched off with a note (:func:`feasible_tasks`): alignment needs two item
channels, relevance needs search behaviours. The PSU shares the embedding module with the ranker,
which restores it as its initialisation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminar.data.schema import EMPTY_QUERY, SEARCH
from seminar.errors import NoPretrainingTask
from seminar.models.attention import TargetAttention
from seminar.models.embedding import BehaviourEmbedding, Gate, PairEmbedding, item_channel_names
from seminar.models.features import FeatureTables
from seminar.models.infonce import (
    clip_allowed,
    one_shift_serves,
    shared_exp_clip_loss,
    shifted_clip_mask,
)
from seminar.models.infonce import clip_loss as clip_loss
from seminar.models.infonce import clip_mask as clip_mask


@dataclass
class PretrainConfig:
    dim: int = 64
    heads: int = 4
    fusion_lambda: float = 0.5
    gate: Gate = "behaviour"
    next_pair: bool = True
    next_pair_weight: float = 1.0
    align: bool = True
    align_weight: float = 1.0
    align_chunks: int = 4
    align_window: int = 512  # the latest behaviours of the window the alignment contrasts
    temperature: float = 0.07
    relevance: bool = True
    relevance_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.dim, self.heads, self.align_chunks, self.align_window) < 1:
            raise ValueError(
                f"dim, heads, align_chunks and align_window must be >= 1, got {self.dim}, {self.heads}, "
                f"{self.align_chunks}, {self.align_window}"
            )
        if not 0.0 <= self.fusion_lambda <= 1.0:
            raise ValueError(f"fusion_lambda must lie in [0, 1], got {self.fusion_lambda}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        weights = (self.next_pair_weight, self.align_weight, self.relevance_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"task weights must be finite and >= 0, got {weights}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def tasks(self) -> list[str]:
        return [name for name in TASKS if getattr(self, name)]


TASKS = ("next_pair", "align", "relevance")


def feasible_tasks(config: PretrainConfig, tables: FeatureTables) -> tuple[PretrainConfig, dict[str, str]]:
    """The config with the tasks this dataset cannot support switched off, and why each was.

    Alignment contrasts item channels with each other, so one item channel leaves nothing to align;
    query-item relevance learns from search behaviours, so a dataset without queries gives it no
    example. Raises :class:`NoPretrainingTask` when no asked-for task is left.
    """
    dropped: dict[str, str] = {}
    channels = item_channel_names(tables)
    if config.align and len(channels) < 2:
        dropped["align"] = f"needs two item channels; this dataset has one ({channels[0]})"
    if config.relevance and tables.n_queries <= EMPTY_QUERY:  # only the empty query: no search
        dropped["relevance"] = "needs search behaviours; this dataset has no queries"
    feasible = replace(config, **{name: False for name in dropped})
    if not feasible.tasks():
        reasons = "; ".join(f"{name} {why}" for name, why in dropped.items())
        raise NoPretrainingTask(f"no PSU pretraining task can run on this dataset: {reasons}")
    return feasible, dropped


def pair_bce(positive: Tensor, negative: Tensor) -> Tensor:
    """Binary cross-entropy of positive logits (label 1) and negative logits (label 0), averaged."""
    logits = torch.cat([positive.flatten(), negative.flatten()])
    labels = torch.cat([torch.ones_like(positive.flatten()), torch.zeros_like(negative.flatten())])
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def chunk(x: Tensor, chunks: int) -> Tensor:
    """[B, L, ...] -> [B * chunks, ceil(L / chunks), ...], zero-padded at the front (like the history)."""
    b, length = x.shape[:2]
    size = -(-length // chunks)
    pad = size * chunks - length
    if pad:
        x = torch.cat([x.new_zeros((b, pad, *x.shape[2:])), x], dim=1)
    return x.reshape(b * chunks, size, *x.shape[2:])


class PretrainingSearchUnit(nn.Module):
    def __init__(self, tables: FeatureTables, config: PretrainConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PretrainConfig()
        if not (config.next_pair or config.align or config.relevance):
            raise ValueError("PSU pretraining needs at least one of next_pair, align, relevance")
        with torch.random.fork_rng():  # seeded initialisation, the caller's RNG untouched
            torch.manual_seed(config.seed)
            self.embedding = BehaviourEmbedding(tables, config.dim, config.gate, config.fusion_lambda)
            self.attention = TargetAttention(config.dim, config.heads)
            self.eos = nn.Parameter(torch.randn(config.dim) * 0.05)
            self.pair_head = nn.Sequential(
                nn.Linear(3 * config.dim, config.dim), nn.ReLU(), nn.Linear(config.dim, 1)
            )
            self.relevance_head = nn.Sequential(
                nn.Linear(3 * config.dim, config.dim), nn.ReLU(), nn.Linear(config.dim, 1)
            )
            if self.embedding.n_channels - 1 < 2 and config.align:
                raise NoPretrainingTask(
                    "alignment needs at least two item channels (text, image, attributes); "
                    "feasible_tasks() switches it off for such a dataset"
                )

    @staticmethod
    def _interaction(a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b, a * b], dim=-1)

    def next_pair_loss(self, batch: dict[str, Tensor], hist_fused: Tensor) -> Tensor:
        """Cross-entropy of the true last pair against negative pairs, attending over [x_{<L}, EOS]."""
        b = hist_fused.shape[0]
        keys = torch.cat([hist_fused, self.eos.expand(b, 1, -1)], dim=1)
        mask = torch.cat([batch["mask"], torch.ones_like(batch["mask"][:, :1])], dim=1)
        other_query = batch["target_queries"].roll(1, dims=0)  # the true item with another user's query
        items = torch.cat(
            [batch["target_items"][:, None], batch["neg_items"], batch["target_items"][:, None]], 1
        )
        queries = torch.cat([batch["target_queries"][:, None], batch["neg_queries"], other_query[:, None]], 1)
        candidates = self.embedding.encode(queries, items).fused()  # B C d
        interest = self.attention(candidates, keys, mask)  # B C d
        logits = self.pair_head(self._interaction(interest, candidates)).squeeze(-1)
        same = (queries == queries[:, :1]) & (items == items[:, :1])
        same[:, 0] = False  # a "negative" identical to the positive is not a negative
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits.float(), torch.zeros(b, dtype=torch.long, device=logits.device))

    def align_loss(self, batch: dict[str, Tensor], hist_channels: Tensor) -> Tensor:
        """Chunked CLIP InfoNCE over every pair of item channels of the history's latest
        ``align_window`` behaviours (``hist_channels`` [B, W, M, d]: the window's channels, or only
        its latest ``align_window``).

        Its cost per sequence is the aligned length times the chunk's, quadratic in the window:
        aligning whole windows of 2000 made a 256-sequence batch take about a minute on one CPU
        core and 12.8 GB, most of the PSU's time. Windows up to ``align_window`` (512 by default)
        are aligned whole.
        """
        window = self.config.align_window
        unit = F.normalize(hist_channels[:, -window:, 1:].float(), dim=-1)  # B W M d
        valid = chunk(batch["mask"][:, -window:], self.config.align_chunks)
        items = chunk(batch["hist_items"][:, -window:], self.config.align_chunks)
        allowed = clip_allowed(valid, items[:, :, None] == items[:, None, :])  # repeats never negatives
        unit = chunk(unit, self.config.align_chunks)  # N S M d
        temperature = self.config.temperature
        # one mask for every channel pair (unless the temperature is too low for the shared form)
        shifted = shifted_clip_mask(allowed, temperature) if one_shift_serves(temperature) else None
        pairs = itertools.combinations(range(unit.shape[2]), 2)
        losses = [
            shared_exp_clip_loss(
                unit[:, :, i], unit[:, :, j], valid, temperature, allowed, shifted, unit=True
            )
            for i, j in pairs
        ]
        return torch.stack(losses).mean()

    def relevance_loss(self, batch: dict[str, Tensor], history: PairEmbedding) -> Tensor:
        """True (query, item) pairs of search behaviours against the same queries with shuffled items."""
        search = batch["mask"] & (batch["hist_behaviour"] == SEARCH)
        if not search.any():
            return history.query_table.sum() * 0.0
        query, item = history.query()[search], history.item()[search]
        item_ids = batch["hist_items"][search]
        generator = torch.Generator(device="cpu").manual_seed(int(item_ids.sum()))
        perm = torch.randperm(item.shape[0], generator=generator).to(item.device)
        differs = item_ids[perm] != item_ids
        positive = self.relevance_head(self._interaction(query, item)).squeeze(-1)
        negative = self.relevance_head(self._interaction(query, item[perm])).squeeze(-1)[differs]
        return pair_bce(positive, negative)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        history = self.embedding.encode(batch["hist_queries"], batch["hist_items"])
        parts: dict[str, Tensor] = {}
        total = history.query_table.new_zeros(())
        if cfg.next_pair:
            parts["next_pair"] = self.next_pair_loss(batch, history.fused())
            total = total + cfg.next_pair_weight * parts["next_pair"]
        if cfg.align:
            # only the latest align_window behaviours are aligned: only theirs are materialised
            parts["align"] = self.align_loss(batch, history.latest(cfg.align_window).channels())
            total = total + cfg.align_weight * parts["align"]
        if cfg.relevance:
            parts["relevance"] = self.relevance_loss(batch, history)
            total = total + cfg.relevance_weight * parts["relevance"]
        return total, {k: v.detach() for k, v in parts.items()}
