"""General search units (GSU): how each model picks the top-K of L behaviours for every target.

Every strategy returns a relevance matrix [B, C, L] (C targets per sequence, higher = keep);
:func:`select_top_k` turns it into indices and never selects padding. The baselines differ only
here; embeddings, the ESU and the head are shared, so a comparison changes one thing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from seminar.models.attention import TargetAttention
from seminar.models.embedding import PairEmbedding
from seminar.models.products import target_behaviour_products
from seminar.models.threshold import Passing, passing, sample_threshold, top_of_packed

NEG_INF = float("-inf")
KeyTables = tuple[Tensor, Tensor]  # per distinct id: query keys [Uq, d], item keys [Ui, M-1, d]
ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class Borrowed(Generic[ModuleT]):
    """A module used but not owned: ``nn.Module`` registers only Module and tensor attributes, so one
    held through this wrapper stays out of the borrower's submodules, parameters and state dict. Its
    owner registers, trains, moves and saves it; both see the very same weights (copies share too)."""

    module: ModuleT


@dataclass
class SearchInputs:
    """What a GSU may look at, embedded once per batch by the ranker."""

    target: PairEmbedding  # C candidate pairs per sequence: leading shape [B, C]
    target_items: Tensor  # [B, C]
    history: PairEmbedding  # leading shape [B, L]
    hist_items: Tensor  # [B, L]
    hist_queries: Tensor  # [B, L]
    mask: Tensor  # [B, L] True = real behaviour
    target_fused: Tensor  # [B, C, d]
    visible: Tensor | None = None  # [B, C, L] per target (many-target training); None = ``mask`` for all

    @property
    def target_mask(self) -> Tensor:
        """Behaviours each target may look at: [B, C, L], or [B, 1, L] when all targets see the same."""
        return self.visible if self.visible is not None else self.mask[:, None, :]

    @cached_property
    def hist_fused(self) -> Tensor:
        """Fused history [B, L, d], built only if a GSU scores all L with it (SEMINAR's does not)."""
        return self.history.fused()


def reference_top_k_latest_first(scores: Tensor, k: int) -> Tensor:
    """Positions [..., k] of each row's k highest scores, best first; exact ties: later positions
    first. The plain path: a stable descending sort of the reversed positions keeps tied ones latest
    first whatever the scores' magnitude (a tiny additive bonus is lost to float32 rounding once
    scores reach the tens, as Hamming distances do)."""
    length = scores.shape[-1]
    order = torch.sort(scores.flip(-1), dim=-1, descending=True, stable=True).indices[..., :k]
    return length - 1 - order


def _ordered_keys(flat: Tensor) -> Tensor:
    """int64 keys [N, L] that order like (score, position): the float32 score's bits mapped to an
    int32 of the same order in the high half, the position in the low half. No two keys of a row
    are equal, so a row's k largest keys are its top-k with ties to the later position."""
    bits = (flat + 0.0).contiguous().view(torch.int32)  # + 0.0: -0.0 becomes +0.0, equal scores equal bits
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: their magnitude bits reversed
    positions = torch.arange(flat.shape[1], device=flat.device, dtype=torch.int64)
    return (ordered.to(torch.int64) << 32) | positions


def top_k_by_keys(flat: Tensor, k: int) -> Tensor:
    """Top-k positions [N, k] of rows [N, L] via :func:`_ordered_keys`, best first: ``torch.topk``
    of the unique keys (the accelerator path; it runs on the CPU too, where tests check it)."""
    return torch.topk(_ordered_keys(flat), k, dim=1, sorted=True).values & 0xFFFFFFFF


@functools.lru_cache(maxsize=16)
def _minus_inf_ramp(length: int) -> np.ndarray | None:
    """Distinct float32 values far below any real score, rising with position (None if float32
    cannot hold ``length`` of them apart)."""
    ramp = (-1e30 - 1e24 * np.arange(length - 1, -1, -1, dtype=np.float64)).astype(np.float32)
    return ramp if bool(np.all(np.diff(ramp) > 0)) else None


def _latest_of_ties(hits: np.ndarray, values: np.ndarray, kth: np.ndarray, k: int) -> np.ndarray:
    """Of each row's hits (flat indices ascending, row by row, of the scores at or above its k-th
    largest ``kth``), the k the reference keeps: all above, and of those equal to the k-th, the
    latest ones that fill the places. Works on the hits alone, a few more than k per row."""
    n, length = values.shape
    rows = hits // length
    equal = values.reshape(-1)[hits] == kth[rows]
    equal_per_row = np.bincount(rows[equal], minlength=n)
    missing = k - (np.bincount(rows, minlength=n) - equal_per_row)  # places the equal ones fill
    nth_equal = np.cumsum(equal) - (np.cumsum(equal_per_row) - equal_per_row)[rows]  # 1-based in its row
    from_right = equal_per_row[rows] - nth_equal + 1
    return hits[~equal | (from_right <= missing[rows])]


def _kth_largest(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, Passing]:
    """Each row's k-th largest value [N] (1 ≤ k ≤ L), which rows hold a NaN [N], and the packed
    scores of the rows the threshold path did (empty when none).

    On long rows only the scores above a column-sample threshold are partitioned
    (:mod:`seminar.models.threshold`; at L = 2000, K = 50 about 200 of 2000 per row); rows where the
    threshold kept too few or too many, or that hold a NaN, and short rows, are partitioned whole.
    """
    n, length = values.shape
    whole = np.ones(n, dtype=bool)
    kth = np.empty(n, dtype=values.dtype)
    has_nan = np.zeros(n, dtype=bool)
    packed = Passing(np.zeros(0, dtype=np.int64), np.zeros((0, 0), values.dtype), np.zeros((0, 0), np.int64))
    threshold = sample_threshold(values, k)
    if threshold is not None:
        # a row's sum is NaN if it holds a NaN (or +inf beside -inf): such rows are partitioned whole
        suspect = np.isnan(values.sum(axis=1))
        kept = passing(values, threshold, k)
        clean = ~suspect[kept.rows]
        packed = Passing(kept.rows[clean], kept.values[clean], kept.positions[clean])
        if packed.rows.size:
            width = packed.values.shape[1]
            kth[packed.rows] = np.partition(packed.values, width - k, axis=1)[:, width - k]  # padding first
            whole[packed.rows] = False
    if whole.any():
        partitioned = np.partition(values[whole], length - k, axis=1)
        kth[whole] = partitioned[:, length - k]
        has_nan[whole] = np.isnan(partitioned[:, -1])  # the partition puts a row's NaN last
    return kth, has_nan, packed


def _top_k_cpu(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """CPU top-k positions [N, k], best first, and which rows are left for the caller (those
    holding a NaN, which the reference ranks first, or a finite score below -1e30).

    Each row's k-th largest score (numpy's partition) splits it: where exactly k scores reach it,
    those are the top-k; where more do (equal scores at the k-th place, e.g. repeated behaviours),
    the latest of the equal ones fill the places. Rows the sample threshold packed are split on
    their packed scores alone; the others on the whole row. Only the k kept are then sorted.
    """
    n, length = values.shape
    # -inf (masked positions, or a GSU's "never") lifted to the ramp: the reference ranks them below
    # every finite score and among themselves later first, as the ramp does, and numpy's partition
    # slows down badly on many equal values
    ramp = _minus_inf_ramp(length)
    original, values = values, values if ramp is None else np.maximum(values, ramp)
    kth, failed, packed = _kth_largest(values, k)
    if ramp is not None and (low := np.flatnonzero(kth <= ramp[-1])).size:
        # the k-th place lies in the ramp: exact only if every score lifted there was -inf
        lifted = original[low]
        failed[low[((lifted <= ramp[-1]) & ~np.isneginf(lifted)).any(axis=1)]] = True
    ascending = np.empty((n, k), dtype=np.int64)
    if packed.rows.size:
        ascending[packed.rows] = top_of_packed(packed.values, packed.positions, k, kth[packed.rows])
    rest = np.ones(n, dtype=bool)
    rest[packed.rows] = False
    rest &= ~failed
    if rest.any():
        some = values if rest.all() else values[rest]
        hits = np.flatnonzero(some >= kth[rest][:, None])  # ascending, row by row
        if hits.size != k * some.shape[0]:  # some k-th place is tied
            hits = _latest_of_ties(hits, some, kth[rest], k)
        ascending[rest] = (hits % length).reshape(-1, k)
    done = np.flatnonzero(~failed)
    positions = ascending[done, ::-1]  # latest first
    order = np.argsort(-values[done[:, None], positions], axis=1, kind="stable")
    out = np.empty((n, k), dtype=np.int64)
    out[done] = np.take_along_axis(positions, order, axis=1)
    return out, failed


def _top_k_rows(values: np.ndarray, k: int) -> np.ndarray:
    """Top-k positions [N, k] of rows [N, L] (1 ≤ k ≤ L), best first: :func:`_top_k_cpu`, and the
    reference for the rows it leaves."""
    out, failed = _top_k_cpu(values, k)
    if failed.any():
        out[failed] = reference_top_k_latest_first(torch.from_numpy(values[failed]), k).numpy()
    return out


# select sequence by sequence when the left padding cut off, per sequence, spans at least this many
# scores (targets × columns): below it the loop's own cost (about 0.1 ms a sequence) is the larger
PER_SEQUENCE_MIN_SKIPPED = 4096


def _first_visible(visible: np.ndarray) -> np.ndarray:
    """Each sequence's first column visible to any of its targets [B] (L where none is)."""
    seen = visible.any(axis=1)  # [B, L]
    return np.where(seen.any(axis=1), seen.argmax(axis=1), seen.shape[1])


def _top_k_per_sequence(
    scores: np.ndarray, visible: np.ndarray, k: int, first: np.ndarray | None = None
) -> np.ndarray:
    """Top-k positions [B, C, k] of scores [B, C, L] with the positions outside ``visible``
    ([B, C, L] or [B, 1, L]) at -inf, one sequence at a time from its first visible column.

    The columns before it (a short history's left padding) are -inf in every row of the sequence,
    so the reference ranks them below all the others, latest first: they are appended as such
    instead of being masked, lifted and partitioned. ``first``: :func:`_first_visible`, when known.
    """
    b, c, length = scores.shape
    first = _first_visible(visible) if first is None else first
    out = np.empty((b, c, k), dtype=np.int64)
    for i, start in enumerate(first.tolist()):
        kept = min(k, length - start)
        if kept:
            rows = np.where(visible[i, :, start:], scores[i, :, start:], np.float32(NEG_INF))  # [C, L']
            out[i, :, :kept] = _top_k_rows(rows, kept) + start
        out[i, :, kept:] = np.arange(start - 1, start - 1 - (k - kept), -1)
    return out


def top_k_latest_first(scores: Tensor, k: int, visible: Tensor | None = None) -> Tensor:
    """:func:`reference_top_k_latest_first` without sorting whole rows: :func:`_top_k_cpu` on the
    CPU (numpy's partition, compare and flatnonzero are several times faster there than torch's
    sort, top-k and reductions), :func:`top_k_by_keys` on an accelerator. Tests hold every path
    equal to the reference on random inputs, ties included.

    ``visible`` (broadcastable to ``scores``' shape): positions outside it score -inf. On the CPU,
    for scores [B, C, L] with ``visible`` [B, C or 1, L] whose sequences open with enough columns
    no target sees (``PER_SEQUENCE_MIN_SKIPPED``), each sequence is selected from its first visible
    column on (:func:`_top_k_per_sequence`): at L = 2000 most training windows are mostly left
    padding.
    """
    *lead, length = scores.shape
    scores = scores.detach().float()
    on_cpu = scores.device.type == "cpu"
    if k == 0 or scores.numel() == 0:
        masked = scores if visible is None else scores.masked_fill(~visible, NEG_INF)
        return reference_top_k_latest_first(masked, k)
    if not on_cpu:
        masked = scores if visible is None else scores.masked_fill(~visible, NEG_INF)
        return top_k_by_keys(masked.reshape(-1, length).contiguous(), k).view(*lead, k)
    if visible is not None and visible.dim() == 3 and scores.dim() == 3:
        first = _first_visible(visible.numpy())
        if float(first.mean()) * scores.shape[1] >= PER_SEQUENCE_MIN_SKIPPED:
            return torch.from_numpy(_top_k_per_sequence(scores.numpy(), visible.numpy(), k, first))
    values = scores.numpy()
    if visible is not None:
        values = np.where(visible.numpy(), values, np.float32(NEG_INF))
    flat = np.ascontiguousarray(values).reshape(-1, length)
    return torch.from_numpy(_top_k_rows(flat, k)).view(*lead, k)


def select_top_k(relevance: Tensor, mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k positions per target (ties: later positions first) and whether each is a real behaviour.

    relevance [B, C, L], mask [B, L] (or per target [B, C, L]) -> (indices [B, C, k'], valid
    [B, C, k']) with k' = min(k, L), best first. Masked positions get -inf, so they are chosen only
    when a target sees fewer than k real behaviours, and then ``valid`` is False there.
    """
    length = relevance.shape[-1]
    k = min(k, length)
    mask = mask[:, None, :] if mask.dim() == 2 else mask
    indices = top_k_latest_first(relevance, k, visible=mask)
    valid = torch.gather(mask.expand(-1, relevance.shape[1], -1), 2, indices)
    return indices, valid


DRAWS_PER_SAMPLE = 4  # random positions drawn per wanted one; rows left short take the slow path


def sample_allowed(allowed: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """n positions per row drawn uniformly without replacement among the allowed ones, and which
    are real: allowed [..., L] -> (positions [..., n'], valid [..., n']) with n' = min(n, L).

    Each row draws ``DRAWS_PER_SAMPLE``·n positions with replacement and keeps the first n that
    are allowed and not drawn before: a uniformly random n-subset, in random order, for the cost of
    a few n per row (where random keys over all L and a top-n cost more than the GSU's scores at
    L = 2000). A row with fewer than n such draws (few allowed positions) draws among its allowed
    positions alone (:func:`_sample_among_few`; where fewer than n are allowed, all of them, then
    invalid ones).
    """
    *lead, length = allowed.shape
    n = min(n, length)
    flat = allowed.reshape(-1, length)
    rows = flat.shape[0]
    positions = torch.zeros((rows, n), dtype=torch.long, device=allowed.device)
    valid = torch.zeros((rows, n), dtype=torch.bool, device=allowed.device)
    if n == 0 or rows == 0:
        return positions.view(*lead, n), valid.view(*lead, n)
    draws = torch.randint(length, (rows, DRAWS_PER_SAMPLE * n), device=allowed.device)
    usable = torch.gather(flat, 1, draws)
    order = torch.argsort(draws, dim=1, stable=True)  # equal draws stay in draw order
    ordered = torch.gather(draws, 1, order)
    repeated = torch.zeros_like(usable)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]  # a later copy of an earlier draw
    usable &= ~torch.zeros_like(usable).scatter_(1, order, repeated)
    taken = usable & (usable.cumsum(dim=1) <= n)
    enough = taken.sum(dim=1) == n
    positions[enough] = draws[taken & enough[:, None]].view(-1, n)
    valid[enough] = True
    if not bool(enough.all()):
        short = ~enough
        positions[short], valid[short] = _sample_among_few(flat[short], n)
    return positions.view(*lead, n), valid.view(*lead, n)


def _sample_among_few(allowed: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """:func:`sample_allowed` for rows [S, L] with few allowed positions: each row's allowed
    positions packed left (a long window's short rows hold mostly padding), random keys on the
    packed rows only, and the n largest: a uniformly random n-subset in random order, or all of
    them and then invalid places (position 0) where a row allows fewer than n."""
    rows = allowed.shape[0]
    counts = allowed.sum(dim=1)
    width = max(int(counts.max()), 1)
    packed = torch.zeros((rows, width), dtype=torch.long, device=allowed.device)
    real = torch.arange(width, device=allowed.device)[None, :] < counts[:, None]
    packed[real] = allowed.nonzero()[:, 1]  # row-major: each row's positions, in order, packed left
    keys = torch.rand((rows, width), device=allowed.device).masked_fill_(~real, -1.0)
    order = torch.topk(keys, min(n, width), dim=1).indices
    positions = torch.zeros((rows, n), dtype=torch.long, device=allowed.device)
    valid = torch.zeros((rows, n), dtype=torch.bool, device=allowed.device)
    positions[:, : order.shape[1]] = torch.gather(packed, 1, order)
    valid[:, : order.shape[1]] = torch.gather(real, 1, order)
    return positions, valid


def shared_ends(ends: Tensor) -> Tensor:
    """``ends`` [B, C], or its first row [1, C] where every sequence's targets end alike (training
    windows): what is formed per target from it then broadcasts over the sequences."""
    return ends[:1] if bool((ends == ends[:1]).all()) else ends


def band_mask(mask: Tensor, ends: Tensor, length: int) -> Tensor:
    """Which behaviours each target sees [B, C, W]: real ones in ``[end - length, end)`` of the window.

    mask [B, W] (real behaviours), ends [B, C] (exclusive end of each target's history). Where every
    sequence's targets end alike (training windows) the band is formed once, [1, C, W].
    """
    positions = torch.arange(mask.shape[1], device=mask.device)
    rows = shared_ends(ends)
    band = (positions < rows[:, :, None]) & (positions >= (rows - length)[:, :, None])
    return mask[:, None, :] & band


class GeneralSearch(nn.Module):
    """Base class: a strategy maps SearchInputs to relevance [B, C, L].

    It also says what the ESU sees: by default the fused embeddings ``Σ_m γ_m x(m)``; SEMINAR's
    GSU feeds its G_j-projected ones instead (paper: x^ESU = x^GSU).
    """

    trains_selection: ClassVar[bool] = False
    """Whether the GSU has weights of its own that top-K selection gives no gradient. If so, the ranker
    trains them by its GSU-ESU consistency loss (weight ``gsu_consistency``): such a GSU scores with
    the ESU's key tables (x^ESU = x^GSU), takes them as ``relevance(inputs, history_tables)`` so the
    history is projected once, and gives its trainable logits through :meth:`logits_at`."""

    scores_content: ClassVar[bool] = False
    """Whether the GSU ranks behaviours by what they are and never by where they lie (SIM soft, ETA,
    TWIN, QIN, SEMINAR; exact or held as codes): the GSUs that ``gsu_recency`` adds the recency bias
    to. Recency and SIM hard (most recent first within the category) see time already."""

    fresh_relevance: ClassVar[bool] = False
    """Whether :meth:`relevance` returns a tensor formed for the call (a product), never a view of
    another: then :meth:`biased_relevance` adds the bias in place (an out-of-place add of the
    broadcast bias took 29 ms a training step at [8, 352, 2031] in a profile)."""

    def relevance(self, inputs: SearchInputs) -> Tensor:
        raise NotImplementedError

    def biased_relevance(
        self, inputs: SearchInputs, bias: Tensor | None, history_tables: KeyTables | None = None
    ) -> Tensor:
        """:meth:`relevance` plus a per-behaviour ``bias`` [B, C, L] (None: none). A GSU that
        shortlists by approximate scores overrides this to shortlist by the biased ones."""
        # a GSU that trains its selection scores with the ESU's tables (see trains_selection)
        with_tables = (history_tables,) if history_tables is not None else ()
        scores = self.relevance(inputs, *with_tables)
        if bias is None:
            return scores
        return scores.add_(bias) if self.fresh_relevance else scores + bias

    def logits_at(
        self,
        inputs: SearchInputs,
        positions: Tensor,
        history_tables: KeyTables | None = None,
        dense_ratio: int = 8,
    ) -> Tensor:
        """Trainable GSU logits [B, C, P] at ``positions`` [B, C, P] (only if :attr:`trains_selection`)."""
        raise NotImplementedError(f"{type(self).__name__} has no trainable selection")

    def esu_tables(self, pair: PairEmbedding) -> KeyTables:
        """Per distinct id, the γ-weighted channels the ESU's keys are summed from."""
        return pair.weighted_channel_tables()

    def esu_target(self, target: PairEmbedding) -> Tensor:
        """The ESU's query vector of each target [..., d]."""
        return target.fused()


class BilinearSearch(GeneralSearch):
    """A GSU whose relevance is linear in the behaviour: ``<u_target, Σ_m z_m(behaviour)>``.

    ``z_0`` depends only on the behaviour's query id and ``z_m`` (m ≥ 1) only on its item id, so
    per-id key tables exist; that is what lets product quantization of those tables stand in for
    the GSU at inference (:mod:`seminar.retrieval.gsu`).
    """

    scores_content = True
    fresh_relevance = True

    def key_tables(self, pair: PairEmbedding) -> KeyTables:
        """(query keys [Uq, d], item keys [Ui, M-1, d]) over the distinct ids of ``pair``."""
        return pair.weighted_channel_tables()

    def query_vectors(self, inputs: SearchInputs) -> Tensor:
        """u [B, C, d] of every target."""
        raise NotImplementedError

    def keys(self, pair: PairEmbedding, tables: KeyTables | None = None) -> Tensor:
        """Σ_m z_m gathered for every behaviour of ``pair``: [..., d] (from ``tables`` when given)."""
        return pair.sum_all(tables if tables is not None else self.key_tables(pair))

    def factorised_relevance(self, inputs: SearchInputs) -> Tensor:
        """The same scores as :meth:`relevance` computed from the factors (tests hold them equal)."""
        scores = torch.einsum("bcd,bld->bcl", self.query_vectors(inputs), self.keys(inputs.history))
        return scores.masked_fill(~inputs.mask[:, None, :], NEG_INF)


class RecencySearch(GeneralSearch):
    """The floor: the K most recent behaviours, whatever the target."""

    def relevance(self, inputs: SearchInputs) -> Tensor:
        b, c = inputs.target_items.shape
        positions = torch.arange(inputs.mask.shape[1], device=inputs.mask.device, dtype=torch.float32)
        return positions.expand(b, c, -1)


class SimHardSearch(GeneralSearch):
    """SIM hard search: behaviours whose item shares the target's category, most recent first."""

    def __init__(self, item_category: Tensor) -> None:
        super().__init__()
        self.register_buffer("item_category", item_category, persistent=False)

    def relevance(self, inputs: SearchInputs) -> Tensor:
        target = self.item_category[inputs.target_items]  # B C
        hist = self.item_category[inputs.hist_items]  # B L
        same = (target[:, :, None] == hist[:, None, :]) & (target[:, :, None] > 0)
        positions = torch.arange(hist.shape[1], device=hist.device, dtype=torch.float32) / hist.shape[1]
        return same.float() + positions  # category match dominates, recency breaks ties


class SimSoftSearch(BilinearSearch):
    """SIM soft search: inner product of the fused target and behaviour embeddings."""

    def query_vectors(self, inputs: SearchInputs) -> Tensor:
        return inputs.target_fused

    def relevance(self, inputs: SearchInputs) -> Tensor:
        return target_behaviour_products(inputs.target_fused, inputs.hist_fused)


def popcount64(x: Tensor) -> Tensor:
    """Number of set bits of each int64 (SWAR bit counting; torch has no popcount)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56) & 0xFF


def pack_sign_bits(projected: Tensor) -> Tensor:
    """Signs of [..., n_bits] (n_bits a multiple of 64) packed into int64 words [..., n_bits / 64]."""
    bits = (projected > 0).to(torch.int64)
    words = bits.view(*bits.shape[:-1], -1, 64)
    shifts = torch.arange(64, device=bits.device, dtype=torch.int64)
    return (words << shifts).sum(dim=-1)  # bit 63 makes the word negative: fine for XOR/popcount


class EtaSearch(GeneralSearch):
    """ETA: SimHash sign bits of fused embeddings; top-K by smallest Hamming distance (packed, popcount).

    With ``gsu_recency`` the bias is added to the negative distance as it stands: one bit of Hamming
    distance weighs as much as one unit of the ESU's recency logit.
    """

    scores_content = True
    fresh_relevance = True

    def __init__(self, dim: int, n_bits: int = 64, seed: int = 0) -> None:
        super().__init__()
        if n_bits % 64:
            raise ValueError(f"ETA hash length must be a multiple of 64 bits, got {n_bits}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(dim, n_bits, generator=generator))

    def codes(self, x: Tensor) -> Tensor:
        return pack_sign_bits(x.detach().float() @ self.projection)

    def relevance(self, inputs: SearchInputs) -> Tensor:
        target = self.codes(inputs.target_fused)  # B C W
        hist = self.codes(inputs.hist_fused)  # B L W
        distance = popcount64(target[:, :, None, :] ^ hist[:, None, :, :]).sum(dim=-1)
        return -distance.float()


class TwinSearch(BilinearSearch):
    """TWIN CP-GSU: the ESU's own attention parameters score all L behaviours (shared, not copied)."""

    def __init__(self, esu: TargetAttention) -> None:
        super().__init__()
        self._esu = Borrowed(esu)  # the ranker owns it: its weights appear once in the state dict

    @property
    def esu(self) -> TargetAttention:
        """The ranker's ESU, whose attention parameters this GSU scores all L behaviours with."""
        return self._esu.module

    def relevance(self, inputs: SearchInputs) -> Tensor:
        return self.esu.relevance(inputs.target_fused, inputs.hist_fused, inputs.mask)

    def query_vectors(self, inputs: SearchInputs) -> Tensor:
        return self.esu.query_vector(inputs.target_fused)


class QinSearch(GeneralSearch):
    """QIN (CIKM'23, query-dominant): top-K1 by the target query, then rank those by the target item.

    The first stage scores the relevance of the target query to each behaviour's *item* (as the
    published relevance search unit does), not query-to-query similarity: with the empty query of
    a recommendation every past query would tie, and the first stage would select nothing. With
    ``gsu_recency`` the bias is added to the second stage's scores (the first stage's K1 stay the
    query's).
    """

    scores_content = True
    fresh_relevance = True

    def __init__(self, first_stage: int) -> None:
        super().__init__()
        self.first_stage = first_stage

    def relevance(self, inputs: SearchInputs) -> Tensor:
        query_sim = target_behaviour_products(inputs.target.query(), inputs.history.item())
        stage_one, _ = select_top_k(query_sim, inputs.target_mask, self.first_stage)
        item_sim = target_behaviour_products(inputs.target.item(), inputs.history.item())
        keep = torch.zeros_like(item_sim, dtype=torch.bool).scatter_(2, stage_one, True)
        return item_sim.masked_fill(~keep, NEG_INF)


class SeminarSearch(BilinearSearch):
    """SEMINAR GSU: per-channel projections G_j of the (PSU-initialised) embeddings, then its own MHTA.

    ``x^GSU(j) = x(j) G_j``; relevance = head-averaged ``(q W^Q)(K W^K)^T / sqrt(d)`` over all L.
    G_j start as identity so restored PSU embeddings are meaningful from the first step. Top-K has no
    gradient, so W^GSU is trained by the ranker's GSU-ESU consistency loss (:attr:`trains_selection`).
    """

    trains_selection = True

    def __init__(self, dim: int, n_channels: int, heads: int) -> None:
        super().__init__()
        self.projections = nn.Parameter(torch.eye(dim).repeat(n_channels, 1, 1))  # M d d
        self.attention = TargetAttention(dim, heads, values=False)

    def relevance(self, inputs: SearchInputs, history_tables: KeyTables | None = None) -> Tensor:
        """Logits over all L behaviours; ``history_tables`` are :meth:`key_tables` of the history,
        passed in when the caller needs them again (the training step projects the history once)."""
        keys = self.keys(inputs.history, history_tables)
        target = inputs.target.projected(self.projections)
        return self.attention.relevance(target, keys, inputs.mask)

    def key_tables(self, pair: PairEmbedding) -> KeyTables:
        return pair.weighted_channel_tables(self.projections)

    def esu_tables(self, pair: PairEmbedding) -> KeyTables:
        return self.key_tables(pair)

    def esu_target(self, target: PairEmbedding) -> Tensor:
        return target.projected(self.projections)

    def logits_at(
        self,
        inputs: SearchInputs,
        positions: Tensor,
        history_tables: KeyTables | None = None,
        dense_ratio: int = 8,
    ) -> Tensor:
        """GSU logits [B, C, K] of the kept behaviours only: what the consistency loss trains.

        Equal to ``relevance(inputs)`` gathered at ``positions``. For a long window the keys are
        gathered per target, so the attention and its backward are O(K), not O(L); for a shorter one
        (at most ``dense_ratio``·K) one matrix product over the window and a gather of its result are
        cheaper than gathering [B, C, K, d] keys and their gradients.
        """
        tables = history_tables if history_tables is not None else self.key_tables(inputs.history)
        u = self.query_vectors(inputs)
        if inputs.mask.shape[1] <= dense_ratio * positions.shape[-1]:
            full = torch.einsum("bcd,bld->bcl", u, inputs.history.sum_all(tables))
            return torch.gather(full, 2, positions)
        keys = inputs.history.sum_at(tables, positions)
        return torch.einsum("bcd,bckd->bck", u, keys)

    def query_vectors(self, inputs: SearchInputs) -> Tensor:
        return self.attention.query_vector(inputs.target.projected(self.projections))
