"""Training negatives drawn from the positive's own category (``--negative-sampling category|mixed``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.categories import item_categories
from seminar.data.loader import NegativeSampler, TrainSamples, WindowConfig
from seminar.data.schema import SeminarDataset
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("negatives") / "ds")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12))
def test_category_negatives_share_the_positive_category_and_never_are_it(
    ds: SeminarDataset, seed: int, n: int
):
    categories = item_categories(ds)
    sizes = np.bincount(categories)
    rng = np.random.default_rng(seed)
    positives = rng.integers(1, ds.n_items + 1, size=(7, 5))
    neg = NegativeSampler(ds, "category").sample(rng, positives, n)
    assert neg.shape == (7, 5, n)
    assert (neg >= 1).all() and (neg <= ds.n_items).all()
    assert not (neg == positives[..., None]).any()
    has_others = (categories[positives] > 0) & (sizes[categories[positives]] > 1)
    same = categories[neg] == categories[positives][..., None]
    assert same[has_others].all()


def test_mixed_negatives_are_half_in_category_half_uniform(ds: SeminarDataset):
    categories = item_categories(ds)
    rng = np.random.default_rng(0)
    positives = rng.integers(1, ds.n_items + 1, size=4000)
    neg = NegativeSampler(ds, "mixed").sample(rng, positives, 4)
    same = categories[neg] == categories[positives][:, None]
    usable = (categories[positives] > 0) & (np.bincount(categories)[categories[positives]] > 1)
    assert same[usable][:, :2].all()
    # the uniform half matches the category about as often as the category's share of items
    share = np.bincount(categories)[categories[positives[usable]]] / ds.n_items
    assert abs(same[usable][:, 2:].mean() - share.mean()) < 0.03


def test_category_negatives_are_uniform_within_the_category(ds: SeminarDataset):
    categories = item_categories(ds)
    positive = int(np.flatnonzero(np.bincount(categories)[categories] >= 5)[-1])
    others = np.flatnonzero(categories == categories[positive])
    others = others[(others != positive) & (others > 0)]
    neg = NegativeSampler(ds, "category").sample(np.random.default_rng(1), np.full(20_000, positive), 1)
    counts = np.bincount(neg.ravel(), minlength=ds.n_items + 1)[others]
    assert counts.sum() == 20_000
    expected = 20_000 / others.size
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_training_batches_carry_category_negatives_without_log_q(ds: SeminarDataset):
    samples = TrainSamples(ds, WindowConfig(max_length=20, train_negatives=3, negative_sampling="category"))
    batch = samples.__getitems__(list(range(16)))
    assert batch["neg_items"].shape == (16, 3)
    assert "neg_log_q" not in batch


def test_category_sampling_without_categories_is_refused(tmp_path: Path):
    plain = synthetic_dataset(tmp_path / "ds")
    plain.manifest["attribute_fields"] = []  # as a dataset without attributes
    assert not item_categories(plain).any()
    with pytest.raises(ValueError, match="needs item categories"):
        NegativeSampler(plain, "category")
