"""How the ranker is put together: one map names every model, a GSU says itself whether it trains its
selection, TWIN's GSU borrows the ESU without owning it, and skipping the GSU is an argument, not a
change of the model's config."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from seminar.data.loader import EvalSamples, TrainSamples, WindowConfig, WindowSamples
from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import MODELS, SEARCHES, Ranker, RankerConfig, make_search
from seminar.models.registry import ALL_MODELS, RANKERS, REFERENCE_MODELS, build_ranker
from seminar.models.search import BilinearSearch, KeyTables, SearchInputs, SimSoftSearch
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("structure") / "d", users=24, items=120, mean_length=30)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


def small(model: str, **knobs: Any) -> RankerConfig:
    return RankerConfig(model=model, dim=16, heads=2, top_k=4, **knobs)


def window_batch(ds: SeminarDataset) -> dict[str, Tensor]:
    samples = WindowSamples(ds, WindowConfig(max_length=12, targets_per_window=3, train_negatives=2))
    return samples.__getitems__(list(range(6)))


def eval_batch(ds: SeminarDataset, max_length: int = 20) -> dict[str, Tensor]:
    return EvalSamples(ds, "test", "pair", max_length=max_length).__getitems__([0, 1, 2, 3])


# ---------------------------------------------------------------------------------------- one map


def test_model_names_are_derived_from_one_map_in_their_published_order() -> None:
    # the CLI's --model choices and the reproduce grid read these; their order is part of the interface
    assert MODELS == ("recency", "sim_hard", "sim_soft", "eta", "twin", "qin", "seminar")
    assert tuple(SEARCHES) == MODELS
    assert ALL_MODELS == tuple(RANKERS) == (*REFERENCE_MODELS, *MODELS)
    assert all(RANKERS[name] is Ranker for name in MODELS)


# The oracle knows the lifelong generator's parameters and refuses other data (tests/models/test_oracle.py).
GENERIC_MODELS = [name for name in ALL_MODELS if name != "oracle"]


@pytest.mark.parametrize("name", GENERIC_MODELS)
def test_every_model_in_the_map_builds_trains_and_scores(
    ds: SeminarDataset, tables: FeatureTables, name: str
) -> None:
    model = build_ranker(tables, small(name), ds)
    assert model.config.model == name
    if name in MODELS:
        assert isinstance(model, Ranker)
    if getattr(model, "trainable", True):
        loss, _ = model(window_batch(ds))
        assert torch.isfinite(loss)
        loss.backward()
    batch = eval_batch(ds)
    scores = model.eval().score_candidates(batch)
    assert scores.shape == batch["cand_items"].shape and torch.isfinite(scores).all()


def test_unknown_models_are_refused_with_the_known_names(tables: FeatureTables) -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*seminar"):
        build_ranker(tables, small("nope"))
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*seminar"):
        Ranker(tables, small("nope"))
    with pytest.raises(ValueError, match="unknown model 'sasrec'"):  # a reference model has no GSU
        make_search(small("sasrec"), tables, nn.Identity(), 2)  # type: ignore[arg-type]


# ------------------------------------------------------------------- a GSU that trains its selection


class ScaledSoftSearch(BilinearSearch):
    """SIM soft search with one weight of its own: it trains its selection as SEMINAR's GSU does,
    without being SEMINAR's (the ranker must ask the GSU, not check its class)."""

    trains_selection = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def query_vectors(self, inputs: SearchInputs) -> Tensor:
        return self.scale * inputs.target_fused

    def relevance(self, inputs: SearchInputs, history_tables: KeyTables | None = None) -> Tensor:
        keys = self.keys(inputs.history, history_tables)
        return torch.einsum("bcd,bld->bcl", self.query_vectors(inputs), keys)

    def logits_at(
        self,
        inputs: SearchInputs,
        positions: Tensor,
        history_tables: KeyTables | None = None,
        dense_ratio: int = 8,
    ) -> Tensor:
        return torch.gather(self.relevance(inputs, history_tables), 2, positions)


def test_a_new_gsu_that_trains_its_selection_gets_the_consistency_loss(
    ds: SeminarDataset, tables: FeatureTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SEARCHES, "scaled", lambda _: ScaledSoftSearch())
    ranker = Ranker(tables, small("scaled", gsu_consistency=0.5))
    assert isinstance(ranker.search, ScaledSoftSearch)
    loss, parts = ranker(window_batch(ds))
    assert parts["gsu_consistency"] > 0
    loss.backward()
    grad = ranker.search.scale.grad
    assert grad is not None and grad.abs() > 0  # selection has no gradient: this is the loss's
    ranker.eval()
    _, parts = ranker(window_batch(ds))
    assert parts["gsu_consistency"] == 0  # a training signal only


