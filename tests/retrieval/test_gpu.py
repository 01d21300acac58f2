"""Batched PQ path on CUDA; skipped cleanly on machines without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seminar.retrieval.kernels import batched_adc_topk, batched_tables, codes_to_tensor

from .conftest import trained_pq

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
]


def test_gpu_batched_matches_cpu() -> None:
    pq = trained_pq(4, 16, 4, 16)
    rng = np.random.default_rng(0)
    codes = pq.encode(rng.standard_normal((6 * 300, 4, 16))).reshape(6, 300, 4, 4)
    mask = torch.from_numpy(np.arange(300)[None, :] < rng.integers(1, 301, 6)[:, None])
    tables = batched_tables(pq, rng.standard_normal((6, 4, 16)), np.full(4, 0.25))
    cpu_s, cpu_i = batched_adc_topk(codes_to_tensor(codes), tables, 32, mask)
    gpu_s, gpu_i = batched_adc_topk(codes_to_tensor(codes, "cuda"), tables.cuda(), 32, mask.cuda())
    torch.testing.assert_close(gpu_s.cpu(), cpu_s, rtol=1e-4, atol=1e-4)
    valid = gpu_i.cpu() >= 0
    assert torch.equal(valid, cpu_i >= 0)
    assert (gpu_i.cpu()[valid] < mask.sum(1, keepdim=True).expand_as(valid)[valid]).all()
