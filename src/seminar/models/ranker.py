"""The downstream two-stage ranker: embeddings -> GSU top-K -> ESU over K -> MLP head.

One class serves SEMINAR and every baseline; only the GSU strategy differs (``RankerConfig.model``).
Features are identical across models: the ESU's lifelong interest, the user, the fused target
pair and context (behaviour type of the target, time since the last behaviour), plus the
products interest ⊙ target and user ⊙ target (an MLP over concatenated vectors learns dot
products poorly, and matching a target to the user's interest is a dot product).

Training scores many targets per window (:class:`seminar.data.loader.WindowSamples`): each
target and its sampled negatives attend only to the behaviours before it, and the loss is a
ranking loss over the positive and its negatives (:mod:`seminar.train.losses`).

SEMINAR's ESU sees the G_j-projected embeddings (paper: x^ESU = x^GSU), so the CTR loss trains
G_j directly. Top-K selection has no gradient, so SEMINAR's own GSU attention (W^GSU) is trained
by a GSU-ESU consistency loss: over the K kept behaviours and a random sample of dropped ones, the
GSU's distribution is pulled towards the ESU's (detached), weighted by ``gsu_consistency``; the
dropped sample is what lets the GSU learn to promote a behaviour it did not keep.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, get_args

import torch
from torch import Tensor, nn

from seminar.data.schema import EMPTY_QUERY
from seminar.models.attention import TargetAttention
from seminar.models.embedding import BehaviourEmbedding, Gate, PairEmbedding
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
    band_mask,
    sample_allowed,
    select_top_k,
    shared_ends,
)
from seminar.train.losses import LOSSES, LossKind, ranking_loss

logger = logging.getLogger(__name__)

TIME_BUCKETS = 40
RECENCY_BUCKETS = 16  # log2 distance buckets of the ESU's recency bias (up to 2^15 behaviours back)
POPULARITY_BUCKETS = 24  # log2 buckets of an item's training count (the last holds 2^23 and more)
DENSE_ESU_RATIO = 8  # the ESU attends over the masked window when it is at most this many times K
# SEMINAR's consistency loss scores the whole window and gathers (rather than gathering every
# target's keys) when the window is at most this many times the positions it scores: forward and
# backward at 66 positions per target, one thread, L = 2000 / 4000 / 8000: 63 / 108 / 203 ms
# against 96 / 104 / 103 ms for the per-target gather
DENSE_GSU_RATIO = 48


def popularity_buckets(counts: Tensor) -> Tensor:
    """floor(log2(count + 1)) of item counts, the last bucket holding everything beyond it."""
    return torch.log2(counts.clamp_min(0).float() + 1).long().clamp(max=POPULARITY_BUCKETS - 1)


def distance_buckets(distance: Tensor) -> Tensor:
    """The recency bias's bucket of each distance (behaviours back): floor(log2(distance + 1)),
    negative distances counted as 0, the last bucket holding everything beyond it."""
    return torch.log2(distance.clamp_min(0).float() + 1).long().clamp(max=RECENCY_BUCKETS - 1)


@dataclass
class RankerConfig:
    model: str = "seminar"
    dim: int = 64
    heads: int = 4
    top_k: int = 50
    # of the K behaviours the ESU sees, the R most recent are always kept (the short-term interest
    # that deployments feed beside the retrieved long-term one); the GSU picks the other K - R
    recent: int = 0
    qin_first_stage: int | None = None  # default 2 * top_k
    eta_bits: int = 64
    fusion_lambda: float = 0.5
    gate: Gate = "behaviour"
    gsu_consistency: float = 0.1
    consistency_samples: int = 16  # dropped behaviours per target the consistency loss also sees
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    interactions: bool = True  # interest ⊙ target and user ⊙ target in the head's input
    dot: bool = True  # add <interest, target> + <user, target> to the head's logit
    recency_bias: bool = True  # ESU logit bias by log2 distance of a kept behaviour to the target
    # a content GSU (SIM soft, ETA, TWIN, QIN, SEMINAR) adds the ESU's head-averaged recency bias to
    # its scores, as TWIN adds its behaviours' time features to the attention logits in both stages
    gsu_recency: bool = False
    # the head also sees each candidate's training count (a log2 bucket), the popularity scorer's
    # whole signal, which an id embedding learns only for the items it sees often
    item_popularity: bool = False
    dropout: float = 0.0  # on the head's hidden layers
    loss: LossKind = "softmax"
    user_features: bool = True  # pool the dataset's user profile attributes into the user vector
    user_id: bool = True  # a learned embedding per user id (off: profile and history only)
    seed: int = 0
    # reference rankers (seminar.models.reference)
    knn_history: int = 20  # item-kNN: the user's last N items
    knn_neighbours: int = 1000  # item-kNN: neighbours kept per item (1000 ≈ all on MovieLens)
    # item-kNN: items co-occur only within spans of N consecutive training behaviours of a user
    # (None: anywhere in the history); bounds the fit's cost on lifelong sequences
    knn_span: int | None = None
    layers: int = 2  # SASRec: transformer blocks

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        if self.top_k < 1 or self.dim < 1 or self.heads < 1:
            raise ValueError(f"top_k, dim and heads must be >= 1, got {self.top_k}, {self.dim}, {self.heads}")
        if self.knn_span is not None and self.knn_span < 2:
            raise ValueError(f"knn_span must be >= 2 (a pair needs two behaviours), got {self.knn_span}")
        if not 0 <= self.recent <= self.top_k:
            raise ValueError(f"recent must lie in [0, top_k={self.top_k}], got {self.recent}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.fusion_lambda <= 1.0:
            raise ValueError(f"fusion_lambda must lie in [0, 1], got {self.fusion_lambda}")
        if not (math.isfinite(self.gsu_consistency) and self.gsu_consistency >= 0):
            raise ValueError(f"gsu_consistency must be a finite number >= 0, got {self.gsu_consistency}")
        if self.gate not in get_args(Gate):
            raise ValueError(f"unknown gate {self.gate!r}; choose one of {get_args(Gate)}")
        for name in ("layers", "knn_history", "knn_neighbours"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.consistency_samples < 0:
            raise ValueError(f"consistency_samples must be >= 0, got {self.consistency_samples}")
        if self.eta_bits < 64 or self.eta_bits % 64:
            raise ValueError(f"eta_bits must be a positive multiple of 64, got {self.eta_bits}")
        if self.qin_first_stage is not None and self.qin_first_stage < 1:
            raise ValueError(f"qin_first_stage must be >= 1, got {self.qin_first_stage}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.model == "sasrec" and self.dim % self.heads:  # SASRec's heads split d; MHTA heads do not
            raise ValueError(f"SASRec needs dim divisible by heads, got dim {self.dim}, {self.heads} heads")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RankerConfig:
        """The config saved with a run or export; unknown keys are ignored.

        Runs saved before user features (or the head's interaction features) existed lack those
        keys and were trained without them, so they read as False there.
        """
        known = {f.name for f in fields(cls)}
        legacy = {
            "user_features": False,
            "interactions": False,
            "dot": False,
            "recency_bias": False,
            "loss": "bce",
            "consistency_samples": 0,
        }
        return cls(**{**legacy, **{k: v for k, v in values.items() if k in known}})


@dataclass(frozen=True)
class SearchParts:
    """What a GSU is built from: the ranker's config and tables, its ESU and the embedding's channels."""

    config: RankerConfig
    tables: FeatureTables
    esu: TargetAttention
    n_channels: int


# Every two-stage model by name: its GSU is the only thing that differs, so adding one is an entry here
# (``MODELS``, ``make_search`` and :mod:`seminar.models.registry` follow).
SEARCHES: dict[str, Callable[[SearchParts], GeneralSearch]] = {
    "recency": lambda _: RecencySearch(),
    "sim_hard": lambda p: SimHardSearch(p.tables.item_category),
    "sim_soft": lambda _: SimSoftSearch(),
    "eta": lambda p: EtaSearch(p.config.dim, p.config.eta_bits, seed=p.config.seed),
    "twin": lambda p: TwinSearch(p.esu),
    "qin": lambda p: QinSearch(p.config.qin_first_stage or 2 * p.config.top_k),
    "seminar": lambda p: SeminarSearch(p.config.dim, p.n_channels, p.config.heads),
}
MODELS: tuple[str, ...] = tuple(SEARCHES)


def make_search(
    config: RankerConfig, tables: FeatureTables, esu: TargetAttention, n_channels: int
) -> GeneralSearch:
    """The GSU strategy named by ``config.model``."""
    if config.model not in SEARCHES:
        raise ValueError(f"unknown model {config.model!r}; choose one of {MODELS}")
    return SEARCHES[config.model](SearchParts(config, tables, esu, n_channels))


def _mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    while not isinstance(layers[-1], nn.Linear):
        layers.pop()
    return nn.Sequential(*layers)


class Ranker(nn.Module):
    many_targets = True  # trains on WindowSamples batches (many targets per window)

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
            width = (6 if config.interactions else 4) * config.dim
            self.head = _mlp([width, *config.hidden, 1], config.dropout)
            # made last, so that adding it leaves every other module's seeded initialisation as it was
            self.user_features: nn.EmbeddingBag | None = None
            self.recency: nn.Parameter | None = None
            if config.recency_bias:
                self.recency = nn.Parameter(torch.zeros(config.heads, RECENCY_BUCKETS))
            if config.user_features and tables.user_attributes is not None and tables.n_user_attributes:
                self.user_features = nn.EmbeddingBag(
                    tables.n_user_attributes + 1, config.dim, mode="mean", padding_idx=0
                )
                self.register_buffer("user_attributes", tables.user_attributes, persistent=False)
            self.popularity: nn.Embedding | None = None
            if config.item_popularity:
                if tables.item_counts is None:
                    raise ValueError("item_popularity needs the training item counts (FeatureTables)")
                self.popularity = nn.Embedding(POPULARITY_BUCKETS, config.dim)
                # saved with the weights: an export scores with the counts it was trained on
                self.register_buffer("item_counts", tables.item_counts.long().clone())
        if config.gsu_recency and not self.uses_gsu_recency:
            logger.warning(
                "%s has no content GSU to add the recency bias to (sim_soft, eta, twin, qin and seminar do): "
                "gsu_recency changes nothing",
                config.model,
            )
        if self.search.trains_selection and config.gsu_consistency <= 0:
            logger.warning(
                "%s with gsu_consistency=0: its GSU's own weights (SEMINAR: W^GSU) get no training signal",
                config.model,
            )

    def load_pretrained(self, embedding_state: dict[str, Tensor]) -> None:
        """Restore PSU embeddings and content projections as the initialisation (strict)."""
        self.embedding.load_state_dict(embedding_state, strict=True)

    def _search_inputs(
        self,
        batch: dict[str, Tensor],
        items: Tensor,
        queries: Tensor,
        ends: Tensor | None = None,
        id_tables: PairEmbedding | None = None,
    ) -> SearchInputs:
        target = self.embedding.encode(queries, items, id_tables)
        history = self.embedding.encode(batch["hist_queries"], batch["hist_items"], id_tables)
        visible = None
        if ends is not None:
            length = batch["mask"].shape[1] - batch["target_ends"].shape[1] + 1
            visible = band_mask(batch["mask"], ends, length)
        return SearchInputs(
            target,
            items,
            history,
            batch["hist_items"],
            batch["hist_queries"],
            batch["mask"],
            target.fused(),
            visible,
        )

    def _context(
        self,
        batch: dict[str, Tensor],
        items: Tensor,
        queries: Tensor,
        ends: Tensor | None,
        times: Tensor,
        own: Tensor | None = None,
    ) -> Tensor:
        """Behaviour type of each target, log2 time since the behaviour before it and, with
        ``item_popularity``, the target item's log2 training count. ``own`` [B, C] marks training
        positives, whose own occurrence is left out of their count (a positive always counts once
        in training, a test positive need not)."""
        is_search = (queries != EMPTY_QUERY).long()
        stamps = batch["hist_timestamps"]
        if ends is None:
            last = stamps[:, -1:].expand_as(queries)
        else:
            last = torch.gather(stamps, 1, (ends - 1).clamp_min(0))
        gap = (times - last).clamp_min(0).float()
        bucket = torch.log2(gap + 1).long().clamp(max=TIME_BUCKETS - 1)
        context = self.behaviour_type(is_search) + self.time_gap(bucket)
        if self.popularity is not None:
            counts = self.item_counts[items]
            if own is not None:
                counts = (counts - own.long()).clamp_min(0)
            context = context + self.popularity(popularity_buckets(counts))
        return context

    def logits(
        self,
        batch: dict[str, Tensor],
        items: Tensor,
        queries: Tensor,
        ends: Tensor | None = None,
        times: Tensor | None = None,
        *,
        keep_all: bool = False,
        kept: Tensor | None = None,
        id_tables: PairEmbedding | None = None,
        own: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """CTR logits [B, C] for C candidate pairs per user, and the auxiliary GSU loss.

        Without ``ends`` every candidate sees the whole window (evaluation, serving); with ``ends``
        [B, C] candidate c sees the L behaviours before window position ``ends[b, c]`` (training
        on many targets, :class:`~seminar.data.loader.WindowSamples`). ``times`` [B, C] are the
        candidates' timestamps (default: ``batch["target_timestamps"]`` for every candidate).
        ``keep_all`` skips the GSU: the ESU attends over every behaviour the batch holds, as when
        ``top_k`` covers the window. ``kept`` [B, C, K'] replaces the GSU by positions chosen
        outside (serving's own GSU, whatever its K): each candidate's ESU attends over exactly those.
        ``id_tables``: the embedding's :meth:`~BehaviourEmbedding.id_tables`, precomputed by a caller
        that scores often with frozen weights (serving), looked up instead of recomputed. ``own``
        [B, C] marks the training positives among the candidates (see :meth:`_context`).
        """
        if kept is not None and ends is not None:
            raise ValueError("kept positions are for evaluation and serving, not many-target training")
        inputs = self._search_inputs(batch, items, queries, ends, id_tables)
        if times is None:
            times = batch["target_timestamps"][:, None].expand_as(items)
        esu_tables = self.search.esu_tables(inputs.history)
        train_gsu = self.search.trains_selection and self.training and self.config.gsu_consistency > 0
        distance = batch.get("hist_distance") if ends is None else None
        if kept is None:
            indices, valid = self._select(
                inputs, esu_tables if train_gsu else None, keep_all, ends=ends, distance=distance
            )
        else:
            indices = kept
            valid = torch.gather(inputs.mask[:, None, :].expand(-1, kept.shape[1], -1), 2, kept)
        target = self.search.esu_target(inputs.target)
        interest, esu_logits = self._interest(inputs, esu_tables, target, indices, valid, ends, distance)
        _b, c = items.shape
        user = self.user_vector(batch["user"])[:, None].expand(-1, c, -1)
        parts = [interest, user, inputs.target_fused, self._context(batch, items, queries, ends, times, own)]
        if self.config.interactions:
            parts += [interest * target, user * inputs.target_fused]
        aux = torch.zeros((), device=items.device)
        if train_gsu:
            aux = self._consistency(inputs, esu_tables, target, indices, valid, esu_logits)
        logits = self.head(torch.cat(parts, dim=-1)).squeeze(-1)
        if self.config.dot:
            logits = logits + (interest * target).sum(-1) + (user * inputs.target_fused).sum(-1)
        return logits, aux

    def _interest(
        self,
        inputs: SearchInputs,
        tables: KeyTables,
        target: Tensor,
        kept: Tensor,
        valid: Tensor,
        ends: Tensor | None,
        distance: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """ESU interest [B, C, d] over each target's kept behaviours, and its logits there [B, C, H, K].

        Two exact paths: attention over the whole window with everything but the kept behaviours
        masked (a few large matrix products; used when the window is at most DENSE_ESU_RATIO·K
        long, as in training), or over the kept behaviours gathered per target (long windows).
        """
        b, c, k = kept.shape
        length = inputs.mask.shape[1]
        ends = torch.full((b, c), length, device=kept.device) if ends is None else ends
        if length <= DENSE_ESU_RATIO * k:
            keys = inputs.history.sum_all(tables)  # B W d
            # summed, not scattered: a padding slot may repeat a real position (recent + retrieved)
            hits = torch.zeros((b, c, length), device=kept.device)
            selected = hits.scatter_add_(2, kept, valid.to(hits.dtype)) > 0
            logits = self.esu.logits(target, keys, selected)  # B C H W
            positions = torch.arange(length, device=kept.device).expand(b, c, -1)
            biased = logits + self._recency_bias(ends, positions, distance)
            interest, _ = self.esu.attend(biased, keys, selected)
            at_kept = kept[:, :, None, :].expand(-1, -1, logits.shape[2], -1)
            return interest, torch.gather(logits, 3, at_kept)
        keys = inputs.history.sum_at(tables, kept).reshape(b * c, k, -1)
        flat_valid = valid.reshape(b * c, k)
        logits = self.esu.logits(target.reshape(b * c, 1, -1), keys, flat_valid)
        biased = logits + self._recency_bias(ends, kept, distance).reshape(b * c, 1, -1, k)
        interest, _ = self.esu.attend(biased, keys, flat_valid)
        return interest.view(b, c, -1), logits.view(b, c, -1, k)

    def _recency_bias(self, ends: Tensor, positions: Tensor, window_distance: Tensor | None = None) -> Tensor:
        """A learned per-head logit bias by log2 distance to the target, [B, C, H, P] (0 when off).

        The GSU picks behaviours by content wherever they lie; how recent a kept behaviour is, the
        ESU learns here (as SIM/TWIN deployments feed behaviour time), without changing selection.
        ``window_distance`` [B, W] gives each window slot's distance to the target when the window
        is not contiguous (serving passes only the kept behaviours); by default slot i of a window
        ending at ``end`` is ``end - 1 - i`` behaviours back.
        """
        if self.recency is None:
            return torch.zeros((), device=ends.device)
        bucket = self._distance_buckets(ends, positions, window_distance)
        return self.recency[:, bucket].permute(1, 2, 0, 3)

    def _distance_buckets(self, ends: Tensor, positions: Tensor, window_distance: Tensor | None) -> Tensor:
        """log2 distance bucket [B, C, P] of each position to its target (see :meth:`_recency_bias`)."""
        if window_distance is not None:
            b, c, _ = positions.shape
            rows = window_distance[:, None, :].expand(b, c, -1)
            distance = torch.gather(rows, 2, positions)
        else:
            distance = ends[:, :, None] - 1 - positions
        return distance_buckets(distance)

    def _gsu_recency_bias(self, inputs: SearchInputs, ends: Tensor | None, distance: Tensor | None) -> Tensor:
        """The ESU's recency bias averaged over heads at every window slot, [B, C, L]: what a content
        GSU with ``gsu_recency`` adds to its (head-averaged) scores.

        Only the L biases by distance are computed: where every target sees the same distances (the
        whole window, or serving's ``distance`` [B, W]) the result is a broadcast view; with
        per-target ``ends`` [B, C] each row is a slice of one sliding window over them, gathered
        in one copy (no [B, C, L] distance and bucket arrays, which cost more than the GSU's scores
        at L = 2000).
        """
        b, c = inputs.target_items.shape
        length = inputs.mask.shape[1]
        table = self.gsu_recency_table()
        if distance is not None:
            return table[distance_buckets(distance)][:, None, :].expand(b, c, -1)
        by_distance = table[distance_buckets(torch.arange(length, device=inputs.mask.device))]
        if ends is None:  # slot i of the window is L - 1 - i behaviours back
            return by_distance.flip(0).expand(b, c, -1)
        # ramp[t] is the bias at distance max(L - 1 - t, 0); the target that ends at e sees slot i at
        # distance max(e - 1 - i, 0) = ramp[L - e + i]: row L - e of the ramp's sliding windows
        ramp = torch.cat([by_distance.flip(0), by_distance[:1].expand(length)])
        # [1 or B, C, L]: formed once where every sequence's targets end alike, then broadcast
        return ramp.unfold(0, length, 1)[length - shared_ends(ends)].expand(b, c, -1)

    def gsu_recency_table(self) -> Tensor:
        """The GSU's recency bias per log2 distance bucket, [RECENCY_BUCKETS]: the ESU's per-head bias
        averaged over heads, as the GSU's scores are head-averaged logits (serving adds it too)."""
        if not self.uses_gsu_recency:
            raise ValueError("this ranker's GSU scores content only (gsu_recency is off)")
        return self.recency.mean(dim=0)

    def _consistency(
        self,
        inputs: SearchInputs,
        tables: KeyTables,
        target: Tensor,
        kept: Tensor,
        kept_valid: Tensor,
        kept_logits: Tensor,
    ) -> Tensor:
        """The GSU-ESU consistency loss over the kept behaviours and a sample of dropped ones.

        The ESU's (detached) attention over kept ∪ sampled-dropped is the target distribution for the
        GSU's softmax over the same behaviours; without the dropped sample the GSU could only
        reorder what it already keeps. It trains a GSU that ``trains_selection`` (SEMINAR's W^GSU),
        through that GSU's ``logits_at``.
        """
        b, c, _k = kept.shape
        positions = [kept]
        valid = [kept_valid]
        esu_logits = [kept_logits.detach()]
        n_extra = self.config.consistency_samples
        if n_extra > 0:
            with torch.no_grad():
                candidates = inputs.target_mask.expand(b, c, -1).clone()
                candidates.scatter_(2, kept, False)
                extra, extra_valid = sample_allowed(candidates, n_extra)
                extra_keys = inputs.history.sum_at(tables, extra).reshape(b * c, extra.shape[2], -1)
                extra_logits = self.esu.logits(
                    target.reshape(b * c, 1, -1), extra_keys, extra_valid.reshape(b * c, -1)
                )
            positions.append(extra)
            valid.append(extra_valid)
            esu_logits.append(extra_logits.view(b, c, -1, extra.shape[2]))
        all_positions, all_valid = torch.cat(positions, dim=2), torch.cat(valid, dim=2)
        logits = torch.cat(esu_logits, dim=3).float()  # B C H K'
        has_any = all_valid.any(dim=-1)[:, :, None, None]
        weights = torch.softmax(logits.masked_fill(~has_any, 0.0), dim=-1).mean(dim=2)
        gsu = self.search.logits_at(inputs, all_positions, tables, DENSE_GSU_RATIO)
        return consistency_loss(gsu, weights, all_valid)

    def _select(
        self,
        inputs: SearchInputs,
        gsu_tables: KeyTables | None,
        keep_all: bool = False,
        *,
        ends: Tensor | None = None,
        distance: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The GSU's top-K positions [B, C, K] for every target, and which of them are real.

        With ``config.recent`` = R the last R behaviours each target sees come first (they are always
        kept) and the GSU's top K - R of the older ones follow.

        ``gsu_tables``: the ESU's key tables of the history, given when the GSU trains its selection
        (it scores with them, so the history is not projected twice); ``keep_all``: keep every behaviour.
        """
        length = inputs.mask.shape[1]
        target_mask = inputs.target_mask
        if keep_all or self.config.top_k >= length:
            # every behaviour is kept (a short history, or serving's pre-selected K): the GSU's
            # scores would only reorder them, and the ESU's attention does not depend on order
            positions = torch.arange(length, device=inputs.mask.device)
            indices = positions.expand(*inputs.target_items.shape, length)
            return indices, target_mask.expand_as(indices)
        recent = self.config.recent
        if recent:
            latest = torch.arange(length, device=inputs.mask.device).expand(*inputs.target_items.shape, -1)
            recent_kept, recent_valid = select_top_k(latest, target_mask, recent)
            if recent == self.config.top_k:
                return recent_kept, recent_valid
            # the GSU chooses among the older behaviours only (a shortlisting GSU shortlists among them)
            target_mask = target_mask.expand_as(latest).scatter(2, recent_kept, False)
            inputs = replace(inputs, visible=target_mask)
        with torch.no_grad():  # selection has no gradient; a GSU's own weights get the consistency loss
            bias = self._gsu_recency_bias(inputs, ends, distance) if self.uses_gsu_recency else None
            tables = None if gsu_tables is None else (gsu_tables[0].detach(), gsu_tables[1].detach())
            relevance = self.search.biased_relevance(inputs, bias, tables)  # B C L
        kept, valid = select_top_k(relevance, target_mask, self.config.top_k - recent)
        if not recent:
            return kept, valid
        return torch.cat([kept, recent_kept], dim=2), torch.cat([valid, recent_valid], dim=2)

    @property
    def uses_gsu_recency(self) -> bool:
        """Whether the GSU's scores carry the recency bias (a content GSU with ``gsu_recency``)."""
        return (
            self.config.gsu_recency and self.recency is not None and self.search.scores_content
        )

    def user_vector(self, users: Tensor) -> Tensor:
        """The user feature [B, d]: the user's id embedding plus the mean of its profile attributes.

        A negative index is a user the model was not trained on (serving's new users): it has neither
        an id embedding nor a profile, so its user vector is zero and only its history speaks for it.
        """
        known = users >= 0
        rows = users.clamp_min(0)
        vector = self.users(rows)
        if not self.config.user_id:
            vector = torch.zeros_like(vector)
        if self.user_features is not None:
            vector = vector + self.user_features(self.user_attributes[rows])
        return torch.where(known[:, None], vector, torch.zeros_like(vector))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: the ranking loss of each target against its sampled negatives.

        Takes a many-target batch (:class:`~seminar.data.loader.WindowSamples`: targets [B, T]) or a
        one-target batch (:class:`~seminar.data.loader.TrainSamples`: targets [B], each with its
        own window), the plain form the many-target path is tested against.
        """
        one_target = batch["target_items"].dim() == 1

        def per_target(key: str) -> Tensor:
            return batch[key][:, None] if one_target else batch[key]

        items = torch.cat([per_target("target_items")[..., None], per_target("neg_items")], dim=-1)
        queries = torch.cat([per_target("target_queries")[..., None], per_target("neg_queries")], dim=-1)
        b, t, n = items.shape
        ends = None if one_target else batch["target_ends"][..., None].expand(b, t, n).reshape(b, t * n)
        times = per_target("target_timestamps")[..., None].expand(b, t, n).reshape(b, t * n)
        own = torch.zeros((b, t, n), dtype=torch.bool, device=items.device)
        own[..., 0] = True  # the positive: its own occurrence is in the training counts
        logits, aux = self.logits(
            batch, items.reshape(b, t * n), queries.reshape(b, t * n), ends, times, own=own.view(b, t * n)
        )
        logits = logits.view(b, t, n)
        valid = torch.ones_like(items[..., 0], dtype=torch.bool) if one_target else batch["target_valid"]
        log_q = {k: per_target(k) for k in ("target_log_q", "neg_log_q") if k in batch}
        rank = ranking_loss(
            logits[..., 0],
            logits[..., 1:],
            valid,
            self.config.loss,
            log_q.get("target_log_q"),
            log_q.get("neg_log_q"),
        )
        loss = rank + self.config.gsu_consistency * aux
        return loss, {"rank": rank.detach(), "gsu_consistency": aux.detach()}

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
