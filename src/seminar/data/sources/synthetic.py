"""Synthetic lifelong data: users with latent interests, items with all four channels.

Each user has a few latent topics with weights; every behaviour draws a topic, then a
(popularity-skewed) item of that topic, and with probability ``search_fraction`` a query of
that topic. Items carry text and image vectors (topic centre plus noise, each channel with its
own centres and a controllable norm) and attributes (category = topic, an author). Queries carry
vectors of controllable norm. Users carry a profile: their favourite topic (informative) and a
region (noise), drawn from a generator of their own so the behaviours do not depend on it.
Lengths reach 10^4, for long-sequence tests and benchmarks.
Everything is generated vectorised from the one seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from seminar.data.tables import ITEM, QUERY, TIMESTAMP, USER, SourceTables

PROFILE_FIELDS = ("favourite_topic", "region")


@dataclass
class SyntheticConfig:
    users: int = 1000
    items: int = 5000
    mean_length: float = 200.0
    max_length: int = 10_000
    min_length: int = 3
    topics: int = 32
    topics_per_user: int = 4
    queries_per_topic: int = 16
    authors: int = 500
    search_fraction: float = 0.3
    dim: int = 64
    # Vector norms per channel (the paper varies these to study attention dominance).
    norms: dict[str, float] = field(default_factory=lambda: {"query": 0.5, "text": 1.0, "image": 2.0})
    noise: float = 0.5
    user_profile: bool = True
    regions: int = 8
    seed: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _channel_vectors(
    rng: np.random.Generator, topic_of: np.ndarray, n_topics: int, dim: int, noise: float, norm: float
) -> np.ndarray:
    centres = _unit(rng.standard_normal((n_topics, dim)))
    vec = centres[topic_of] + noise * rng.standard_normal((topic_of.size, dim)) / np.sqrt(dim)
    return (_unit(vec) * norm).astype(np.float32)


def _lengths(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    sigma = 0.75
    mu = np.log(max(cfg.mean_length, 1.0)) - sigma**2 / 2
    raw = rng.lognormal(mu, sigma, size=cfg.users)
    return np.clip(np.rint(raw), cfg.min_length, cfg.max_length).astype(np.int64)


def generate_synthetic(cfg: SyntheticConfig | None = None) -> SourceTables:
    """Generate a synthetic lifelong dataset as SourceTables (integer raw ids)."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    n_t = cfg.topics
    item_topic = rng.integers(0, n_t, size=cfg.items)
    by_topic = np.argsort(item_topic, kind="stable")
    topic_count = np.bincount(item_topic, minlength=n_t)
    topic_start = np.concatenate([[0], np.cumsum(topic_count)[:-1]])

    k = min(cfg.topics_per_user, n_t)
    user_topics = np.argsort(rng.random((cfg.users, n_t)), axis=1)[:, :k]
    user_cdf = np.cumsum(rng.dirichlet(np.ones(k), size=cfg.users), axis=1).astype(np.float32)
    user_cdf[:, -1] = 1.0

    lengths = _lengths(rng, cfg)
    user_of = np.repeat(np.arange(cfg.users, dtype=np.int64), lengths)
    n = user_of.size
    slot = (rng.random(n, dtype=np.float32)[:, None] > user_cdf[user_of]).sum(axis=1)
    topic = user_topics[user_of, slot]
    topic = np.where(topic_count[topic] > 0, topic, item_topic[0])  # a topic may own no item
    skew = rng.random(n) ** 2  # popular items first within a topic
    item = by_topic[topic_start[topic] + (skew * topic_count[topic]).astype(np.int64)]

    gaps = rng.exponential(3600.0, size=n).astype(np.int64) + 1
    time = np.cumsum(gaps)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    time -= np.repeat(time[starts] - rng.integers(1_500_000_000, 1_600_000_000, size=cfg.users), lengths)

    is_search = rng.random(n) < cfg.search_fraction
    query = topic * cfg.queries_per_topic + rng.integers(0, cfg.queries_per_topic, size=n)
    interactions = pl.DataFrame(
        {
            USER: user_of,
            ITEM: item.astype(np.int64),
            TIMESTAMP: time,
            QUERY: query.astype(np.int64),
        }
    ).with_columns(pl.when(pl.Series(is_search)).then(pl.col(QUERY)).otherwise(None).alias(QUERY))

    query_values = np.arange(n_t * cfg.queries_per_topic, dtype=np.int64)
    norms = cfg.norms
    query_vectors = _channel_vectors(
        rng, query_values // cfg.queries_per_topic, n_t, cfg.dim, cfg.noise, norms.get("query", 1.0)
    )
    item_vectors = {
        ch: _channel_vectors(rng, item_topic, n_t, cfg.dim, cfg.noise, norms.get(ch, 1.0))
        for ch in ("text", "image")
    }
    author = rng.integers(0, cfg.authors, size=cfg.items)
    items = pl.DataFrame(
        {
            ITEM: np.arange(cfg.items, dtype=np.int64),
            "category": pl.Series([[f"c{t}"] for t in item_topic.tolist()], dtype=pl.List(pl.String)),
            "author": pl.Series([[f"a{a}"] for a in author.tolist()], dtype=pl.List(pl.String)),
        }
    )
    users = _profiles(cfg, user_topics, user_cdf) if cfg.user_profile else None
    params = asdict(cfg)
    params["norms"] = ",".join(f"{k}={v}" for k, v in sorted(norms.items()))
    return SourceTables(
        name="synthetic",
        interactions=interactions,
        items=items,
        attribute_fields=["category", "author"],
        synthetic_queries=True,
        params=params,
        item_vectors=item_vectors,
        query_values=pl.Series(query_values),
        query_vectors=query_vectors,
        users=users,
        user_fields=list(PROFILE_FIELDS) if users is not None else [],
    )


def _profiles(cfg: SyntheticConfig, user_topics: np.ndarray, user_cdf: np.ndarray) -> pl.DataFrame:
    """One profile row per user: the topic with the largest weight, and a random region."""
    weights = np.diff(user_cdf, axis=1, prepend=0.0)
    favourite = user_topics[np.arange(cfg.users), weights.argmax(axis=1)]
    region = np.random.default_rng([cfg.seed, 1]).integers(0, max(cfg.regions, 1), size=cfg.users)
    return pl.DataFrame(
        {
            USER: np.arange(cfg.users, dtype=np.int64),
            "favourite_topic": pl.Series([[f"t{t}"] for t in favourite.tolist()], dtype=pl.List(pl.String)),
            "region": pl.Series([[f"r{r}"] for r in region.tolist()], dtype=pl.List(pl.String)),
        }
    )
