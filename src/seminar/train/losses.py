"""Ranking losses over a positive and its sampled negatives, shared by every trained ranker.

Evaluation ranks one positive among many candidates, so training with a single negative and BCE
teaches little beyond popularity. Two losses are offered:

- ``bce``: binary cross-entropy, the positive labelled 1 and each of its N negatives labelled 0
  (the negatives' terms averaged, so that N does not rescale the loss against the positive's).
- ``softmax``: sampled softmax, cross-entropy of the positive among itself and its N negatives.
  With popularity-sampled negatives the logits are corrected by ``-log Q(item)`` (the log-Q
  correction), so that the loss estimates the full softmax rather than one biased towards rare items.

Both take a validity mask over targets, so padded targets of a partial window contribute nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossKind = Literal["bce", "softmax"]
LOSSES: tuple[str, ...] = ("bce", "softmax")


def ranking_loss(
    positive: Tensor,
    negative: Tensor,
    valid: Tensor | None = None,
    kind: LossKind = "softmax",
    positive_log_q: Tensor | None = None,
    negative_log_q: Tensor | None = None,
) -> Tensor:
    """Mean loss over valid targets.

    positive [...], negative [..., N] logits; ``valid`` [...] marks real targets (all when None);
    ``*_log_q`` are the log sampling probabilities of the items (softmax only; None = uniform,
    where the correction is a constant and cancels).
    """
    positive, negative = positive.float(), negative.float()
    if kind == "softmax":
        if positive_log_q is not None and negative_log_q is not None:
            positive = positive - positive_log_q.float()
            negative = negative - negative_log_q.float()
        logits = torch.cat([positive.unsqueeze(-1), negative], dim=-1)
        per_target = -torch.log_softmax(logits, dim=-1)[..., 0]
    elif kind == "bce":
        pos = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="none")
        neg = F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="none")
        per_target = pos + neg.mean(dim=-1)
    else:
        raise ValueError(f"unknown loss {kind!r}; choose one of {LOSSES}")
    if valid is None:
        return per_target.mean()
    weight = valid.to(per_target.dtype)
    return (per_target * weight).sum() / weight.sum().clamp_min(1.0)
