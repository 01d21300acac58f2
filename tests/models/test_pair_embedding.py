"""PairEmbedding.sum_at: the gradient-free fast form (per-behaviour sums gathered) equals the
per-slot form exactly, and gradients still reach the tables."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.models.embedding import PairEmbedding


def pair(batch: int, length: int, seed: int, d: int = 8) -> PairEmbedding:
    g = torch.Generator().manual_seed(seed)
    queries, items = 5, 11
    return PairEmbedding(
        torch.randn(queries, d, generator=g),
        torch.randint(0, queries, (batch, length), generator=g),
        torch.randn(items, 2, d, generator=g),
        torch.rand(items, 2, generator=g),
        torch.randint(0, items, (batch, length), generator=g),
        0.3,
    )


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 30),
    targets=st.integers(1, 12),
    kept=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)
def test_sum_at_without_gradients_equals_the_per_slot_form(batch, length, targets, kept, seed):
    embedding = pair(batch, length, seed)
    tables = embedding.weighted_channel_tables()
    positions = torch.randint(
        0, length, (batch, targets, kept), generator=torch.Generator().manual_seed(seed)
    )
    per_slot = embedding.sum_at(tables, positions)  # gradients enabled: the per-slot form
    with torch.no_grad():
        gathered = embedding.sum_at(tables, positions)
    assert gathered.shape == (batch, targets, kept, 8)
    assert torch.equal(gathered, per_slot)


def test_sum_at_with_gradients_reaches_the_tables():
    embedding = pair(2, 4, 0)
    embedding.query_table.requires_grad_(True)
    tables = embedding.weighted_channel_tables()
    embedding.sum_at(tables, torch.randint(0, 4, (2, 6, 3))).sum().backward()
    assert embedding.query_table.grad is not None and embedding.query_table.grad.abs().sum() > 0
