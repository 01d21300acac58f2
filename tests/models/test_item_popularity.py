"""The head's item-popularity input (``RankerConfig.item_popularity``): each candidate's training
count, its own occurrence left out for a training positive, saved with the weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import Tensor

from seminar.data.loader import EvalSamples, WindowConfig, WindowSamples, training_item_counts
from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import POPULARITY_BUCKETS, Ranker, RankerConfig, popularity_buckets
from seminar.models.registry import build_ranker
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("popularity") / "d", users=24, items=120, mean_length=30)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


def ranker(tables: FeatureTables, model: str = "twin", **knobs: object) -> Ranker:
    config = RankerConfig(model=model, dim=16, heads=2, top_k=4, item_popularity=True, **knobs)
    return Ranker(tables, config).eval()


def eval_batch(ds: SeminarDataset) -> dict[str, Tensor]:
    return EvalSamples(ds, "test", "pair", max_length=20).__getitems__([0, 1, 2, 3])


def numpy_buckets(counts: np.ndarray) -> np.ndarray:
    """floor(log2(count + 1)), negative counts as 0, capped at the last bucket."""
    return np.minimum(np.floor(np.log2(np.maximum(counts, 0) + 1)), POPULARITY_BUCKETS - 1).astype(np.int64)


def test_tables_count_items_in_the_training_histories_only(ds: SeminarDataset, tables: FeatureTables):
    assert tables.item_counts is not None
    np.testing.assert_array_equal(tables.item_counts.numpy(), training_item_counts(ds))
    # the held-out behaviours (validation and test, the last two of each user) are not counted
    assert int(tables.item_counts.sum()) == int(np.maximum(ds.lengths - 2, 0).sum())


def test_buckets_are_log2_of_count_plus_one_and_capped():
    counts = torch.tensor([0, 1, 2, 3, 7, 8, 2**30])
    assert popularity_buckets(counts).tolist() == [0, 1, 1, 2, 3, 3, POPULARITY_BUCKETS - 1]


def test_the_score_moves_with_the_candidate_count_alone(ds: SeminarDataset, tables: FeatureTables):
    model = ranker(tables)
    batch = eval_batch(ds)
    with torch.no_grad():
        before = model.score_candidates(batch)
        model.item_counts[batch["cand_items"][0, 0]] += 1000  # one candidate's item becomes popular
        after = model.score_candidates(batch)
    changed = before != after
    same_item = batch["cand_items"] == batch["cand_items"][0, 0]
    assert changed[same_item].all() and not changed[~same_item].any()


def test_a_training_positive_is_counted_without_its_own_occurrence(
    ds: SeminarDataset, tables: FeatureTables, monkeypatch: pytest.MonkeyPatch
):
    """The training loss marks each target's positive (column 0 of its candidates) as ``own``, and
    such a candidate's bucket is that of its count less one (buckets worked out here in numpy)."""
    model = ranker(tables)
    samples = WindowSamples(ds, WindowConfig(max_length=12, targets_per_window=3, train_negatives=2))
    batch = samples.__getitems__(list(range(6)))
    b, t = batch["target_items"].shape
    n = 1 + batch["neg_items"].shape[-1]
    seen: dict[str, Tensor] = {}
    context = model._context

    def recording(*args: object, **kwargs: object) -> Tensor:
        seen["items"], seen["own"] = args[1], args[5]  # type: ignore[assignment]
        return context(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "_context", recording)
    model(batch)
    own = seen["own"].view(b, t, n)
    assert own[..., 0].all() and not own[..., 1:].any()

    items = seen["items"]
    counts = model.item_counts[items].numpy()
    expected = numpy_buckets(counts - own.view(b, t * n).numpy())
    times = batch["target_timestamps"].repeat_interleave(n, dim=1)
    with torch.no_grad():
        left_out = context(batch, items, torch.zeros_like(items), None, times, own.view(b, t * n))
        plain = context(batch, items, torch.zeros_like(items), None, times)
        table = model.popularity.weight
        full = numpy_buckets(counts)
        torch.testing.assert_close(
            left_out - plain,
            table[torch.from_numpy(expected)] - table[torch.from_numpy(full)],
        )
    assert (expected != full).any()  # some positive changed bucket: the check above is not vacuous


def test_the_counts_are_saved_with_the_weights_and_off_by_default(tables: FeatureTables):
    assert "item_counts" in ranker(tables).state_dict()
    plain = Ranker(tables, RankerConfig(model="twin", dim=16, heads=2, top_k=4))
    assert "item_counts" not in plain.state_dict() and plain.popularity is None


def test_off_leaves_every_other_weight_as_it_was(tables: FeatureTables):
    config = RankerConfig(model="seminar", dim=16, heads=2, top_k=4)
    plain = Ranker(tables, config).state_dict()
    with_counts = Ranker(tables, replace(config, item_popularity=True)).state_dict()
    for name, value in plain.items():
        torch.testing.assert_close(with_counts[name], value, rtol=0, atol=0)


def test_a_reference_ranker_says_it_has_no_head_to_give_the_counts(
    tables: FeatureTables, caplog: pytest.LogCaptureFixture
):
    config = RankerConfig(model="popularity", dim=16, heads=2, top_k=4, item_popularity=True)
    with caplog.at_level("WARNING", logger="seminar.models.registry"):
        build_ranker(tables, config)
    assert "changes nothing" in caplog.text


def test_without_counts_it_is_refused(tables: FeatureTables):
    with pytest.raises(ValueError, match="item counts"):
        ranker(replace(tables, item_counts=None))


def test_it_trains(ds: SeminarDataset, tables: FeatureTables):
    model = ranker(tables, "seminar").train()
    samples = WindowSamples(ds, WindowConfig(max_length=12, targets_per_window=3, train_negatives=2))
    loss, _ = model(samples.__getitems__(list(range(6))))
    loss.backward()
    assert model.popularity is not None and model.popularity.weight.grad is not None
    assert model.popularity.weight.grad.abs().sum() > 0
