"""A lifelong benchmark with a planted, known structure (``seminar prepare lifelong``).

Real logs cannot say which part of a lifelong model helps, because nobody knows what the next
behaviour truly depended on. Here the process is written down, so one can ask: does retrieving
from far beyond the K kept behaviours help, does content identify items seen once or never, and
does the query point at the right part of the history? See docs/lifelong.md.

The process, per user: a sequence of bursts, each of one fine topic. A new burst starts before
each behaviour with probability ``1 / burst_length`` (the first behaviour always starts one).
With probability ``long_term_share`` its topic is one of the user's ``interests_per_user``
long-term interests (drawn by the user's weights), else a short-lived topic drawn uniformly from
the user's other topics. Inside a burst a behaviour is of the burst's topic, except with
probability ``random_share`` of a uniformly random topic. The item is drawn from its topic by a
Zipf popularity, so most items are rare. A search behaviour's query names its topic (or, with
probability ``broad_query_share``, only its coarse category) in words of its own.

Timestamps carry no information about bursts, and items none beyond their topic: the next
behaviour depends on the history only through the hidden burst topic, so
:class:`~seminar.models.oracle.OracleRanker` can compute its exact probability. The oracle needs
no side file: it regenerates the ground truth (:func:`ground_truth`) from the generator's
parameters, which the build stores in the dataset manifest (``params``, values as strings, read
back by :func:`config_from_params`). Every random draw is vectorised and comes from the one seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import polars as pl

from seminar.data.tables import ITEM, QUERY, TIMESTAMP, USER, SourceTables
from seminar.errors import InvalidValue
from seminar.parsing import described

SOURCE_NAME = "lifelong"
LENGTH_SIGMA = 0.75  # log-normal spread of the sequence lengths
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
WORD_SCRAMBLE = 7919  # a prime coprime to len(SYLLABLES) = 70
# Independent random streams, so the oracle can redraw the ground truth without the behaviours.
ITEM_STREAM, USER_STREAM, BEHAVIOUR_STREAM, VECTOR_STREAM = 0, 1, 2, 3


@dataclass
class LifelongConfig:
    """The generator's knobs (see the module docstring and docs/lifelong.md for each)."""

    users: int = described(1000, "users")
    items: int = described(100_000, "items (spread evenly over the fine topics)")
    mean_length: float = described(1000.0, "mean behaviours per user (log-normal)")
    max_length: int = described(10_000, "longest sequence")
    min_length: int = described(5, "shortest sequence")
    fine_topics: int = described(64, "fine topics (the hidden structure)")
    categories: int = described(8, "coarse categories (the only item attribute)")
    interests_per_user: int = described(4, "long-term interests (fine topics) per user")
    long_term_share: float = described(0.3, "share of bursts that follow a long-term interest")
    burst_length: float = described(30.0, "mean behaviours per burst (geometric, >= 1)")
    random_share: float = described(0.1, "share of behaviours of a uniformly random topic")
    zipf: float = described(1.1, "exponent of the item popularity within a topic")
    search_fraction: float = described(0.3, "share of behaviours that are searches")
    broad_query_share: float = described(0.0, "share of queries naming only the coarse category")
    queries_per_topic: int = described(8, "distinct query strings per topic (and per category)")
    dim: int = described(64, "dimension of the item and query vectors")
    noise: float = described(0.5, "noise of a vector around its topic centre")
    topic_spread: float = described(1.0, "how far fine-topic centres lie from their category's")
    query_norm: float = described(1.0, "norm of the query vectors")
    text_norm: float = described(1.0, "norm of the item text vectors")
    image_norm: float = described(1.0, "norm of the item image vectors")

    def __post_init__(self) -> None:
        for name in (
            "users",
            "items",
            "max_length",
            "min_length",
            "fine_topics",
            "categories",
            "interests_per_user",
            "queries_per_topic",
            "dim",
        ):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("long_term_share", "random_share", "search_fraction", "broad_query_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidValue(name, f"must lie in [0, 1], got {getattr(self, name)}")
        for name in ("mean_length", "query_norm", "text_norm", "image_norm"):
            if not getattr(self, name) > 0:
                raise InvalidValue(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("zipf", "noise", "topic_spread"):
            if not getattr(self, name) >= 0:
                raise InvalidValue(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.burst_length >= 1:
            raise InvalidValue("burst_length", f"must be >= 1, got {self.burst_length}")
        if self.min_length > self.max_length:
            raise InvalidValue(
                "min_length", f"must not exceed max_length ({self.max_length}), got {self.min_length}"
            )
        if self.categories > self.fine_topics:
            raise InvalidValue(
                "categories", f"must not exceed fine_topics ({self.fine_topics}), got {self.categories}"
            )
        if self.interests_per_user >= self.fine_topics:
            raise InvalidValue(
                "interests_per_user",
                f"must be below fine_topics ({self.fine_topics}): short-lived topics need the rest; "
                f"got {self.interests_per_user}",
            )
        if self.items < self.fine_topics:
            raise InvalidValue("items", f"must be >= fine_topics ({self.fine_topics}), got {self.items}")


@dataclass
class LifelongTruth:
    """What the generator knows and a model must infer; indices are the generator's raw ids."""

    topic_category: np.ndarray  # [T] coarse category of each fine topic
    item_topic: np.ndarray  # [items] fine topic of each item
    item_popularity: np.ndarray  # [items] probability of the item within its topic
    user_topics: np.ndarray  # [users, T] a permutation: the long-term interests first
    user_weights: np.ndarray  # [users, interests] weights of those interests
    query_texts: list[str]  # fine queries (topic-major), then broad ones (category-major)
    query_scope: np.ndarray  # [queries] fine topic, or T + category for a broad query
    long_term_share: float
    burst_length: float
    random_share: float
    search_fraction: float
    broad_query_share: float
    queries_per_topic: int

    @property
    def n_topics(self) -> int:
        return int(self.topic_category.size)

    def burst_prior(self) -> np.ndarray:
        """[users, T] probability of each topic for a new burst: interests by weight, the rest uniform."""
        users, n_topics = self.user_topics.shape
        m = self.user_weights.shape[1]
        prior = np.empty((users, n_topics), dtype=np.float64)
        rows = np.arange(users)[:, None]
        prior[rows, self.user_topics[:, :m]] = self.long_term_share * self.user_weights
        prior[rows, self.user_topics[:, m:]] = (1.0 - self.long_term_share) / (n_topics - m)
        return prior


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _word(index: int, width: int) -> str:
    """A pronounceable nonsense word, one per index: the queries' vocabulary, shared with nothing."""
    index = index * WORD_SCRAMBLE % len(SYLLABLES) ** width  # a bijection: neighbours look unrelated
    out = []
    for _ in range(width):
        index, digit = divmod(index, len(SYLLABLES))
        out.append(SYLLABLES[digit])
    return "".join(reversed(out))


def query_vocabulary(cfg: LifelongConfig) -> tuple[list[str], np.ndarray]:
    """Every query string and its scope (fine topic, or T + category for a broad query).

    Each scope owns ``queries_per_topic`` words of its own; its k-th query is its words k and k+1,
    so two scopes never share a word and no query string repeats.
    """
    q, scopes = cfg.queries_per_topic, cfg.fine_topics + cfg.categories
    width = max(2, math.ceil(math.log(scopes * q, len(SYLLABLES))))
    texts = []
    for scope in range(scopes):
        words = [_word(scope * q + k, width) for k in range(q)]
        texts += [words[k] if q == 1 else f"{words[k]} {words[(k + 1) % q]}" for k in range(q)]
    return texts, np.repeat(np.arange(scopes, dtype=np.int64), q)


def ground_truth(cfg: LifelongConfig, seed: int) -> LifelongTruth:
    """Topics, popularity and user interests: cheap, so the oracle redraws them from the manifest."""
    n_t, m = cfg.fine_topics, cfg.interests_per_user
    topic_category = np.arange(n_t, dtype=np.int64) * cfg.categories // n_t
    rng = np.random.default_rng([seed, ITEM_STREAM])
    item_topic = rng.permutation(np.arange(cfg.items, dtype=np.int64) % n_t)  # every topic has items
    by_topic = np.lexsort((rng.random(cfg.items), item_topic))  # popularity rank: random in a topic
    count = np.bincount(item_topic, minlength=n_t)
    rank = np.empty(cfg.items, dtype=np.int64)
    rank[by_topic] = np.arange(cfg.items) - np.repeat(np.cumsum(count) - count, count)
    weight = (rank + 1.0) ** -cfg.zipf
    popularity = weight / np.bincount(item_topic, weights=weight, minlength=n_t)[item_topic]

    rng = np.random.default_rng([seed, USER_STREAM])
    user_topics = np.argsort(rng.random((cfg.users, n_t)), axis=1).astype(np.int32)
    user_weights = rng.dirichlet(np.ones(m), size=cfg.users)
    texts, scope = query_vocabulary(cfg)
    return LifelongTruth(
        topic_category=topic_category,
        item_topic=item_topic,
        item_popularity=popularity,
        user_topics=user_topics,
        user_weights=user_weights,
        query_texts=texts,
        query_scope=scope,
        long_term_share=cfg.long_term_share,
        burst_length=cfg.burst_length,
        random_share=cfg.random_share,
        search_fraction=cfg.search_fraction,
        broad_query_share=cfg.broad_query_share,
        queries_per_topic=cfg.queries_per_topic,
    )


def _lengths(rng: np.random.Generator, cfg: LifelongConfig) -> np.ndarray:
    mu = np.log(cfg.mean_length) - LENGTH_SIGMA**2 / 2
    raw = rng.lognormal(mu, LENGTH_SIGMA, size=cfg.users)
    return np.clip(np.rint(raw), cfg.min_length, cfg.max_length).astype(np.int64)


def _draw_items(rng: np.random.Generator, truth: LifelongTruth, topic: np.ndarray) -> np.ndarray:
    """One item per behaviour from its topic by popularity: one inverse-CDF search for all topics.

    Over the items sorted by topic, the running sum of popularities spans (t, t + 1] on topic t
    (each topic's popularities sum to 1), so ``t + uniform`` falls among topic t's items.
    """
    order = np.argsort(truth.item_topic, kind="stable")
    edge = np.cumsum(truth.item_popularity[order])
    count = np.bincount(truth.item_topic, minlength=truth.n_topics)
    last = np.cumsum(count) - 1
    slot = np.searchsorted(edge, topic + rng.random(topic.size), side="right")
    return order[np.clip(slot, (last - count + 1)[topic], last[topic])]  # clip: rounding at the edges


def _behaviours(
    cfg: LifelongConfig, truth: LifelongTruth, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, topic, item) of every behaviour, users in order, each user's in time order."""
    lengths = _lengths(rng, cfg)
    user_of = np.repeat(np.arange(cfg.users, dtype=np.int64), lengths)
    n, n_t, m = user_of.size, cfg.fine_topics, cfg.interests_per_user
    new_burst = rng.random(n) < 1.0 / cfg.burst_length
    new_burst[np.cumsum(lengths) - lengths] = True
    burst_of = np.cumsum(new_burst) - 1
    burst_user = user_of[new_burst]
    n_bursts = burst_user.size
    cdf = np.cumsum(truth.user_weights, axis=1)
    cdf[:, -1] = 1.0
    long_slot = (rng.random(n_bursts)[:, None] > cdf[burst_user]).sum(axis=1)
    short_slot = m + rng.integers(0, n_t - m, size=n_bursts)
    slot = np.where(rng.random(n_bursts) < cfg.long_term_share, long_slot, short_slot)
    topic = truth.user_topics[burst_user, slot].astype(np.int64)[burst_of]
    stray = rng.random(n) < cfg.random_share
    topic[stray] = rng.integers(0, n_t, size=int(stray.sum()))
    return user_of, topic, _draw_items(rng, truth, topic)


def _queries(
    cfg: LifelongConfig, truth: LifelongTruth, topic: np.ndarray, rng: np.random.Generator
) -> pl.Series:
    """The query of each behaviour (null for a recommendation): a string of its topic or category."""
    q, n_t = cfg.queries_per_topic, cfg.fine_topics
    pick = rng.integers(0, q, size=topic.size)
    broad = rng.random(topic.size) < cfg.broad_query_share
    index = np.where(broad, (n_t + truth.topic_category[topic]) * q, topic * q) + pick
    search = rng.random(topic.size) < cfg.search_fraction
    texts = pl.Series(truth.query_texts, dtype=pl.String).gather(index)
    frame = pl.DataFrame({"search": search, "text": texts})
    return frame.select(pl.when(pl.col("search")).then(pl.col("text")).alias(QUERY)).to_series()


def _vectors(
    cfg: LifelongConfig, truth: LifelongTruth, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Item vectors per channel and query vectors: fine-topic centres scattered around their
    category's centre (``topic_spread``), each channel with centres of its own, plus noise."""

    def centres() -> tuple[np.ndarray, np.ndarray]:
        coarse = _unit(rng.standard_normal((cfg.categories, cfg.dim)))
        scatter = _unit(rng.standard_normal((truth.n_topics, cfg.dim)))
        return coarse, _unit(coarse[truth.topic_category] + cfg.topic_spread * scatter)

    def around(centre: np.ndarray, norm: float) -> np.ndarray:
        noisy = centre + cfg.noise * rng.standard_normal(centre.shape) / np.sqrt(cfg.dim)
        return (_unit(noisy) * norm).astype(np.float32)

    items = {}
    for channel, norm in (("text", cfg.text_norm), ("image", cfg.image_norm)):
        items[channel] = around(centres()[1][truth.item_topic], norm)
    coarse, fine = centres()
    scope = truth.query_scope
    query_centre = np.where(
        (scope < truth.n_topics)[:, None],
        fine[np.minimum(scope, truth.n_topics - 1)],
        coarse[np.maximum(scope - truth.n_topics, 0)],
    )
    return items, around(query_centre, cfg.query_norm)


def generate_lifelong(cfg: LifelongConfig | None = None, seed: int = 0) -> SourceTables:
    """Generate the benchmark as SourceTables (integer raw ids; queries are strings)."""
    cfg = cfg or LifelongConfig()
    truth = ground_truth(cfg, seed)
    rng = np.random.default_rng([seed, BEHAVIOUR_STREAM])
    user_of, topic, item = _behaviours(cfg, truth, rng)
    gaps = rng.exponential(3600.0, size=user_of.size).astype(np.int64) + 1
    time = np.cumsum(gaps)
    lengths = np.bincount(user_of, minlength=cfg.users)  # every user has min_length >= 1
    base = rng.integers(1_500_000_000, 1_600_000_000, size=cfg.users)
    time -= np.repeat(time[np.cumsum(lengths) - lengths] - base, lengths)
    interactions = pl.DataFrame(
        {USER: user_of, ITEM: item.astype(np.int64), TIMESTAMP: time, QUERY: _queries(cfg, truth, topic, rng)}
    )
    item_vectors, query_vectors = _vectors(cfg, truth, np.random.default_rng([seed, VECTOR_STREAM]))
    names = pl.Series([f"c{c}" for c in range(cfg.categories)], dtype=pl.String)
    items = pl.DataFrame(
        {
            ITEM: np.arange(cfg.items, dtype=np.int64),
            "category": names.gather(truth.topic_category[truth.item_topic]),
        }
    ).with_columns(pl.concat_list("category"))  # the coarse category only: the fine topic is hidden
    return SourceTables(
        name=SOURCE_NAME,
        interactions=interactions,
        items=items,
        attribute_fields=["category"],
        synthetic_queries=True,
        params={**asdict(cfg), "seed": seed},
        item_vectors=item_vectors,
        query_values=pl.Series(truth.query_texts, dtype=pl.String),
        query_vectors=query_vectors,
    )


def config_from_params(params: dict[str, object]) -> tuple[LifelongConfig, int]:
    """The config and seed a dataset was generated with, from its manifest's ``params`` (strings)."""
    defaults = LifelongConfig()
    values = {}
    for f in fields(LifelongConfig):
        if f.name not in params:
            raise ValueError(
                f"the dataset's params lack {f.name!r}: not generated by this lifelong generator"
            )
        values[f.name] = type(getattr(defaults, f.name))(str(params[f.name]))
    if "seed" not in params:
        raise ValueError("the dataset's params lack 'seed': not generated by this lifelong generator")
    return LifelongConfig(**values), int(str(params["seed"]))
