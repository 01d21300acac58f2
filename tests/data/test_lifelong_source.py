"""The lifelong generator: deterministic, with the structure it claims planted and recoverable."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from seminar import cli
from seminar.data.build import build_dataset
from seminar.data.schema import load_dataset
from seminar.data.sources.lifelong import (
    LifelongConfig,
    config_from_params,
    generate_lifelong,
    ground_truth,
    query_vocabulary,
)
from seminar.data.sources.options import NO_TEXT_ENCODER_SOURCES, SOURCE_OPTIONS, LifelongOptions
from seminar.errors import InvalidValue
from tests.data.helpers import quiet_config

K = 50  # the behaviours a GSU keeps: long-term interests must recur further apart than this
LONG = LifelongConfig(users=30, items=10_000, mean_length=800)


def positions(users: np.ndarray) -> np.ndarray:
    """Each behaviour's index within its user's sequence (users are grouped, in time order)."""
    n = np.bincount(users)
    return np.arange(users.size) - np.repeat(np.cumsum(n) - n, n)


@pytest.fixture(scope="module")
def long_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    tables = generate_lifelong(LONG, seed=0)
    truth = ground_truth(LONG, 0)
    users, items = tables.interactions["user"].to_numpy(), tables.interactions["item"].to_numpy()
    return users, items, truth.item_topic[items], truth


def test_deterministic_per_seed() -> None:
    cfg = LifelongConfig(users=12, items=300, mean_length=60, fine_topics=8, categories=2)
    a, b, c = generate_lifelong(cfg, 3), generate_lifelong(cfg, 3), generate_lifelong(cfg, 4)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert np.array_equal(a.item_vectors["image"], b.item_vectors["image"])
    assert np.array_equal(a.query_vectors, b.query_vectors)
    assert not a.interactions.equals(c.interactions)


def test_long_term_interests_dominate_and_recur_beyond_k(long_data) -> None:
    users, _, topic, truth = long_data
    m = LONG.interests_per_user
    is_long = (truth.user_topics[users, :m] == topic[:, None]).any(axis=1)
    assert is_long.mean() > 3 * m / LONG.fine_topics  # chance: m of the fine topics
    # gaps between bursts of the same long-term topic (not steps inside one burst), long users only
    pos, n = positions(users), np.bincount(users)
    order = np.lexsort((pos, topic, users))
    same = (users[order][1:] == users[order][:-1]) & (topic[order][1:] == topic[order][:-1])
    gap = np.diff(pos[order])
    chosen = same & is_long[order][1:] & (gap > 5) & (n[users[order][1:]] >= 500)
    assert chosen.sum() > 50 and gap[chosen].mean() > 2 * K


def test_short_lived_topics_stay_short(long_data) -> None:
    """A topic outside the user's interests takes few behaviours: one burst, rarely more."""
    users, _, topic, truth = long_data
    m = LONG.interests_per_user
    is_long = (truth.user_topics[users, :m] == topic[:, None]).any(axis=1)
    per_pair = np.bincount(users * LONG.fine_topics + topic)
    long_pairs = np.unique((users * LONG.fine_topics + topic)[is_long])
    short_pairs = np.setdiff1d(np.flatnonzero(per_pair), long_pairs)
    assert per_pair[long_pairs].mean() > 3 * per_pair[short_pairs].mean()


def test_many_items_are_rare(long_data) -> None:
    users, items, _, _ = long_data
    pos, n = positions(users), np.bincount(users)
    training = pos < n[users] - 2  # each user's last two are validation and test
    counts = np.bincount(items[training], minlength=LONG.items)
    assert (counts <= 1).mean() > 0.5
    assert (counts == 1).sum() > 500  # seen exactly once in training: only content tells what they are


def test_items_carry_the_category_only_and_vectors_follow_the_topic() -> None:
    cfg = LifelongConfig(users=5, items=640, mean_length=20, noise=0.3)
    tables, truth = generate_lifelong(cfg, 1), ground_truth(cfg, 1)
    assert tables.attribute_fields == ["category"] and tables.items.columns == ["item", "category"]
    category = tables.items["category"].list.first().to_list()
    assert category == [f"c{c}" for c in truth.topic_category[truth.item_topic]]
    text = tables.item_vectors["text"]
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), cfg.text_norm, rtol=1e-5)
    same = truth.item_topic[:, None] == truth.item_topic[None, :]
    cosine = text @ text.T
    assert cosine[same].mean() > cosine[~same].mean() + 0.5


