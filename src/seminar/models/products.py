"""Inner products of every target with every behaviour, [B, C, L]: the GSUs' scoring product.

On a CPU core torch's batched matmul for these shapes (C targets and L behaviours of d = 32-64 per
sequence) runs at a fraction of what numpy's BLAS reaches: at B = 8, C = 352, L = 2031, d = 32,
11-14 ms against 4.4-5.8 ms. Where no gradient is wanted (a GSU's selection, evaluation) the product
goes through numpy; otherwise through ``torch.einsum``, the plain form it is tested against.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _wants_gradient(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def target_behaviour_products(targets: Tensor, behaviours: Tensor) -> Tensor:
    """``<targets[b, c], behaviours[b, l]>`` [B, C, L] of targets [B, C, d] and behaviours [B, L, d]."""
    on_cpu = targets.device.type == "cpu" and behaviours.device.type == "cpu"
    float32 = targets.dtype == behaviours.dtype == torch.float32
    if not on_cpu or not float32 or _wants_gradient(targets, behaviours):
        return torch.einsum("bcd,bld->bcl", targets, behaviours)
    # contiguous operands: numpy hands a matmul to BLAS only for those (else a slow loop of its own)
    left = np.ascontiguousarray(targets.detach().numpy())
    right = np.ascontiguousarray(behaviours.detach().numpy())
    products = np.matmul(left, right.transpose(0, 2, 1))
    return torch.from_numpy(products)
