"""The loader's vectorised windows against a plain per-sample reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.loader import EvalSamples, TrainSamples, WindowConfig, make_loader, training_positions
from seminar.data.schema import EMPTY_QUERY, SEARCH, SeminarDataset
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("loader") / "d", users=40, items=300, mean_length=30)


def reference_window(ds: SeminarDataset, user: int, end: int, length: int) -> dict[str, np.ndarray]:
    """Plain Python: the last `length` behaviours before `end`, left-padded with zeros."""
    start = int(ds.offsets[user])
    hist = list(range(start, start + end))[-length:]
    pad = length - len(hist)
    out = {}
    for name, arr in (
        ("hist_items", ds.items),
        ("hist_queries", ds.queries),
        ("hist_behaviour", ds.behaviour),
    ):
        out[name] = np.array([0] * pad + [int(arr[i]) for i in hist])
    out["mask"] = np.array([False] * pad + [True] * len(hist))
    return out


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 80), picks=st.lists(st.integers(0, 10**9), min_size=1, max_size=16))
def test_train_windows_equal_reference(ds: SeminarDataset, length: int, picks: list[int]) -> None:
    samples = TrainSamples(ds, WindowConfig(max_length=length, train_negatives=3))
    index = [p % len(samples) for p in picks]
    batch = samples.__getitems__(index)
    for row, i in enumerate(index):
        user, pos = int(samples.users[i]), int(samples.positions[i])
        ref = reference_window(ds, user, pos, length)
        for key, value in ref.items():
            np.testing.assert_array_equal(batch[key][row].numpy(), value)
        flat = ds.offsets[user] + pos
        assert batch["target_items"][row] == ds.items[flat]
        assert batch["target_queries"][row] == ds.queries[flat]
    assert batch["hist_items"].shape == (len(index), length)
    assert not (batch["neg_items"] == batch["target_items"][:, None]).any()
    assert (batch["neg_queries"] == batch["target_queries"][:, None]).all()


def test_training_positions_leave_out_validation_and_test(ds: SeminarDataset) -> None:
    users, positions = training_positions(ds)
    assert users.size == int(np.maximum(ds.lengths - 3, 0).sum())
    assert positions.min() == 1
    assert np.all(positions <= ds.lengths[users] - 3)


def test_positions_per_user_cap_redraws_each_epoch(ds: SeminarDataset) -> None:
    samples = TrainSamples(ds, WindowConfig(positions_per_user=2, seed=1))
    assert np.bincount(samples.users, minlength=ds.n_users).max() <= 2
    first = samples.positions.copy()
    samples.set_epoch(1)
    assert len(samples) == first.size and not np.array_equal(first, samples.positions)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_eval_modes(ds: SeminarDataset, stage: str) -> None:
    rec = EvalSamples(ds, stage, "recommendation", max_length=16)
    batch = rec.__getitems__(list(range(len(rec))))
    back = 1 if stage == "test" else 2
    positives = ds.items[ds.offsets[1:] - back]
    np.testing.assert_array_equal(batch["cand_items"][:, 0].numpy(), positives)
    negatives = ds.test_negatives if stage == "test" else ds.valid_negatives
    np.testing.assert_array_equal(batch["cand_items"][:, 1:].numpy(), negatives)
    assert (batch["cand_queries"] == EMPTY_QUERY).all()
    # The held-out positive is never inside its own history window.
    last = batch["hist_items"][:, -1].numpy()
    np.testing.assert_array_equal(last, ds.items[ds.offsets[1:] - back - 1])

    search = EvalSamples(ds, stage, "search", max_length=16)
    sb = search.__getitems__(list(range(len(search))))
    assert 0 < len(search) < ds.n_users
    flat = ds.offsets[sb["user"].numpy()] + ds.lengths[sb["user"].numpy()] - back
    assert np.all(ds.behaviour[flat] == SEARCH)
    assert (sb["cand_queries"] == sb["cand_queries"][:, :1]).all()

    pair = EvalSamples(ds, stage, "pair", max_length=16)
    pb = pair.__getitems__(list(range(len(pair))))
    np.testing.assert_array_equal(
        pb["cand_queries"][:, 1:].numpy(), ds.representative_query[pb["cand_items"][:, 1:].numpy()]
    )


def test_dataloader_yields_whole_batches(ds: SeminarDataset) -> None:
    loader = make_loader(TrainSamples(ds, WindowConfig(max_length=20)), batch_size=32, shuffle=True, seed=3)
    batches = list(loader)
    assert sum(b["user"].shape[0] for b in batches) == len(loader.dataset)
    assert batches[0]["hist_items"].shape == (32, 20)
    again = next(
        iter(make_loader(TrainSamples(ds, WindowConfig(max_length=20)), batch_size=32, shuffle=True, seed=3))
    )
    assert (again["user"] == batches[0]["user"]).all()


def test_bad_mode_is_explained(ds: SeminarDataset) -> None:
    with pytest.raises(ValueError, match="unknown test mode"):
        EvalSamples(ds, "test", "browse")  # type: ignore[arg-type]


def test_loads_from_disk_each_time(tmp_path: Path) -> None:
    """Memory-mapped arrays work in the loader (no copy of all sequences needed)."""
    ds = synthetic_dataset(tmp_path / "d", users=10, items=200, mean_length=20)
    assert isinstance(ds.items, np.memmap)
    batch = TrainSamples(ds, WindowConfig(max_length=8)).__getitems__([0, 1])
    assert batch["hist_items"].dtype.is_floating_point is False


@given(length=st.integers(0, 60), world=st.integers(1, 5))
def test_shard_sampler_covers_every_index_once(length: int, world: int) -> None:
    from seminar.data.loader import ShardSampler

    shards = [list(ShardSampler(length, rank, world)) for rank in range(world)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(length))  # disjoint and complete: no padding duplicates
    assert [len(ShardSampler(length, rank, world)) for rank in range(world)] == [len(s) for s in shards]


def test_batches_of_read_only_arrays_become_writable_tensors_without_a_warning() -> None:
    import warnings

    import torch

    from seminar.data.loader import _to_torch

    frozen = np.arange(6, dtype=np.int64).reshape(2, 3)
    frozen.flags.writeable = False  # as a slice of a dataset opened read-only (memory-mapped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = _to_torch({"x": frozen})["x"]
    tensor += 1  # its own memory: the source array is untouched
    assert tensor.dtype == torch.int64 and frozen[0, 0] == 0
