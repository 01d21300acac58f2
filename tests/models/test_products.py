"""The GSUs' target-behaviour product: numpy's matmul where no gradient is wanted equals the einsum."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.models.products import target_behaviour_products


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 40),
    n=st.integers(1, 300),
    d=st.integers(1, 48),
    transposed=st.booleans(),  # operands that are strided views, not contiguous tensors
    seed=st.integers(0, 2**31 - 1),
)
def test_it_equals_the_einsum(b: int, c: int, n: int, d: int, transposed: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randn(b, c, d, generator=generator)
    behaviours = torch.randn(b, n, d, generator=generator)
    if transposed:
        targets = torch.randn(b, d, c, generator=generator).transpose(1, 2)
        behaviours = torch.randn(n, b, d, generator=generator).transpose(0, 1)
    expected = torch.einsum("bcd,bld->bcl", targets, behaviours)
    with torch.no_grad():
        got = target_behaviour_products(targets, behaviours)
    assert got.shape == (b, c, n) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_product_that_needs_its_gradient_gets_one() -> None:
    targets = torch.randn(2, 3, 8, requires_grad=True)
    behaviours = torch.randn(2, 5, 8)
    target_behaviour_products(targets, behaviours).sum().backward()
    assert targets.grad is not None
    torch.testing.assert_close(targets.grad, behaviours.sum(dim=1, keepdim=True).expand(2, 3, 8))


def test_other_dtypes_keep_theirs() -> None:
    targets, behaviours = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 3, 4, dtype=torch.float64)
    assert target_behaviour_products(targets, behaviours).dtype == torch.float64
