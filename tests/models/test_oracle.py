"""The oracle ranker: exact under the lifelong process, far above popularity, refused elsewhere."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from seminar.data.build import build_dataset
from seminar.data.loader import EvalSamples
from seminar.data.schema import SeminarDataset, load_dataset
from seminar.data.sources.lifelong import LifelongConfig, generate_lifelong, ground_truth, query_vocabulary
from seminar.experiment import finetune, load_run_model
from seminar.models.features import FeatureTables
from seminar.models.oracle import OracleRanker
from seminar.models.ranker import RankerConfig
from seminar.models.reference import PopularityRanker
from seminar.models.registry import REFERENCE_MODELS, build_ranker
from seminar.train.trainer import TrainConfig
from tests.data.helpers import quiet_config, synthetic_dataset

CONFIG = LifelongConfig(users=40, items=800, mean_length=150, fine_topics=16, categories=4)
SEED = 3


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    root = tmp_path_factory.mktemp("oracle") / "d"
    build_dataset(generate_lifelong(CONFIG, SEED), root, quiet_config(negatives=49, text_encoder="none"))
    return load_dataset(root)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


@pytest.fixture(scope="module")
def oracle(ds: SeminarDataset, tables: FeatureTables) -> OracleRanker:
    model = build_ranker(tables, RankerConfig(model="oracle"), ds)
    assert isinstance(model, OracleRanker)
    return model


def batch(ds: SeminarDataset, mode: str = "recommendation", max_length: int = 100) -> dict[str, torch.Tensor]:
    samples = EvalSamples(ds, "test", mode, max_length=max_length)  # type: ignore[arg-type]
    return samples.__getitems__(list(range(len(samples))))


def ndcg_at_10(scores: torch.Tensor) -> float:
    """The positive is column 0; ties count against it."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(1).float()
    return float(torch.where(rank < 10, 1.0 / torch.log2(rank + 2.0), torch.zeros(())).mean())


def test_registered_as_a_reference_model() -> None:
    assert REFERENCE_MODELS["oracle"] is OracleRanker
    assert not OracleRanker.trainable and not OracleRanker.many_targets


def test_beats_popularity_clearly(ds: SeminarDataset, tables: FeatureTables, oracle: OracleRanker) -> None:
    popularity = PopularityRanker(tables, RankerConfig(model="popularity"))
    popularity.fit(ds)
    b = batch(ds)
    ours, theirs = ndcg_at_10(oracle.score_candidates(b)), ndcg_at_10(popularity.score_candidates(b))
    assert ours > theirs + 0.2, (ours, theirs)


def test_search_ranks_the_querys_topic_first(ds: SeminarDataset, oracle: OracleRanker) -> None:
    b = batch(ds, "search")
    assert b["cand_items"].shape[0] > 0
    scores = oracle.score_candidates(b)
    other_topic = oracle.item_topic[b["cand_items"]] != oracle.item_topic[b["cand_items"][:, :1]]
    assert bool((scores[:, :1] > scores.masked_fill(~other_topic, -np.inf)).all())


def test_broad_queries_rank_their_category_first(tmp_path: Path) -> None:
    """A query naming only the category leaves the fine topic to the history; out of scope is last."""
    cfg = replace(CONFIG, broad_query_share=0.5)
    build_dataset(
        generate_lifelong(cfg, SEED), tmp_path / "d", quiet_config(negatives=49, text_encoder="none")
    )
    broad_ds = load_dataset(tmp_path / "d")
    model = build_ranker(FeatureTables.from_dataset(broad_ds), RankerConfig(model="oracle"), broad_ds)
    b = batch(broad_ds, "search")
    texts, scopes = query_vocabulary(cfg)
    text_of = dict(broad_ds.table("queries").drop_nulls("text").select("query_id", "text").iter_rows())
    scope = torch.tensor([int(scopes[texts.index(text_of[int(q)])]) for q in b["cand_queries"][:, 0]])
    topic = model.item_topic[b["cand_items"]]
    n_t = cfg.fine_topics
    in_scope = torch.where(
        (scope < n_t)[:, None], topic == scope[:, None], model.topic_category[topic] == (scope - n_t)[:, None]
    )
    assert bool(in_scope[:, 0].all()) and bool((scope >= n_t).any()) and bool((scope < n_t).any())
    scores = model.score_candidates(b)
    assert bool((scores[:, :1] > scores.masked_fill(in_scope, -np.inf)).all())


def test_matches_a_plain_forward_filter(ds: SeminarDataset, oracle: OracleRanker) -> None:
    """The batched filter equals one written out per user over its history, in plain numpy."""
    truth = ground_truth(CONFIG, SEED)
    b = batch(ds, max_length=40)
    got = oracle.topic_probability(b).numpy()
    users = ds.table("users").sort("user_index")["raw_id"].cast(int).to_numpy()
    raw_items = ds.table("items").sort("item_id")["raw_id"].cast(int).to_numpy()
    prior = truth.burst_prior()
    switch, stray, n_t = 1 / CONFIG.burst_length, CONFIG.random_share, CONFIG.fine_topics
    for row in range(0, got.shape[0], 7):
        pi = prior[users[int(b["user"][row])]]
        belief = pi
        for item, real in zip(b["hist_items"][row].tolist(), b["mask"][row].tolist(), strict=True):
            if not real:
                continue
            likelihood = np.full(n_t, stray / n_t)
            likelihood[truth.item_topic[raw_items[item - 1]]] += 1 - stray
            belief = ((1 - switch) * belief + switch * pi) * likelihood
            belief /= belief.sum()
        expected = (1 - stray) * ((1 - switch) * belief + switch * pi) + stray / n_t
        np.testing.assert_allclose(got[row], expected, rtol=1e-6)


def test_without_history_it_predicts_the_users_prior(ds: SeminarDataset, oracle: OracleRanker) -> None:
    b = batch(ds)
    b["mask"] = torch.zeros_like(b["mask"])
    prior = oracle.user_log_prior[b["user"]].double().exp()
    stray, n_t = CONFIG.random_share, CONFIG.fine_topics
    torch.testing.assert_close(oracle.topic_probability(b), (1 - stray) * prior + stray / n_t)


def test_a_saved_run_scores_the_same(ds: SeminarDataset, tables: FeatureTables, tmp_path: Path) -> None:
    """`seminar train --model oracle`: fitted, validated once, saved; the run reloads from the tables."""
    train = TrainConfig(device="cpu", progress=False, max_length=50, eval_batch_size=64)
    summary = finetune(ds, tmp_path / "run", RankerConfig(model="oracle"), train)
    assert summary["epochs_run"] == 0 and summary["test"]["ndcg@10"] > 0.5
    reloaded = load_run_model(tmp_path / "run", tables)
    fitted = build_ranker(tables, RankerConfig(model="oracle"), ds)
    b = batch(ds, "pair", max_length=50)
    torch.testing.assert_close(reloaded.score_candidates(b), fitted.score_candidates(b))


def test_refuses_a_dataset_without_ground_truth(tmp_path: Path) -> None:
    other = synthetic_dataset(tmp_path / "s", users=8, items=60, mean_length=10)
    model = OracleRanker(FeatureTables.from_dataset(other), RankerConfig(model="oracle"))
    with pytest.raises(ValueError, match="seminar prepare lifelong"):
        model.fit(other)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.score_candidates(batch(other))
