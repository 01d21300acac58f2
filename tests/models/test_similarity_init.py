"""``RankerConfig.similarity_init``: the ESU's (and SEMINAR's GSU's) attention starts as the content
similarity ``q·x / sqrt(d)`` in every head, leaving every other weight as it was."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from seminar.data.schema import SeminarDataset
from seminar.models.attention import TargetAttention
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig
from seminar.models.search import SeminarSearch
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> FeatureTables:
    ds: SeminarDataset = synthetic_dataset(tmp_path_factory.mktemp("similarity") / "d", users=12, items=60)
    return FeatureTables.from_dataset(ds)


def test_every_head_starts_as_the_scaled_dot_product() -> None:
    torch.manual_seed(0)
    dim, heads = 8, 3
    attention = TargetAttention(dim, heads)
    attention.init_as_similarity()
    target, keys = torch.randn(2, 5, dim), torch.randn(2, 7, dim)
    mask = torch.rand(2, 7) < 0.8
    expected = torch.einsum("bcd,bld->bcl", target, keys) / math.sqrt(dim)
    hidden = ~mask[:, None]  # padding: -inf in every form
    logits = attention.logits(target, keys, mask)  # [B, C, H, L]
    scores, _ = attention.reference(target, keys, mask)  # the plain form (every key projected)
    for h in range(heads):
        torch.testing.assert_close(logits[:, :, h].masked_fill(hidden, 0), expected.masked_fill(hidden, 0))
        torch.testing.assert_close(scores[:, :, h].masked_fill(hidden, 0), expected.masked_fill(hidden, 0))
    relevance = attention.relevance(target, keys, mask)
    torch.testing.assert_close(relevance.masked_fill(hidden, 0), expected.masked_fill(hidden, 0))
    # the heads' weights differ (so do their gradients): they are not copies of one head
    first, second = attention.query.weight[:dim], attention.query.weight[dim : 2 * dim]
    assert not torch.allclose(first, second)
    torch.testing.assert_close(first.T @ first, torch.eye(dim), atol=1e-5, rtol=0)


def test_without_it_a_head_scores_a_random_bilinear_form() -> None:
    """The premise: by default ``W^Q_h`` and ``W^K_h`` are independent, so logits are not q·x."""
    torch.manual_seed(0)
    attention = TargetAttention(8, 2)
    target, keys = torch.randn(1, 4, 8), torch.randn(1, 6, 8)
    similarity = torch.einsum("bcd,bld->bcl", target, keys) / math.sqrt(8)
    relevance = attention.relevance(target, keys, torch.ones(1, 6, dtype=torch.bool))
    assert not torch.allclose(relevance, similarity)


@pytest.mark.parametrize("model", ["twin", "seminar", "sim_soft"])
def test_the_ranker_changes_its_scoring_attentions_only(tables: FeatureTables, model: str) -> None:
    config = RankerConfig(model=model, dim=16, heads=2, top_k=4)
    plain = Ranker(tables, config)
    similar = Ranker(tables, replace(config, similarity_init=True))
    changed = {"esu.query.weight", "esu.key.weight"}
    if isinstance(similar.search, SeminarSearch):
        changed |= {"search.attention.query.weight", "search.attention.key.weight"}
    state = similar.state_dict()
    for name, value in plain.state_dict().items():
        if name in changed:
            assert not torch.equal(state[name], value), name
        else:
            torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    x = torch.randn(3, 16)
    for attention in [similar.esu, *([similar.search.attention] if model == "seminar" else [])]:
        # u = the head-averaged folded target: x / sqrt(d), so a GSU on it ranks by <x, key>
        torch.testing.assert_close(attention.query_vector(x), x / math.sqrt(16), atol=1e-5, rtol=0)
