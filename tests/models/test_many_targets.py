"""Many-target training: windows, negatives, losses, and the paper-fidelity fixes that came with them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.loader import (
    FIRST_TRAIN_POSITION,
    HELD_OUT,
    NegativeSampler,
    WindowConfig,
    WindowSamples,
    gather_windows,
    training_item_counts,
)
from seminar.data.schema import EMPTY_QUERY, SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.psu import clip_loss
from seminar.models.ranker import MODELS, Ranker, RankerConfig
from seminar.models.search import SearchInputs, select_top_k
from seminar.train.losses import ranking_loss
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("many") / "d", users=30, items=200, mean_length=30)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


def test_windows_cover_every_training_position_once(ds: SeminarDataset) -> None:
    samples = WindowSamples(ds, WindowConfig(max_length=10, targets_per_window=7, train_negatives=2))
    batch = samples.__getitems__(list(range(len(samples))))
    valid = batch["target_valid"].numpy()
    got = sorted(
        (int(u), int(item), int(t))
        for u, items, stamps, v in zip(
            batch["user"].numpy(),
            batch["target_items"].numpy(),
            batch["target_timestamps"].numpy(),
            valid,
            strict=False,
        )
        for item, t in zip(items[v], stamps[v], strict=False)
    )
    expected = sorted(
        (u, int(ds.items[ds.offsets[u] + p]), int(ds.timestamps[ds.offsets[u] + p]))
        for u in range(ds.n_users)
        for p in range(FIRST_TRAIN_POSITION, int(ds.lengths[u]) - HELD_OUT)
    )
    assert got == expected
    assert (batch["neg_items"] != batch["target_items"][..., None]).all()


def test_window_history_is_the_one_target_window(ds: SeminarDataset) -> None:
    """Target t's band of the buffer holds exactly the L behaviours before it."""
    length, targets = 6, 4
    samples = WindowSamples(ds, WindowConfig(max_length=length, targets_per_window=targets))
    batch = samples.__getitems__(list(range(10)))
    for b in range(10):
        user = batch["user"][b].item()
        for t in range(targets):
            if not batch["target_valid"][b, t]:
                continue
            end = batch["target_ends"][b, t].item()
            position = int(samples.ends[b]) - targets + t
            one = gather_windows(ds, np.array([user]), np.array([position]), length)
            assert np.array_equal(batch["hist_items"][b, end - length : end].numpy(), one["hist_items"][0])
            assert np.array_equal(batch["mask"][b, end - length : end].numpy(), one["mask"][0])


def test_positions_cap_keeps_about_that_many_targets(ds: SeminarDataset) -> None:
    samples = WindowSamples(ds, WindowConfig(max_length=8, targets_per_window=4, positions_per_user=5))
    per_user = np.bincount(samples.users, minlength=ds.n_users)
    assert per_user.max() <= 2  # ceil(5 / 4) chunks
    first = samples.ends.copy()
    samples.set_epoch(1)
    assert len(samples) == first.size  # the same number of chunks per user ...
    assert not np.array_equal(samples.ends, first)  # ... drawn again for the new epoch


def test_popularity_negatives_follow_training_counts(ds: SeminarDataset) -> None:
    sampler = NegativeSampler(ds, "popularity")
    rng = np.random.default_rng(0)
    positives = np.ones(200_000, dtype=np.int64)
    draws = sampler.sample(rng, positives, 1)[:, 0]
    assert (draws != 1).all() and draws.min() >= 1 and draws.max() <= ds.n_items
    counts = training_item_counts(ds).astype(np.float64)
    counts[1:] += 1.0
    expected = counts / counts.sum()
    observed = np.bincount(draws, minlength=ds.n_items + 1) / draws.size
    top = np.argsort(expected)[-5:]
    top = top[top != 1]
    np.testing.assert_allclose(observed[top], expected[top], rtol=0.1)
    assert np.allclose(np.exp(sampler.log_q[1:]).sum(), 1.0, atol=1e-4)


def test_training_item_counts_match_a_loop(ds: SeminarDataset) -> None:
    expected = np.zeros(ds.n_items + 1, dtype=np.int64)
    for u in range(ds.n_users):
        for p in range(int(ds.lengths[u]) - HELD_OUT):
            expected[ds.items[ds.offsets[u] + p]] += 1
    assert np.array_equal(training_item_counts(ds), expected)