def test_queries_name_the_behaviours_topic_in_words_of_their_own() -> None:
    cfg = LifelongConfig(users=20, items=500, mean_length=100, fine_topics=16, categories=4)
    texts, scope = query_vocabulary(cfg)
    words = [set(t.split()) for t in texts]
    for a in range(len(texts)):
        for b in range(len(texts)):
            if scope[a] != scope[b]:
                assert not words[a] & words[b]
    position = {t: k for k, t in enumerate(texts)}
    for broad in (0.0, 1.0):
        tables = generate_lifelong(LifelongConfig(**{**asdict(cfg), "broad_query_share": broad}), 2)
        truth = ground_truth(cfg, 2)
        searches = tables.interactions.drop_nulls("query")
        assert abs(searches.height / tables.interactions.height - cfg.search_fraction) < 0.05
        item_topic = truth.item_topic[searches["item"].to_numpy()]
        query_scope = scope[[position[q] for q in searches["query"].to_list()]]
        expected = item_topic if broad == 0.0 else cfg.fine_topics + truth.topic_category[item_topic]
        assert np.array_equal(query_scope, expected)


def test_lengths_are_capped_and_reach_the_cap() -> None:
    cfg = LifelongConfig(
        users=20, items=200, mean_length=30_000, max_length=10_000, fine_topics=8, categories=2
    )
    lengths = generate_lifelong(cfg, 0).interactions.group_by("user").len()["len"].to_numpy()
    assert lengths.max() == 10_000 and lengths.min() >= cfg.min_length


@pytest.mark.parametrize(
    ("knobs", "key"),
    [
        ({"categories": 9, "fine_topics": 8}, "categories"),
        ({"interests_per_user": 8, "fine_topics": 8}, "interests_per_user"),
        ({"items": 10, "fine_topics": 16}, "items"),
        ({"search_fraction": 1.5}, "search_fraction"),
        ({"long_term_share": -0.1}, "long_term_share"),
        ({"burst_length": 0.5}, "burst_length"),
        ({"min_length": 20, "max_length": 10}, "min_length"),
        ({"users": 0}, "users"),
        ({"text_norm": 0.0}, "text_norm"),
    ],
)
def test_bad_options_are_refused(knobs: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        LifelongConfig(**knobs)
    assert caught.value.key == key
    with pytest.raises(InvalidValue):
        LifelongOptions(**knobs)


def test_bad_cli_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prepare", "lifelong", "--fine-topics", "4", "--categories", "8", "--out", str(tmp_path / "d")]
    assert cli.main([*argv, "--quiet"]) == 2
    assert "--categories: must not exceed fine_topics (4), got 8" in capsys.readouterr().err


def test_registered_as_a_source_with_its_own_vectors() -> None:
    assert SOURCE_OPTIONS["lifelong"] is LifelongOptions and "lifelong" in NO_TEXT_ENCODER_SOURCES
    options = LifelongOptions(users=6, items=100, mean_length=20, fine_topics=8, categories=2)
    cfg = LifelongConfig(users=6, items=100, mean_length=20, fine_topics=8, categories=2)
    assert options.read(5).interactions.equals(generate_lifelong(cfg, 5).interactions)


def test_the_built_manifest_gives_the_generator_back(tmp_path: Path) -> None:
    cfg = LifelongConfig(users=10, items=200, mean_length=30, fine_topics=8, categories=2, zipf=0.7)
    build_dataset(generate_lifelong(cfg, 7), tmp_path / "d", quiet_config(text_encoder="none"))
    ds = load_dataset(tmp_path / "d")
    assert ds.manifest["source"] == "lifelong"
    assert set(ds.vectors) == {"item_text", "item_image", "query_text"}
    assert config_from_params(ds.manifest["params"]) == (cfg, 7)
    with pytest.raises(ValueError, match="lack 'seed'"):
        config_from_params({k: v for k, v in ds.manifest["params"].items() if k != "seed"})
