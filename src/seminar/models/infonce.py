"""The PSU's alignment loss: symmetric InfoNCE between two channels' unit vectors within groups.

:func:`clip_loss` is the plain form (each direction's masked logsumexp, as autograd derives it) and
the reference; :func:`shared_exp_clip_loss` gives the same loss and gradients with one exponential
for both directions. At the lifelong benchmark's size the logits are [1024 groups, 128, 128] per
channel pair, three pairs a step, and the plain form's dozen passes over them (two logsumexps
forward, their softmaxes backward) were most of a PSU step. Unit vectors bound every logit by
1 / temperature, so one shift serves every row and column: the loss exponentiates once, keeps the
result for the backward (whose gradient is that same matrix reweighted per row and column), and
needs no maximum per row. Tests hold the two forms equal, gradients included.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "MAX_EXP_RANGE",
    "clip_allowed",
    "clip_loss",
    "clip_mask",
    "clip_mask_of",
    "one_shift_serves",
    "shared_exp_clip_loss",
    "shifted_clip_mask",
]

MAX_EXP_RANGE = 80.0
"""The widest logit range (2 / temperature for unit vectors) one shared shift may span: e^-80 is
still a normal float32, so no allowed pair's term underflows to zero. Beyond it (a temperature
below 0.025) :func:`shared_exp_clip_loss` falls back to :func:`clip_loss`."""


def one_shift_serves(temperature: float) -> bool:
    """Whether unit vectors' logits at this temperature span at most :data:`MAX_EXP_RANGE`, so that
    :func:`shared_exp_clip_loss` can exponentiate them with one shift."""
    return 2 / temperature <= MAX_EXP_RANGE


def clip_allowed(valid: Tensor, exclude: Tensor | None = None) -> Tensor:
    """[N, S, S]: where a pair (s, t) may meet: both real and not excluded (the diagonal always is).

    Symmetric when ``exclude`` is (repeated items are), so it serves both directions of the loss."""
    allowed = valid[:, :, None] & valid[:, None, :]
    if exclude is not None:
        eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
        allowed = allowed & ~(exclude & ~eye)
    return allowed


def clip_mask(valid: Tensor, exclude: Tensor | None = None) -> Tensor:
    """The additive logit mask [N, S, S] of :func:`clip_loss`: 0 where a pair may meet, -inf where not.

    A padded anchor's whole row is 0 instead, so its terms stay finite (and are weighted out). It
    depends on no channel: the alignment loss builds it once for every channel pair, and the second
    direction reads it transposed (:func:`clip_allowed` is symmetric).
    """
    return clip_mask_of(clip_allowed(valid, exclude), valid)


def clip_loss(
    a: Tensor,
    b: Tensor,
    valid: Tensor,
    temperature: float,
    exclude: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE between row-aligned unit vectors ``a``, ``b`` [N, S, d] within each of N groups.

    Logits are cosine similarities divided by ``temperature``. Invalid rows (padding) take no part,
    as anchors or as negatives; ``exclude`` [N, S, S] removes further negatives (e.g. repeated
    items); ``mask``: :func:`clip_mask` of (valid, exclude), when the caller has it already.
    Returns the mean over valid anchors of both directions: each anchor's
    logsumexp over what it may meet, less its own pair's logit.
    """
    if mask is None:
        mask = clip_mask(valid, exclude)
    logits = torch.einsum("nsd,ntd->nst", a, b) / temperature
    own = (a * b).sum(dim=-1) / temperature  # (an einsum runs this as N·S one-element matmuls)
    rows = torch.logsumexp(logits + mask, dim=2) - own  # a_s against every b_t
    cols = torch.logsumexp(logits + mask.transpose(1, 2), dim=1) - own  # b_t against every a_s
    n_valid = valid.sum().clamp_min(1)
    return ((rows + cols) * valid).sum() / (2 * n_valid)


