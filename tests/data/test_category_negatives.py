"""Category-matched evaluation negatives: each user's negatives share the held-out positive's
category, lie outside the user's history, and fall back to uniform items only when the category
runs short (counted in the manifest)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.build import BuildConfig, build_dataset, source_fingerprint
from seminar.data.schema import load_dataset
from seminar.data.split import SplitConfig, sample_category_negatives
from seminar.data.tables import DataError
from seminar.models.features import item_categories
from tests.data.helpers import quiet_config, tiny_tables


def categories_config(negatives: int) -> BuildConfig:
    split = SplitConfig(negatives=negatives, eval_negatives="category")
    return BuildConfig(text_encoder="hashing:32", progress=False, split=split)


@settings(max_examples=25, deadline=None)
@given(
    n_users=st.integers(1, 12),
    n_items=st.integers(12, 40),
    n_categories=st.integers(1, 5),
    n_negatives=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_negatives_share_the_positive_category_outside_the_history(
    n_users: int, n_items: int, n_categories: int, n_negatives: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 8, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, n_items + 1, offsets[-1]).astype(np.int32)
    category = np.concatenate([[0], rng.integers(1, n_categories + 1, n_items)])
    positives = items[offsets[1:] - 1]
    if (
        n_items - np.array([np.unique(items[a:b]).size for a, b in itertools.pairwise(offsets)])
    ).min() < n_negatives:
        return  # not enough unseen items at all: the uniform sampler refuses (tested elsewhere)
    out, short = sample_category_negatives(offsets, items, n_items, n_negatives, rng, category, positives)
    shortfalls = 0
    for user in range(n_users):
        seen = set(items[offsets[user] : offsets[user + 1]].tolist())
        negatives = out[user].tolist()
        assert len(set(negatives)) == n_negatives and not seen & set(negatives)
        pool = {i for i in range(1, n_items + 1) if category[i] == category[positives[user]]} - seen
        if len(pool) >= n_negatives:
            assert set(negatives) <= pool
        else:  # every unseen item of the category, then uniform ones
            assert pool <= set(negatives)
            shortfalls += 1
    assert short == shortfalls


def test_a_built_dataset_draws_category_negatives_and_keeps_old_identities(tmp_path: Path) -> None:
    tables = tiny_tables(users=6, length=6, items=60)
    uniform, category = quiet_config(), quiet_config()
    category = type(category)(
        **{**category.__dict__, "split": SplitConfig(negatives=5, eval_negatives="category")}
    )
    assert (
        "eval_negatives" not in source_fingerprint(tables, uniform)["build"]["split"]
    )  # old datasets still match
    assert source_fingerprint(tables, category)["build"]["split"]["eval_negatives"] == "category"
    ds = load_dataset(build_dataset(tables, tmp_path / "d", category))
    cats = item_categories(ds)
    test_pos = np.asarray(ds.items)[ds.offsets[1:] - 1]
    negatives = np.asarray(ds.test_negatives)
    pooled = cats[negatives] == cats[test_pos][:, None]
    short = sum(v for k, v in ds.manifest["skipped"].items() if k.startswith("test users whose positive"))
    assert pooled.all(axis=1).sum() == ds.n_users - short


def test_category_negatives_need_a_category(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables.items = tables.items.select("item")
    tables.attribute_fields = []
    with pytest.raises(DataError, match="needs an item attribute"):
        build_dataset(tables, tmp_path / "d", categories_config(negatives=3))
    with pytest.raises(ValueError, match="eval_negatives"):
        SplitConfig(eval_negatives="popular")  # type: ignore[arg-type]
