"""Multi-head target attention (MHTA): the one structure PSU, GSU, ESU and the baselines share.

``alpha_h = (q W_h^Q)(K W_h^K)^T / sqrt(d)``, softmax over real (non-padding) behaviours only,
values through ``W_h^V``, heads concatenated and projected by ``W^O``. Every projection is a
registered ``nn.Linear``, so it is trained, saved and moved with the module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seminar.models.products import target_behaviour_products


def _per_head(mask: Tensor) -> Tensor:
    """A [B, L] or per-target [B, C, L] mask shaped to broadcast over logits [B, C, H, L]."""
    return mask[:, None, None, :] if mask.dim() == 2 else mask[:, :, None, :]


class TargetAttention(nn.Module):
    """MHTA. With ``values=False`` it only scores (a GSU ranks by logits and needs no W^V, W^O)."""

    def __init__(self, dim: int, heads: int = 4, values: bool = True) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.query = nn.Linear(dim, heads * dim, bias=False)
        self.key = nn.Linear(dim, heads * dim, bias=False)
        self.value = nn.Linear(dim, heads * dim, bias=False) if values else None
        self.out = nn.Linear(heads * dim, dim, bias=False) if values else None

    def _split(self, x: Tensor) -> Tensor:
        """[..., H*d] -> [..., H, d]."""
        return x.view(*x.shape[:-1], self.heads, self.dim)

    def _heads(self, linear: nn.Linear) -> Tensor:
        """A projection's weight as [H, d_out, d_in] (nn.Linear computes x W^T)."""
        return linear.weight.view(self.heads, self.dim, -1)

    def logits(self, target: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Per-head attention logits, padding set to -inf.

        target [B, C, d] (C targets per sequence), keys [B, L, d], mask [B, L] (or per target
        [B, C, L]) -> [B, C, H, L]. ``W^K`` is folded into the target side,
        ``(q W^Q_h)·(x W^K_h) = (W^K_h^T q W^Q_h)·x``, so the L keys are never projected: exact, and
        cheaper whenever C is small against L.
        """
        scores = torch.einsum("bche,ble->bchl", self._folded(target), keys) / math.sqrt(self.dim)
        return scores.masked_fill(~_per_head(mask), float("-inf"))

    def _folded(self, target: Tensor) -> Tensor:
        """Per-head ``W^K_h^T (q W^Q_h)`` [..., H, d]: the target side of the folded logits."""
        q = self._split(self.query(target))
        return torch.einsum("...hd,hde->...he", q, self._heads(self.key))

    def query_vector(self, target: Tensor) -> Tensor:
        """u [..., d] with ``relevance = <u, key>``: head-averaged logits are linear in the key.

        This is what lets approximate retrieval (PQ tables over keys) stand in for a GSU.
        """
        return self._folded(target).mean(dim=-2) / math.sqrt(self.dim)

    def relevance(self, target: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Head-averaged logits [B, C, L]: the score a GSU ranks behaviours by.

        Formed as ``<u, key>`` with u the heads' mean folded target (:meth:`query_vector`): one
        product with the L keys instead of one per head (equal up to float rounding; tests hold it
        to the mean of :meth:`logits`).
        """
        scores = target_behaviour_products(self.query_vector(target), keys)
        if mask.dim() == 3:
            return scores.masked_fill_(~mask, float("-inf"))
        # a [B, L] mask as an additive one of 0 and -inf, broadcast over the targets: several times
        # faster than masked_fill on [B, C, L] scores (x + 0 is x exactly)
        additive = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
        return scores.add_(additive.masked_fill_(~mask, float("-inf"))[:, None, :])

    def attend(self, logits: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Masked softmax of ``logits`` [B, C, H, L] over ``values`` [B, L, d] -> ([B, C, d], weights).

        ``mask`` is [B, L] or per target [B, C, L]. ``W^V`` is applied after pooling (it is linear),
        so only one vector per head is projected.
        """
        if self.value is None or self.out is None:
            raise RuntimeError("this attention was built with values=False: it scores but does not attend")
        per_head = _per_head(mask)
        has_any = per_head.any(dim=-1, keepdim=True)
        weights = torch.softmax(logits.masked_fill(~has_any, 0.0), dim=-1)
        weights = torch.where(per_head, weights, torch.zeros_like(weights))
        pooled = torch.einsum("bchl,bld->bchd", weights, values)
        heads = torch.einsum("bche,hde->bchd", pooled, self._heads(self.value))
        return self.out(heads.flatten(-2)), weights

    def forward(self, target: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Interest vector [B, C, d] of each of C targets over its sequence."""
        output, _ = self.attend(self.logits(target, keys, mask), keys, mask)
        return output

    def reference(self, target: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The plain formulation (project every key and value); tests hold the fast path equal to it."""
        q = self._split(self.query(target))
        k = self._split(self.key(keys))
        scores = torch.einsum("bchd,blhd->bchl", q, k) / math.sqrt(self.dim)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        if self.value is None or self.out is None:
            return scores, scores
        weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
        v = self._split(self.value(keys))
        return scores, self.out(torch.einsum("bchl,blhd->bchd", weights, v).flatten(-2))