def test_ranking_losses_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(5, 3, generator=g), torch.randn(5, 3, 7, generator=g)
    valid = torch.tensor([[True, True, False]] * 5)
    logits = torch.cat([pos[..., None], neg], dim=-1)
    ce = F.cross_entropy(logits[valid], torch.zeros(int(valid.sum()), dtype=torch.long))
    torch.testing.assert_close(ranking_loss(pos, neg, valid, "softmax"), ce)
    bce = F.softplus(-pos) + F.softplus(neg).mean(-1)
    torch.testing.assert_close(ranking_loss(pos, neg, valid, "bce"), bce[valid].mean())
    # a constant log Q (uniform sampling) changes nothing; a non-constant one does
    const = torch.full_like(pos, -3.0), torch.full_like(neg, -3.0)
    torch.testing.assert_close(ranking_loss(pos, neg, valid, "softmax", *const), ce)
    skewed = torch.rand(neg.shape, generator=g).log()
    assert not torch.isclose(ranking_loss(pos, neg, valid, "softmax", const[0], skewed), ce)


def one_target_batch(
    ds: SeminarDataset, batch: dict[str, torch.Tensor], ends: np.ndarray, length: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Every valid target of a many-target batch as its own sample with its own window."""
    targets = batch["target_items"].shape[1]
    rows = [(b, t) for b in range(len(ends)) for t in range(targets) if batch["target_valid"][b, t]]
    users = np.array([int(batch["user"][b]) for b, _ in rows])
    positions = np.array([int(ends[b]) - targets + t for b, t in rows])
    window = gather_windows(ds, users, positions, length)
    one = {k: torch.from_numpy(np.ascontiguousarray(v)).long() for k, v in window.items() if k != "mask"}
    one["mask"] = torch.from_numpy(window["mask"])
    one["user"] = torch.from_numpy(users)
    one["target_timestamps"] = torch.stack([batch["target_timestamps"][b, t] for b, t in rows])
    items = torch.stack(
        [torch.cat([batch["target_items"][b, t, None], batch["neg_items"][b, t]]) for b, t in rows]
    )
    queries = torch.stack(
        [torch.cat([batch["target_queries"][b, t, None], batch["neg_queries"][b, t]]) for b, t in rows]
    )
    return one, items, queries, rows


@settings(max_examples=6, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    length=st.integers(2, 12),
    targets=st.integers(1, 6),
    top_k=st.integers(1, 8),
    recent=st.integers(0, 8),
    seed=st.integers(0, 10_000),
)
def test_many_target_logits_equal_one_target_logits(
    ds: SeminarDataset,
    tables: FeatureTables,
    model: str,
    length: int,
    targets: int,
    top_k: int,
    recent: int,
    seed: int,
) -> None:
    config = RankerConfig(model=model, dim=8, heads=2, top_k=top_k, recent=min(recent, top_k), seed=seed)
    ranker = Ranker(tables, config).eval()
    samples = WindowSamples(
        ds, WindowConfig(max_length=length, targets_per_window=targets, train_negatives=3, seed=seed)
    )
    chosen = np.random.default_rng(seed).choice(len(samples), size=6, replace=False).tolist()
    batch = samples.__getitems__(chosen)
    b, t, n = batch["neg_items"].shape
    items = torch.cat([batch["target_items"][..., None], batch["neg_items"]], -1).view(b, -1)
    queries = torch.cat([batch["target_queries"][..., None], batch["neg_queries"]], -1).view(b, -1)
    ends = batch["target_ends"][..., None].expand(b, t, n + 1).reshape(b, -1)
    times = batch["target_timestamps"][..., None].expand(b, t, n + 1).reshape(b, -1)
    with torch.no_grad():
        many, _ = ranker.logits(batch, items, queries, ends, times)
        one, one_items, one_queries, rows = one_target_batch(ds, batch, samples.ends[chosen], length)
        single, _ = ranker.logits(one, one_items, one_queries)
    many = many.view(b, t, n + 1)
    expected = torch.stack([many[i, j] for i, j in rows])
    torch.testing.assert_close(single, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["twin", "seminar"])
def test_many_target_training_reaches_every_parameter(
    ds: SeminarDataset, tables: FeatureTables, model: str
) -> None:
    ranker = Ranker(tables, RankerConfig(model=model, dim=8, heads=2, top_k=4, loss="bce"))
    samples = WindowSamples(ds, WindowConfig(max_length=10, targets_per_window=5, train_negatives=3))
    loss, parts = ranker(samples.__getitems__(list(range(8))))
    loss.backward()
    missing = [n for n, p in ranker.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert torch.isfinite(parts["rank"])


def test_seminar_projections_learn_from_the_ranking_loss_alone(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    """The ESU sees x·G_j (paper: x^ESU = x^GSU), so G_j get a gradient without the consistency loss."""
    ranker = Ranker(tables, RankerConfig(model="seminar", dim=8, heads=2, top_k=4, gsu_consistency=0.0))
    samples = WindowSamples(ds, WindowConfig(max_length=10, targets_per_window=5, train_negatives=3))
    loss, _ = ranker(samples.__getitems__(list(range(8))))
    loss.backward()
    assert ranker.search.projections.grad is not None
    assert ranker.search.projections.grad.abs().sum() > 0


def test_seminar_consistency_loss_sees_dropped_behaviours(
    ds: SeminarDataset, tables: FeatureTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = Ranker(tables, RankerConfig(model="seminar", dim=8, heads=2, top_k=3, consistency_samples=4))
    samples = WindowSamples(ds, WindowConfig(max_length=12, targets_per_window=3, train_negatives=2))
    batch = samples.__getitems__(list(range(6)))
    seen: list[torch.Tensor] = []
    original = ranker.search.logits_at

    def recording(inputs: SearchInputs, positions: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(positions)
        return original(inputs, positions, *args)

    monkeypatch.setattr(ranker.search, "logits_at", recording)
    _loss, parts = ranker(batch)
    assert parts["gsu_consistency"] > 0
    (positions,) = seen
    assert positions.shape[-1] == 3 + 4  # K kept + the dropped sample
    kept, extra = positions[..., :3], positions[..., 3:]
    assert not (kept[..., :, None] == extra[..., None, :]).any()


def test_qin_first_stage_does_not_tie_in_recommendation_mode(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    """With the empty target query, the first stage still ranks behaviours (by query-to-item relevance)."""
    ranker = Ranker(tables, RankerConfig(model="qin", dim=8, heads=2, top_k=2, qin_first_stage=4)).eval()
    window = gather_windows(ds, np.arange(8), ds.lengths[:8] - 1, 20)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)).long() for k, v in window.items() if k != "mask"}
    batch["mask"] = torch.from_numpy(window["mask"])
    items = torch.from_numpy(ds.items[ds.offsets[:8] + ds.lengths[:8] - 1].astype(np.int64))[:, None]
    queries = torch.full_like(items, EMPTY_QUERY)
    with torch.no_grad():
        inputs = ranker._search_inputs(batch, items, queries)
        relevance = ranker.search.relevance(inputs)
    stage_one = torch.isfinite(relevance)[:, 0]
    most_recent, _ = select_top_k(torch.zeros_like(relevance), inputs.mask, 4)
    recent = torch.zeros_like(stage_one).scatter_(1, most_recent[:, 0], True)
    assert (stage_one.sum(dim=1) == 4).all()
    assert (stage_one != recent).any()  # not just the recency tie-break of all-equal scores


def test_clip_loss_ignores_padding_in_both_directions() -> None:
    """A chunk of 25 real rows scores the same alone and with 100 padded rows beside it."""
    g = torch.Generator().manual_seed(3)
    a = F.normalize(torch.randn(1, 25, 16, generator=g), dim=-1)
    b = F.normalize(a + 0.5 * torch.randn(1, 25, 16, generator=g), dim=-1)
    alone = clip_loss(a, b, torch.ones(1, 25, dtype=torch.bool), 0.07)
    pad = F.normalize(torch.randn(1, 100, 16, generator=g), dim=-1)
    valid = torch.cat([torch.zeros(1, 100, dtype=torch.bool), torch.ones(1, 25, dtype=torch.bool)], dim=1)
    padded = clip_loss(torch.cat([pad, a], 1), torch.cat([pad, b], 1), valid, 0.07)
    torch.testing.assert_close(padded, alone)


@pytest.mark.parametrize(("model", "recent"), [("twin", 0), ("seminar", 0), ("recency", 0), ("seminar", 2)])
def test_dense_and_gathered_esu_paths_agree(
    ds: SeminarDataset, tables: FeatureTables, model: str, recent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ESU over the masked window equals the ESU over gathered kept behaviours (recency bias on),
    also when short histories make the recent and the retrieved padding slots repeat a position."""
    import seminar.models.ranker as ranker_module

    ranker = Ranker(tables, RankerConfig(model=model, dim=8, heads=2, top_k=3, recent=recent)).eval()
    with torch.no_grad():
        ranker.recency.normal_(generator=torch.Generator().manual_seed(1))
    window = gather_windows(ds, np.arange(6), ds.lengths[:6] - 1, 12)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)).long() for k, v in window.items() if k != "mask"}
    batch["mask"] = torch.from_numpy(window["mask"])
    batch["user"] = torch.arange(6)
    batch["target_timestamps"] = batch["hist_timestamps"][:, -1] + 5
    items = torch.randint(1, ds.n_items + 1, (6, 4), generator=torch.Generator().manual_seed(2))
    queries = torch.full_like(items, EMPTY_QUERY)
    with torch.no_grad():
        monkeypatch.setattr(ranker_module, "DENSE_ESU_RATIO", 100)
        dense, _ = ranker.logits(batch, items, queries)
        monkeypatch.setattr(ranker_module, "DENSE_ESU_RATIO", 1)
        gathered, _ = ranker.logits(batch, items, queries)
    torch.testing.assert_close(dense, gathered, rtol=1e-5, atol=1e-5)


