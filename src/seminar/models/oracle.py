"""The oracle: each candidate's exact probability under the process that generated a lifelong dataset.

On data of ``seminar prepare lifelong`` (:mod:`seminar.data.sources.lifelong`) the generator's
ground truth is known: every item's fine topic and popularity, every user's long-term interests
and weights. The next behaviour depends on the history only through the hidden topic of the
current burst, so its probability given the history is exact, and no model that sees only the
history can rank better in expectation: the oracle is the ceiling of every table on this data.

A candidate item c with query q scores the log of its joint probability with the query,

    log P(topic(c) | history) + log P(c | topic(c)) + log P(q | topic(c)),

where P(topic | history) is a forward filter over the hidden burst topic: before each behaviour
the topic stays with probability 1 - 1/burst_length, else is redrawn from the user's burst prior
(long-term interests by weight, the other topics uniformly); a behaviour shows the burst's topic
except with probability random_share, when it shows a uniform one. The query term is the same
for every candidate of a recommendation or search task; in the pair mode it weighs each
candidate's own query. A query that cannot come from the candidate's topic (probability 0) costs
MISMATCH instead of minus infinity, so such candidates still rank among themselves.

The ground truth is regenerated from the generator's parameters in the dataset's manifest; a
dataset of any other source has none, and fitting the oracle on it raises a DataError (a ValueError).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from seminar.data.schema import EMPTY_QUERY, SeminarDataset
from seminar.data.sources.lifelong import SOURCE_NAME, LifelongTruth, config_from_params, ground_truth
from seminar.data.tables import DataError
from seminar.models.features import FeatureTables
from seminar.models.ranker import RankerConfig

MISMATCH = 1e4  # log-probability cost of a query its candidate's topic never produces
NO_SCOPE = -1  # query scope of padding and of the empty query: every topic may show it
TINY = 1e-30  # floor of probabilities before their log (a share of exactly 0 or 1)
# Buffers whose size is the number of topics, which the feature tables do not know: they are
# resized to the saved ones when a run is loaded.
TOPIC_SIZED = ("user_log_prior", "topic_category")


def lifelong_truth(ds: SeminarDataset) -> LifelongTruth:
    """The generator's ground truth of ``ds``, or a DataError (a ValueError the CLI reports) saying
    why it has none."""
    source = ds.manifest.get("source")
    if source != SOURCE_NAME:
        raise DataError(
            f"{ds.root}: the oracle needs a dataset prepared by `seminar prepare lifelong`, whose "
            f"manifest holds the generator's parameters; this dataset's source is {source!r}"
        )
    try:
        config, seed = config_from_params(ds.manifest.get("params") or {})
    except ValueError as exc:
        raise DataError(f"{ds.root}: {exc}") from exc
    return ground_truth(config, seed)


def _raw_ids(frame: pl.DataFrame, order: str) -> np.ndarray:
    return frame.sort(order)["raw_id"].cast(pl.Int64).to_numpy()


class OracleRanker(nn.Module):
    """Ranks by the true probability of the next behaviour (see the module docstring); fitted, not trained."""

    many_targets = False
    trainable = False

    def __init__(self, tables: FeatureTables, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("item_topic", torch.zeros(tables.n_items + 1, dtype=torch.int64))
        self.register_buffer("item_log_popularity", torch.zeros(tables.n_items + 1))
        self.register_buffer("query_scope", torch.full((tables.n_queries + 1,), NO_SCOPE, dtype=torch.int64))
        self.register_buffer("query_log_likelihood", torch.zeros(tables.n_queries + 1))
        self.register_buffer("user_log_prior", torch.zeros(tables.n_users, 0))
        self.register_buffer("topic_category", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("process", torch.zeros(2))  # (1 / burst_length, random_share)

    def fit(self, ds: SeminarDataset) -> None:
        """Read the ground truth of every item, query and user of ``ds`` into the buffers."""
        truth = lifelong_truth(ds)
        items = _raw_ids(ds.table("items"), "item_id")
        users = _raw_ids(ds.table("users"), "user_index")
        if items.size != self.item_topic.numel() - 1 or users.size != self.user_log_prior.shape[0]:
            raise DataError(f"{ds.root}: the feature tables were built from another dataset")
        device = self.item_topic.device
        self.item_topic[1:] = torch.from_numpy(truth.item_topic[items])
        self.item_log_popularity[1:] = torch.from_numpy(np.log(truth.item_popularity[items]))
        prior = np.log(np.maximum(truth.burst_prior()[users], TINY))
        self.user_log_prior = torch.from_numpy(prior).float().to(device)
        self.topic_category = torch.from_numpy(truth.topic_category.astype(np.int64)).to(device)
        self.process = torch.tensor([1.0 / truth.burst_length, truth.random_share], device=device)
        self._fit_queries(ds, truth)

    def _fit_queries(self, ds: SeminarDataset, truth: LifelongTruth) -> None:
        """Scope and log P(query | a topic in its scope) of every query id (the empty one: P(no search))."""
        queries = ds.table("queries").filter(pl.col("query_id") > EMPTY_QUERY)
        position = {text: k for k, text in enumerate(truth.query_texts)}
        unknown = [t for t in queries["text"].to_list() if t not in position]
        if unknown:
            raise DataError(f"{ds.root}: query {unknown[0]!r} is not one the lifelong generator writes")
        index = np.array([position[t] for t in queries["text"].to_list()], dtype=np.int64)
        scope = truth.query_scope[index]
        broad = scope >= truth.n_topics
        share = np.where(broad, truth.broad_query_share, 1.0 - truth.broad_query_share)
        likelihood = truth.search_fraction * share / truth.queries_per_topic
        ids = torch.from_numpy(queries["query_id"].to_numpy().astype(np.int64))
        self.query_scope[ids] = torch.from_numpy(scope)
        self.query_log_likelihood[ids] = torch.from_numpy(np.log(np.maximum(likelihood, TINY))).float()
        self.query_log_likelihood[EMPTY_QUERY] = float(np.log(max(1.0 - truth.search_fraction, TINY)))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name in TOPIC_SIZED:
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def topic_probability(self, batch: dict[str, Tensor]) -> Tensor:
        """P(next behaviour's topic | history) [B, T]: the forward filter over the burst topic."""
        if self.user_log_prior.shape[1] == 0:
            raise RuntimeError("the oracle is not fitted: call fit(ds) on a lifelong dataset first")
        prior = self.user_log_prior[batch["user"]].double().exp()
        switch, stray = (float(v) for v in self.process)
        n_topics = prior.shape[1]
        seen = self.item_topic[batch["hist_items"]]
        mask = batch["mask"]
        belief = prior
        for step in range(seen.shape[1]):
            predicted = (1.0 - switch) * belief + switch * prior
            shown = torch.nn.functional.one_hot(seen[:, step], n_topics).double()
            posterior = predicted * (stray / n_topics + (1.0 - stray) * shown)
            posterior = posterior / posterior.sum(1, keepdim=True).clamp_min(TINY)
            belief = torch.where(mask[:, step, None], posterior, belief)
        upcoming = (1.0 - switch) * belief + switch * prior
        return (1.0 - stray) * upcoming + stray / n_topics

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Tensor]) -> Tensor:
        items, queries = batch["cand_items"], batch["cand_queries"]
        topic = self.item_topic[items]  # B C
        log_topic = self.topic_probability(batch).clamp_min(TINY).log().float().gather(1, topic)
        scope = self.query_scope[queries]
        fits = (
            (scope == NO_SCOPE)
            | (scope == topic)
            | (scope == self.topic_category.numel() + self.topic_category[topic])
        )
        query = self.query_log_likelihood[queries] - MISMATCH * (~fits).float()
        return log_topic + self.item_log_popularity[items] + query