@pytest.mark.parametrize("name", [m for m in MODELS if m != "seminar"])
def test_gsus_without_weights_of_their_own_get_no_auxiliary_loss(
    ds: SeminarDataset, tables: FeatureTables, name: str
) -> None:
    ranker = Ranker(tables, small(name, gsu_consistency=0.5))
    assert not ranker.search.trains_selection
    _, parts = ranker(window_batch(ds))
    assert parts["gsu_consistency"] == 0
    batch = eval_batch(ds)
    inputs = ranker._search_inputs(batch, batch["cand_items"], batch["cand_queries"])
    with pytest.raises(NotImplementedError):
        ranker.search.logits_at(inputs, torch.zeros((4, 1, 1), dtype=torch.long))


# -------------------------------------------------------------------------- TWIN borrows the ESU


def test_twin_gsu_owns_nothing_and_checkpoints_keep_their_keys(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    twin = Ranker(tables, small("twin"))
    assert twin.search.esu is twin.esu
    assert not list(twin.search.parameters()) and not twin.search.state_dict()
    assert not list(twin.search.children())
    # the same keys as a GSU without weights: a saved TWIN run holds the ESU once, under "esu."
    plain = Ranker(tables, small("sim_soft"))
    assert isinstance(plain.search, SimSoftSearch)
    assert list(twin.state_dict()) == list(plain.state_dict())
    # a saved state dict loads strictly into a fresh TWIN, whose GSU then scores with the loaded ESU
    with torch.no_grad():
        twin.esu.key.weight.mul_(2.0)
    fresh = Ranker(tables, small("twin", seed=1))
    fresh.load_state_dict(twin.state_dict(), strict=True)
    batch = eval_batch(ds, max_length=30)
    torch.testing.assert_close(fresh.eval().score_candidates(batch), twin.eval().score_candidates(batch))


def test_copies_of_a_twin_ranker_share_their_own_esu(tables: FeatureTables) -> None:
    twin = Ranker(tables, small("twin"))
    copied = copy.deepcopy(twin)
    assert copied.search.esu is copied.esu and copied.esu is not twin.esu


# ------------------------------------------------------------------ keep_all instead of a new config


@pytest.mark.parametrize("name", ["seminar", "twin", "eta"])
def test_keep_all_equals_a_top_k_that_covers_the_window(
    ds: SeminarDataset, tables: FeatureTables, name: str
) -> None:
    batch = eval_batch(ds, max_length=40)
    items, queries = batch["cand_items"], batch["cand_queries"]
    ranker = Ranker(tables, small(name)).eval()
    config = ranker.config
    covering = Ranker(tables, replace(config, top_k=batch["mask"].shape[1])).eval()
    covering.load_state_dict(ranker.state_dict())
    with torch.no_grad():
        kept_all, _ = ranker.logits(batch, items, queries, keep_all=True)
        expected, _ = covering.logits(batch, items, queries)
        selected, _ = ranker.logits(batch, items, queries)
    assert torch.equal(kept_all, expected)
    assert not torch.equal(selected, expected)  # top_k = 4 of 40 selects: keep_all is what changed it
    assert ranker.config is config and config.top_k == 4


@pytest.mark.parametrize("name", ["seminar", "twin"])
def test_kept_positions_equal_the_rankers_own_selection(
    ds: SeminarDataset, tables: FeatureTables, name: str
) -> None:
    """Positions chosen outside (serving's GSU) give the same logits as the ranker's own GSU choosing
    them, also with every id's channels looked up from precomputed id tables."""
    batch = eval_batch(ds, max_length=40)
    items, queries = batch["cand_items"], batch["cand_queries"]
    ranker = Ranker(tables, small(name)).eval()
    with torch.no_grad():
        inputs = ranker._search_inputs(batch, items, queries)
        own, _ = ranker._select(inputs, None)
        expected, _ = ranker.logits(batch, items, queries)
        given, _ = ranker.logits(batch, items, queries, kept=own)
        cached, _ = ranker.logits(batch, items, queries, kept=own, id_tables=ranker.embedding.id_tables())
    torch.testing.assert_close(given, expected)
    torch.testing.assert_close(cached, expected)
    with pytest.raises(ValueError, match="not many-target training"):
        ranker.logits(batch, items, queries, ends=torch.ones_like(items), kept=own)


def test_one_target_training_batches_still_score(ds: SeminarDataset, tables: FeatureTables) -> None:
    """The plain one-target path the many-target one is tested against goes through the same hooks."""
    batch = TrainSamples(ds, WindowConfig(max_length=16, train_negatives=2)).__getitems__(list(range(8)))
    loss, parts = Ranker(tables, small("seminar"))(batch)
    assert torch.isfinite(loss) and parts["gsu_consistency"] > 0