class _SharedExpInfoNCE(torch.autograd.Function):
    """sum_s w_s (log Σ_t E_st + log Σ_t E_ts + 2 (τ⁻¹ - own_s)), E = exp(logits + mask - τ⁻¹)
    (the shift τ⁻¹ = 1 / temperature is in ``shifted_mask``).

    Backward: d/d logits_st = E_st (r_s + c_t) with r = w / row sums, c = w / column sums (each
    direction's softmax, weighted); E is overwritten by it, the saved matrix read once more, so a
    second backward through the same graph (``retain_graph``) is refused rather than wrong."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # sums of exponentials: fp32
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        a: Tensor,
        b: Tensor,
        weights: Tensor,
        shifted_mask: Tensor,
        inv_temperature: float,
    ) -> Tensor:
        scaled = a * inv_temperature
        exp = torch.baddbmm(shifted_mask, scaled, b.transpose(1, 2)).exp_()
        row, col = exp.sum(dim=2), exp.sum(dim=1)
        anchor = weights > 0  # a padded anchor's sums may be 0: its log is left out (weight 0)
        own = (scaled * b).sum(dim=-1)
        logs = torch.where(anchor, row.log() + col.log(), 0.0)
        ctx.save_for_backward(a, b, exp, row, col, weights)
        ctx.inv_temperature = inv_temperature
        return ((logs + 2 * (inv_temperature - own)) * weights).sum()

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if getattr(ctx, "spent", False):
            raise RuntimeError("shared_exp_clip_loss: its backward reuses its saved matrix and runs once")
        ctx.spent = True
        a, b, exp, row, col, weights = ctx.saved_tensors
        inv_t = ctx.inv_temperature
        weighted = weights * grad
        anchor = weights > 0
        per_row = torch.where(anchor, weighted / row, 0.0)
        per_col = torch.where(anchor, weighted / col, 0.0)
        dlogits = exp.mul_(per_row[:, :, None] + per_col[:, None, :])  # the saved E, used up here
        own = (2 * inv_t) * weighted[:, :, None]
        da = torch.bmm(dlogits, b).mul_(inv_t) - own * b
        db = torch.bmm(dlogits.transpose(1, 2), a).mul_(inv_t) - own * a
        return da, db, None, None, None


def shared_exp_clip_loss(
    a: Tensor,
    b: Tensor,
    valid: Tensor,
    temperature: float,
    allowed: Tensor,
    shifted_mask: Tensor | None = None,
    unit: bool = False,
) -> Tensor:
    """:func:`clip_loss` with one exponential for both directions (same value and gradients).

    ``a`` and ``b`` must have norms at most 1 (unit vectors; padding may be zero), so that every
    logit is at most 1 / temperature; ``allowed`` is :func:`clip_allowed` (symmetric);
    ``shifted_mask`` is :func:`shifted_clip_mask` of it, when the caller shares one across channel
    pairs; ``unit=True`` says the caller normalised them (the norms are not checked again: on the
    strided channel slices the check cost about a tenth of the loss). A temperature so low that the
    logits span more than :data:`MAX_EXP_RANGE` takes the plain form.
    """
    if not one_shift_serves(temperature):
        return clip_loss(a, b, valid, temperature, mask=clip_mask_of(allowed, valid))
    if not unit:
        longest = a.detach().norm(dim=-1).amax() * b.detach().norm(dim=-1).amax()
        if longest > 1 + 1e-5:
            raise ValueError(
                f"shared_exp_clip_loss needs vectors of norm <= 1, got a product of {float(longest):.4g}"
            )
    if shifted_mask is None:
        shifted_mask = shifted_clip_mask(allowed, temperature)
    weights = valid.to(a.dtype) / (2 * valid.sum().clamp_min(1))
    return _SharedExpInfoNCE.apply(a, b, weights, shifted_mask, 1.0 / temperature)


def shifted_clip_mask(allowed: Tensor, temperature: float) -> Tensor:
    """The additive mask of :func:`shared_exp_clip_loss`: -1 / temperature where ``allowed``, else -inf."""
    shift = torch.tensor(-1.0 / temperature, dtype=torch.float32, device=allowed.device)
    return torch.where(allowed, shift, float("-inf"))


def clip_mask_of(allowed: Tensor, valid: Tensor) -> Tensor:
    """:func:`clip_mask` from an ``allowed`` matrix already built."""
    zero = torch.zeros((), dtype=torch.float32, device=allowed.device)
    return torch.where(allowed | ~valid[:, :, None], zero, float("-inf"))
