"""Query-matched evaluation negatives: each searching user's negatives were clicked by someone under
the held-out behaviour's own query (in the training part of the log), lie outside the user's
history, and fall back to uniform items only when that pool runs short or there is no query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.build import BuildConfig, build_dataset, source_fingerprint
from seminar.data.schema import EMPTY_QUERY, load_dataset
from seminar.data.split import SplitConfig, query_pools, sample_pooled_negatives
from seminar.data.tables import DataError
from tests.data.helpers import tiny_tables


def query_config(negatives: int) -> BuildConfig:
    split = SplitConfig(negatives=negatives, eval_negatives="query")
    return BuildConfig(text_encoder="hashing:32", progress=False, split=split)


@settings(max_examples=25, deadline=None)
@given(
    n_users=st.integers(2, 12),
    n_items=st.integers(30, 60),
    n_queries=st.integers(2, 6),
    n_negatives=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_pools_hold_the_training_clicks_of_each_query(
    n_users: int, n_items: int, n_queries: int, n_negatives: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 9, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, n_items + 1, offsets[-1]).astype(np.int32)
    searched = rng.random(offsets[-1]) < 0.6
    queries = np.where(searched, rng.integers(2, n_queries + 2, offsets[-1]), EMPTY_QUERY)
    pool_of = query_pools(offsets, items, queries, n_items, 2, EMPTY_QUERY)
    for q in range(2, n_queries + 2):
        expected = {
            int(items[i])
            for u in range(n_users)
            for i in range(offsets[u], offsets[u + 1] - 2)  # the last two are held out
            if queries[i] == q
        }
        assert set(pool_of(q).tolist()) == expected
    wanted = queries[offsets[1:] - 1].astype(np.int64)
    wanted[wanted == EMPTY_QUERY] = 0
    out, short = sample_pooled_negatives(offsets, items, n_items, n_negatives, rng, wanted, pool_of)
    shortfalls = 0
    for user in range(n_users):
        seen = set(items[offsets[user] : offsets[user + 1]].tolist())
        negatives = set(out[user].tolist())
        assert len(negatives) == n_negatives and not seen & negatives and 0 not in negatives
        if wanted[user] == 0:
            continue
        pool = set(pool_of(int(wanted[user])).tolist()) - seen
        if len(pool) >= n_negatives:
            assert negatives <= pool
        else:
            assert pool <= negatives
            shortfalls += 1
    assert short == shortfalls


def searching_tables(users: int = 8, length: int = 10, items: int = 40):
    """Tiny tables whose every user's last behaviour is a search under one of three queries."""
    tables = tiny_tables(users=users, length=length, items=items)
    frame = tables.interactions.sort("user", "timestamp")
    last = frame.group_by("user").agg(pl.col("timestamp").max().alias("last"))
    frame = frame.join(last, on="user").with_columns(
        pl.when(pl.col("timestamp") == pl.col("last"))
        .then(pl.lit("q1"))
        .otherwise(pl.col("query"))
        .alias("query")
    )
    tables.interactions = frame.drop("last")
    return tables


def test_a_built_dataset_draws_query_negatives(tmp_path: Path) -> None:
    tables = searching_tables()
    config = query_config(negatives=3)
    assert source_fingerprint(tables, config)["build"]["split"]["eval_negatives"] == "query"
    ds = load_dataset(build_dataset(tables, tmp_path / "d", config))
    queries, items = np.asarray(ds.queries), np.asarray(ds.items)
    offsets = np.asarray(ds.offsets)
    test_query = queries[offsets[1:] - 1]
    assert (test_query != EMPTY_QUERY).all()
    pool_of = query_pools(offsets, items, queries, ds.n_items, 2, EMPTY_QUERY)
    negatives = np.asarray(ds.test_negatives)
    short = ds.manifest["skipped"].get("test users whose query's clicked items ran short (rest uniform)", 0)
    in_pool = [
        set(negatives[u].tolist()) <= set(pool_of(int(test_query[u])).tolist()) for u in range(ds.n_users)
    ]
    assert sum(in_pool) == ds.n_users - short and sum(in_pool) > 0


def test_query_negatives_need_queries(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables.interactions = tables.interactions.with_columns(pl.lit(None, dtype=pl.String).alias("query"))
    with pytest.raises(DataError, match="needs search behaviours"):
        build_dataset(tables, tmp_path / "d", query_config(negatives=3))