def eval_window(ds: SeminarDataset, users: int, length: int) -> dict[str, torch.Tensor]:
    """Each of the first ``users`` users' last ``length`` behaviours before their final one."""
    window = gather_windows(ds, np.arange(users), ds.lengths[:users] - 1, length)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)).long() for k, v in window.items() if k != "mask"}
    batch["mask"] = torch.from_numpy(window["mask"])
    batch["user"] = torch.arange(users)
    batch["target_timestamps"] = batch["hist_timestamps"][:, -1] + 5
    return batch


@pytest.mark.parametrize("model", ["seminar", "twin", "qin"])
def test_recent_behaviours_are_kept_beside_the_gsus_choice(
    ds: SeminarDataset, tables: FeatureTables, model: str
) -> None:
    """With recent = R the kept set is the last R real behaviours plus the GSU's top K - R of the
    older ones (ties: later first), checked target by target against a plain loop."""
    top_k, recent = 6, 2
    ranker = Ranker(tables, RankerConfig(model=model, dim=8, heads=2, top_k=top_k, recent=recent)).eval()
    batch = eval_window(ds, 12, 20)
    items = torch.randint(1, ds.n_items + 1, (12, 3), generator=torch.Generator().manual_seed(4))
    queries = torch.full_like(items, EMPTY_QUERY)
    queries[:, 1] = 3
    with torch.no_grad():
        inputs = ranker._search_inputs(batch, items, queries)
        kept, valid = ranker._select(inputs, None)
        older = inputs.mask.clone()  # each user's real behaviours but the last R
        for b in range(12):
            older[b, torch.nonzero(older[b]).flatten()[-recent:]] = False
        scores = ranker.search.relevance(replace(inputs, visible=older[:, None, :].expand(-1, 3, -1)))
    for b in range(12):
        positions = torch.nonzero(inputs.mask[b]).flatten().tolist()
        for c in range(3):
            got = sorted(kept[b, c][valid[b, c]].tolist())
            rest = positions[:-recent]
            ranked = sorted(rest, key=lambda p: (-float(scores[b, c, p]), -p))
            assert got == sorted(positions[-recent:] + ranked[: top_k - recent])


def test_recent_equal_to_k_is_the_recency_gsu(ds: SeminarDataset, tables: FeatureTables) -> None:
    batch = eval_window(ds, 10, 16)
    items = torch.randint(1, ds.n_items + 1, (10, 4), generator=torch.Generator().manual_seed(5))
    queries = torch.full_like(items, EMPTY_QUERY)
    chosen = []
    for config in (RankerConfig(model="seminar", top_k=5, recent=5), RankerConfig(model="recency", top_k=5)):
        ranker = Ranker(tables, replace(config, dim=8, heads=2)).eval()
        with torch.no_grad():
            kept, valid = ranker._select(ranker._search_inputs(batch, items, queries), None)
        chosen.append(torch.where(valid, kept, -1).sort(dim=-1).values)
    torch.testing.assert_close(chosen[0], chosen[1])


@pytest.mark.parametrize("recent", [-1, 6])
def test_recent_outside_zero_to_k_is_refused(recent: int) -> None:
    with pytest.raises(ValueError, match="recent must lie in"):
        RankerConfig(top_k=5, recent=recent)
