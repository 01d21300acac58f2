"""Batched ADC scoring in Triton: padded code sequences of B users against per-user tables, then top-K.

One program scores one block of ``BLOCK_L`` positions of one user: it loads the block's codes
[BLOCK_L, S] (S = M·n_sub), gathers the user's table entries (S·C floats, small enough to stay in
cache), sums them in float32 and writes -inf at padded positions, so top-K (``torch.topk``) never
prefers padding. The padding convention is that of ``kernels.masked_topk``: when k exceeds a user's
real length, the tail holds index -1 and score -inf.

On CUDA the kernel is compiled. CPU tensors need Triton's interpreter: ``TRITON_INTERPRET=1`` must be
in the environment before this module is imported (the ``@triton.jit`` decorator reads it), which is
how the tests check the kernel without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seminar.retrieval.kernels import masked_topk

CODE_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)
TABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_BLOCK_S = 64


@triton.jit
def _adc_scores_kernel(
    codes_ptr,
    tables_ptr,
    mask_ptr,
    out_ptr,
    length,
    S: tl.constexpr,
    C: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    user = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    in_range = rows < length
    code_base = codes_ptr + user * length * S
    table_base = tables_ptr + user * S * C
    acc = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for start in tl.static_range(0, S, BLOCK_S):
        cols = start + tl.arange(0, BLOCK_S)
        valid = in_range[:, None] & (cols < S)[None, :]
        codes = tl.load(code_base + rows[:, None] * S + cols[None, :], mask=valid, other=0).to(tl.int32)
        codes = tl.minimum(tl.maximum(codes, 0), C - 1)  # never read outside the user's table
        values = tl.load(table_base + cols[None, :] * C + codes, mask=valid, other=0.0)
        acc += tl.sum(values.to(tl.float32), axis=1)
    if HAS_MASK:
        keep = tl.load(mask_ptr + user * length + rows, mask=in_range, other=0)
        acc = tl.where(keep != 0, acc, float("-inf"))
    tl.store(out_ptr + user * length + rows, acc, mask=in_range)


# @triton.jit returns an interpreted function instead of a JITFunction under TRITON_INTERPRET=1
INTERPRETED: bool = not isinstance(_adc_scores_kernel, triton.JITFunction)


def _check_inputs(codes: torch.Tensor, tables: torch.Tensor, mask: torch.Tensor | None) -> None:
    if codes.ndim != 4 or tables.ndim != 4:
        raise ValueError(
            f"expected codes [B, L, M, n_sub] and tables [B, M, n_sub, C], got {tuple(codes.shape)}"
            f" and {tuple(tables.shape)}"
        )
    if codes.shape[0] != tables.shape[0] or codes.shape[2:] != tables.shape[1:3]:
        raise ValueError(f"codes {tuple(codes.shape)} do not match tables {tuple(tables.shape)}")
    if codes.dtype not in CODE_DTYPES:
        raise ValueError(f"codes must be an integer tensor ({CODE_DTYPES}), got {codes.dtype}")
    if tables.dtype not in TABLE_DTYPES:
        raise ValueError(f"tables must be float32, float16 or bfloat16, got {tables.dtype}")
    if mask is not None and mask.shape != codes.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} != [B, L] = {tuple(codes.shape[:2])}")
    devices = {codes.device, tables.device} | ({mask.device} if mask is not None else set())
    if len(devices) != 1:
        raise ValueError(f"codes, tables and mask must be on one device, got {sorted(map(str, devices))}")
    if codes.device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            f"the Triton kernel runs on CUDA tensors (got {codes.device}); for CPU tensors set"
            " TRITON_INTERPRET=1 before importing seminar.retrieval.triton_pq"
        )


def triton_adc_scores(
    codes: torch.Tensor,
    tables: torch.Tensor,
    mask: torch.Tensor | None = None,
    check_range: bool = True,
    block_l: int = 128,
) -> torch.Tensor:
    """Float32 scores [B, L] of codes [B, L, M, n_sub] against tables [B, M, n_sub, C]; -inf where padded.

    ``check_range`` verifies that every code is below C (one extra pass and a device sync; the kernel
    clamps codes either way, so a bad code gives a wrong score, never a bad memory access).
    """
    _check_inputs(codes, tables, mask)
    if block_l <= 0 or block_l & (block_l - 1):
        raise ValueError(f"block_l must be a power of two, got {block_l}")
    batch, length = codes.shape[:2]
    n_codes = codes.shape[2] * codes.shape[3]
    n_centroids = tables.shape[-1]
    if check_range and codes.numel():
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= n_centroids:
            raise ValueError(f"codes must lie in [0, {n_centroids}), got range [{low}, {high}]")
    out = torch.empty((batch, length), dtype=torch.float32, device=codes.device)
    if out.numel() == 0:
        return out
    codes = codes.reshape(batch, length, n_codes).contiguous()
    tables = tables.reshape(batch, n_codes, n_centroids).contiguous()
    mask_arg = out if mask is None else mask.to(torch.bool).contiguous().view(torch.uint8)
    block_s = min(MAX_BLOCK_S, triton.next_power_of_2(n_codes))
    grid = (batch, triton.cdiv(length, block_l))
    _adc_scores_kernel[grid](
        codes,
        tables,
        mask_arg,
        out,
        length,
        S=n_codes,
        C=n_centroids,
        HAS_MASK=mask is not None,
        BLOCK_L=block_l,
        BLOCK_S=block_s,
    )
    return out


def triton_adc_topk(
    codes: torch.Tensor,
    tables: torch.Tensor,
    k: int,
    mask: torch.Tensor | None = None,
    check_range: bool = True,
    block_l: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, indices) per user, [B, k] each; same contract as ``kernels.batched_adc_topk``."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    scores = triton_adc_scores(codes, tables, mask, check_range=check_range, block_l=block_l)
    return masked_topk(scores, k, mask, premasked=True)
