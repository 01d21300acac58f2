"""Synthetic lifelong data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from tests.data.helpers import synthetic_dataset


def test_lengths_norms_and_search_share() -> None:
    cfg = SyntheticConfig(
        users=300,
        items=2000,
        mean_length=300,
        max_length=10_000,
        search_fraction=0.4,
        norms={"query": 0.25, "text": 1.0, "image": 2.0},
    )
    tables = generate_synthetic(cfg)
    lengths = tables.interactions.group_by("user").len()["len"].to_numpy()
    assert lengths.max() <= 10_000 and lengths.min() >= 3
    assert 200 < lengths.mean() < 400
    share = 1 - tables.interactions["query"].null_count() / tables.interactions.height
    assert abs(share - 0.4) < 0.02
    np.testing.assert_allclose(np.linalg.norm(tables.item_vectors["image"], axis=1), 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tables.query_vectors, axis=1), 0.25, rtol=1e-5)


def test_long_sequences_reach_ten_thousand() -> None:
    tables = generate_synthetic(SyntheticConfig(users=20, items=500, mean_length=20_000, max_length=10_000))
    assert tables.interactions.group_by("user").len()["len"].max() == 10_000


def test_users_follow_their_interests() -> None:
    """Items of a user's behaviours concentrate on few categories (latent interests)."""
    tables = generate_synthetic(
        SyntheticConfig(users=50, items=2000, mean_length=200, topics=32, topics_per_user=2)
    )
    cat = dict(
        zip(tables.items["item"].to_list(), tables.items["category"].list.first().to_list(), strict=True)
    )
    frame = tables.interactions
    per_user = {}
    for user, item in zip(frame["user"].to_list(), frame["item"].to_list(), strict=True):
        per_user.setdefault(user, set()).add(cat[item])
    assert max(len(v) for v in per_user.values()) <= 2


def test_deterministic_per_seed() -> None:
    a = generate_synthetic(SyntheticConfig(users=30, items=200, seed=4))
    b = generate_synthetic(SyntheticConfig(users=30, items=200, seed=4))
    assert a.interactions.equals(b.interactions)
    assert np.array_equal(a.item_vectors["text"], b.item_vectors["text"])


def test_builds_with_all_four_channels(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path / "d")
    assert set(ds.vectors) == {"query_text", "item_text", "item_image"}
    assert ds.n_attributes > 0
    assert np.all(ds.vectors["query_text"][:2] == 0)  # padding and empty query rows


def test_profile_names_each_users_main_topic_and_leaves_behaviours_alone(tmp_path: Path) -> None:
    cfg = SyntheticConfig(users=40, items=1000, mean_length=300, topics=16, topics_per_user=2)
    tables = generate_synthetic(cfg)
    plain = generate_synthetic(SyntheticConfig(**{**cfg.__dict__, "user_profile": False}))
    assert plain.users is None and plain.user_fields == []
    assert tables.interactions.equals(plain.interactions)  # the profile draws from its own generator
    category = dict(
        zip(tables.items["item"].to_list(), tables.items["category"].list.first().to_list(), strict=True)
    )
    topics = tables.users["favourite_topic"].list.first().to_list()
    favourite = dict(zip(tables.users["user"].to_list(), topics, strict=True))
    agree = []
    for user, items in tables.interactions.group_by("user").agg("item").iter_rows():
        counts: dict[str, int] = {}
        for item in items:
            counts[category[item]] = counts.get(category[item], 0) + 1
        agree.append(max(counts, key=counts.__getitem__)[1:] == favourite[user][1:])
    assert np.mean(agree) > 0.8  # most users' commonest category is their favourite topic
    ds = synthetic_dataset(tmp_path / "d", users=30, items=300, mean_length=30)
    assert ds.manifest["user_fields"] == ["favourite_topic", "region"]
    assert ds.n_user_attributes > 0 and ds.user_attributes_padded().shape == (ds.n_users, 2)
