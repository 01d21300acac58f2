"""Reference rankers: popularity and item-kNN equal plain numpy recomputations, fitted tables survive a
state dict round trip, and SASRec is causal, ignores padding, never yields NaN and learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.loader import EvalSamples
from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import RankerConfig
from seminar.models.reference import ItemKnnRanker, PopularityRanker, SasRec
from tests.data.helpers import synthetic_dataset


def config(**knobs: object) -> RankerConfig:
    """A small RankerConfig; knobs it has no field for (knn_history, layers, ...) are set as attributes."""
    cfg = RankerConfig(dim=16, heads=2)
    for name, value in knobs.items():
        setattr(cfg, name, value)
    return cfg


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("reference") / "d", users=30, items=80, mean_length=15)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


def eval_batch(ds: SeminarDataset, max_length: int = 20) -> dict[str, torch.Tensor]:
    return EvalSamples(ds, "test", "recommendation", max_length=max_length).__getitems__(
        list(range(ds.n_users))
    )


def histories(ds: SeminarDataset) -> list[np.ndarray]:
    """Each user's training history, written out plainly: all but the last two behaviours."""
    return [np.asarray(ds.items[ds.offsets[u] : ds.offsets[u + 1] - 2]) for u in range(ds.n_users)]


def dense_similarity(ds: SeminarDataset, width: int | None = None, span: int | None = None) -> np.ndarray:
    """Item-item cosine from a dense users x items 0/1 matrix (with ``span``: one row per span of that
    many consecutive training behaviours of a user); each row cut to its ``width`` best (by sim, then
    smaller id) when given."""
    rows = [
        items[start : start + (span or max(len(items), 1))]
        for items in histories(ds)
        for start in range(0, max(len(items), 1), span or max(len(items), 1))
    ]
    x = np.zeros((len(rows), ds.n_items + 1))
    for row, items in enumerate(rows):
        x[row, items] = 1.0
    n = x.sum(axis=0)
    co = x.T @ x
    np.fill_diagonal(co, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(co > 0, co / np.sqrt(np.outer(n, n)), 0.0)
    if width is not None:
        ids = np.arange(sim.shape[1])
        for row in sim:
            row[np.lexsort((ids, -row))[width:]] = 0.0
    return sim


def knn_scores(sim: np.ndarray, batch: dict[str, torch.Tensor], history: int) -> np.ndarray:
    hist, mask, cand = (batch[k].numpy() for k in ("hist_items", "mask", "cand_items"))
    out = np.zeros(cand.shape)
    for b in range(cand.shape[0]):
        recent = hist[b][mask[b]][-history:]
        out[b] = sim[recent][:, cand[b]].sum(axis=0)
    return out


def random_dataset(seed: int, users: int, items: int) -> SeminarDataset:
    """A tiny in-memory dataset with skewed item ids (so items co-occur and similarities tie)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    size = int(offsets[-1])
    seq = np.minimum(rng.geometric(2.0 / items, size), items).astype(np.int32)
    negatives = rng.integers(1, items + 1, (users, 6)).astype(np.int32)
    return SeminarDataset(
        root=Path("memory"),
        manifest={"counts": {"items": items, "queries": 1, "attributes": 0}},
        offsets=offsets,
        items=seq,
        queries=np.ones(size, dtype=np.int32),
        timestamps=np.arange(size, dtype=np.int64),
        behaviour=np.zeros(size, dtype=np.int8),
        attr_offsets=np.zeros(items + 2, dtype=np.int64),
        attr_ids=np.zeros(0, dtype=np.int32),
        representative_query=np.ones(items + 1, dtype=np.int32),
        test_negatives=negatives,
        valid_negatives=negatives,
    )


def test_popularity_counts_training_histories_only(ds: SeminarDataset, tables: FeatureTables) -> None:
    ranker = PopularityRanker(tables, config())
    ranker.fit(ds)
    batch = eval_batch(ds)
    counts = np.bincount(np.concatenate(histories(ds)), minlength=ds.n_items + 1)
    expected = counts[batch["cand_items"].numpy()].astype(np.float32)
    np.testing.assert_array_equal(ranker.score_candidates(batch).numpy(), expected)
    with_held_out = np.bincount(np.asarray(ds.items), minlength=ds.n_items + 1)
    assert not np.array_equal(with_held_out[batch["cand_items"].numpy()], expected)  # the check has power
    assert not list(ranker.parameters()) and not PopularityRanker.trainable and not ranker.many_targets


def test_item_knn_equals_dense_cosine(ds: SeminarDataset, tables: FeatureTables) -> None:
    ranker = ItemKnnRanker(tables, config(knn_history=7, knn_neighbours=10 * ds.n_items))
    ranker.fit(ds)
    batch = eval_batch(ds)
    expected = knn_scores(dense_similarity(ds), batch, 7)
    assert np.count_nonzero(expected) > expected.size // 4
    np.testing.assert_allclose(ranker.score_candidates(batch).numpy(), expected, rtol=1e-5, atol=1e-6)
    padded = dict(batch)  # what padded slots hold does not matter, only the mask
    padded["hist_items"] = torch.where(batch["mask"], batch["hist_items"], 1)
    assert torch.equal(ranker.score_candidates(padded), ranker.score_candidates(batch))
    ids = ranker.neighbour_ids
    assert torch.all(ids[:, 1:] >= ids[:, :-1]) and not ItemKnnRanker.trainable


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    users=st.integers(1, 12),
    items=st.integers(2, 15),
    width=st.integers(1, 17),
    history=st.integers(1, 6),
    length=st.integers(1, 10),
)
def test_item_knn_keeps_the_top_neighbours_with_ties_to_smaller_ids(
    seed: int, users: int, items: int, width: int, history: int, length: int
) -> None:
    ds = random_dataset(seed, users, items)
    ranker = ItemKnnRanker(FeatureTables.from_dataset(ds), config(knn_history=history, knn_neighbours=width))
    ranker.fit(ds)
    batch = eval_batch(ds, max_length=length)
    expected = knn_scores(dense_similarity(ds, width), batch, history)
    np.testing.assert_allclose(ranker.score_candidates(batch).numpy(), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000), users=st.integers(1, 10), items=st.integers(2, 12), span=st.integers(2, 12)
)
def test_item_knn_with_a_span_counts_pairs_within_one_span(
    seed: int, users: int, items: int, span: int
) -> None:
    ds = random_dataset(seed, users, items)
    ranker = ItemKnnRanker(
        FeatureTables.from_dataset(ds), config(knn_history=5, knn_neighbours=items, knn_span=span)
    )
    ranker.fit(ds)
    batch = eval_batch(ds, max_length=8)
    expected = knn_scores(dense_similarity(ds, items, span), batch, 5)
    np.testing.assert_allclose(ranker.score_candidates(batch).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_item_knn_span_longer_than_every_history_changes_nothing(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    plain = ItemKnnRanker(tables, config(knn_history=7, knn_neighbours=20))
    spanned = ItemKnnRanker(tables, config(knn_history=7, knn_neighbours=20, knn_span=int(ds.lengths.max())))
    short = ItemKnnRanker(tables, config(knn_history=7, knn_neighbours=20, knn_span=3))
    for ranker in (plain, spanned, short):
        ranker.fit(ds)
    batch = eval_batch(ds)
    assert torch.equal(plain.score_candidates(batch), spanned.score_candidates(batch))
    assert not torch.equal(plain.score_candidates(batch), short.score_candidates(batch))


def test_state_dict_round_trip_restores_fitted_scores(ds: SeminarDataset, tables: FeatureTables) -> None:
    batch = eval_batch(ds)
    for cls in (PopularityRanker, ItemKnnRanker):
        fitted = cls(tables, config(knn_neighbours=5))
        fitted.fit(ds)
        fresh = cls(tables, config(knn_neighbours=5))
        assert torch.all(fresh.score_candidates(batch) == 0)  # from tables alone: nothing known yet
        fresh.load_state_dict(fitted.state_dict())
        assert torch.equal(fresh.score_candidates(batch), fitted.score_candidates(batch))
        assert torch.any(fitted.score_candidates(batch) != 0)
    trained, other = SasRec(tables, config(seed=0)).eval(), SasRec(tables, config(seed=1)).eval()
    assert not torch.equal(other.score_candidates(batch), trained.score_candidates(batch))
    other.load_state_dict(trained.state_dict())
    assert torch.equal(other.score_candidates(batch), trained.score_candidates(batch))


def many_target_batch(
    seed: int, padding: tuple[int, ...] = (0, 3, 9), targets: int = 4, width: int = 9, negatives: int = 5
) -> dict[str, torch.Tensor]:
    """A hand-made many-target batch over items 1..20: row b's buffer is padded up to padding[b];
    target t ends at max_length + t (max_length = width - targets + 1) and is valid when its history
    has a real behaviour (a fully padded row has none)."""
    g = torch.Generator().manual_seed(seed)
    b = len(padding)
    mask = torch.arange(width)[None, :] >= torch.tensor(padding)[:, None]
    hist = torch.randint(1, 21, (b, width), generator=g) * mask
    ends = torch.arange(width - targets + 1, width + 1).repeat(b, 1)
    return {
        "user": torch.arange(b),
        "hist_items": hist,
        "hist_queries": mask.long(),
        "hist_timestamps": torch.arange(width).repeat(b, 1) * mask,
        "mask": mask,
        "target_items": torch.randint(1, 21, (b, targets), generator=g),
        "target_queries": torch.ones(b, targets, dtype=torch.long),
        "target_timestamps": ends.clone(),
        "target_valid": ends > torch.tensor(padding)[:, None],
        "neg_items": torch.randint(1, 21, (b, targets, negatives), generator=g),
        "target_ends": ends,
    }


@pytest.fixture(scope="module")
def small_tables() -> FeatureTables:
    return FeatureTables(
        n_users=8,
        n_items=20,
        n_queries=1,
        n_attributes=0,
        item_attributes=torch.zeros(21, 1, dtype=torch.long),
        item_category=torch.zeros(21, dtype=torch.long),
    )


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_sasrec_every_parameter_gets_a_finite_gradient(small_tables: FeatureTables, loss: str) -> None:
    model = SasRec(small_tables, config(loss=loss, layers=2, dropout=0.1))
    batch = many_target_batch(0)
    batch["target_log_q"] = torch.full(batch["target_items"].shape, -3.0)
    batch["neg_log_q"] = torch.full(batch["neg_items"].shape, -2.0)
    value, parts = model(batch)
    value.backward()
    assert torch.isfinite(value) and set(parts) == {loss} and not parts[loss].requires_grad
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert SasRec.many_targets and SasRec.trainable


def test_sasrec_fully_padded_rows_give_no_nan(small_tables: FeatureTables) -> None:
    model = SasRec(small_tables, config()).eval()
    batch = many_target_batch(1, padding=(9, 9))
    positive, negative = model.target_logits(batch)
    assert torch.isfinite(positive).all() and torch.isfinite(negative).all()
    window = {k: batch[k] for k in ("hist_items", "mask", "user")}
    window["cand_items"] = batch["neg_items"][:, 0]
    assert torch.isfinite(model.score_candidates(window)).all()


def test_sasrec_ignores_padded_item_ids(small_tables: FeatureTables) -> None:
    model = SasRec(small_tables, config()).eval()
    batch = many_target_batch(2)
    changed = dict(batch)
    changed["hist_items"] = torch.where(batch["mask"], batch["hist_items"], torch.randint(1, 21, (3, 9)))
    assert torch.any(changed["hist_items"] != batch["hist_items"])
    for got, want in zip(model.target_logits(changed), model.target_logits(batch), strict=True):
        torch.testing.assert_close(got, want)
    for b in (batch, changed):
        b["cand_items"] = batch["neg_items"][:, 0]
    torch.testing.assert_close(model.score_candidates(changed), model.score_candidates(batch))


@pytest.mark.parametrize("layers", [1, 2])
def test_sasrec_target_sees_only_its_past(small_tables: FeatureTables, layers: int) -> None:
    model = SasRec(small_tables, config(layers=layers)).eval()
    batch = many_target_batch(3, padding=(0, 1, 2))
    positive, negative = model.target_logits(batch)
    slots = torch.arange(9)
    for t in range(4):
        end = batch["target_ends"][:, t : t + 1]
        future = dict(batch)
        future["hist_items"] = torch.where(slots >= end, torch.randint(1, 21, (3, 9)), batch["hist_items"])
        got_pos, got_neg = model.target_logits(future)
        torch.testing.assert_close(got_pos[:, t], positive[:, t])
        torch.testing.assert_close(got_neg[:, t], negative[:, t])
        last = dict(batch)  # the newest behaviour of its own history does matter
        last["hist_items"] = torch.where(slots == end - 1, batch["hist_items"] % 20 + 1, batch["hist_items"])
        assert not torch.allclose(model.target_logits(last)[0][:, t], positive[:, t])
        if layers == 1 and t > 0:  # one layer: exactly the band of max_length (= 6) behaviours
            before = dict(batch)
            before["hist_items"] = torch.where(
                slots < end - 6, batch["hist_items"] % 20 + 1, batch["hist_items"]
            )
            torch.testing.assert_close(model.target_logits(before)[0][:, t], positive[:, t])


def test_sasrec_scores_equal_the_last_targets_logits(small_tables: FeatureTables) -> None:
    """With one target the buffer is the evaluation window: both paths must give the same logits."""
    model = SasRec(small_tables, config()).eval()
    batch = many_target_batch(4, padding=(0, 3, 7), targets=1)
    positive, negative = model.target_logits(batch)
    window = {k: batch[k] for k in ("hist_items", "mask", "user")}
    window["cand_items"] = torch.cat([batch["target_items"], batch["neg_items"][:, 0]], dim=1)
    torch.testing.assert_close(model.score_candidates(window), torch.cat([positive, negative[:, 0]], dim=1))


def test_sasrec_last_target_equals_its_evaluation_window(small_tables: FeatureTables) -> None:
    """Positions count from the end: the buffer's last target, with one layer, sees exactly what an
    evaluation window of its max_length newest behaviours sees, however much padding precedes them."""
    model = SasRec(small_tables, config(layers=1)).eval()
    batch = many_target_batch(5, padding=(0, 2, 5))
    positive, _ = model.target_logits(batch)
    for front in (0, 4):
        window = {
            "hist_items": torch.cat(
                [torch.zeros(3, front, dtype=torch.long), batch["hist_items"][:, -6:]], 1
            ),
            "mask": torch.cat([torch.zeros(3, front, dtype=torch.bool), batch["mask"][:, -6:]], 1),
            "user": batch["user"],
            "cand_items": batch["target_items"][:, -1:],
        }
        torch.testing.assert_close(model.score_candidates(window)[:, 0], positive[:, -1])


def test_sasrec_learns_repeating_cycles(small_tables: FeatureTables) -> None:
    """Each user repeats its own cycle of 4 items: the next item is fully determined by the last ones."""
    g = torch.Generator().manual_seed(0)
    users, width, targets = 8, 10, 6
    cycles = torch.stack([torch.randperm(20, generator=g)[:4] + 1 for _ in range(users)])
    start = torch.randint(0, 4, (users, 1), generator=g)
    seq = cycles.gather(1, (start + torch.arange(width + 1)) % 4)  # users x (width + 1)
    ends = torch.arange(width - targets + 1, width + 1).repeat(users, 1)
    mask = torch.ones(users, width, dtype=torch.bool)
    batch = {
        "user": torch.arange(users),
        "hist_items": seq[:, :width],
        "mask": mask,
        "target_items": seq.gather(1, ends),
        "target_valid": torch.ones(users, targets, dtype=torch.bool),
        "neg_items": torch.randint(1, 21, (users, targets, 8), generator=g),
        "target_ends": ends,
    }
    model = SasRec(small_tables, config(dropout=0.0, layers=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, _ = model(batch)
    for _ in range(40):
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first.item()


def test_sasrec_construction_is_seeded_and_leaves_the_global_rng_alone(small_tables: FeatureTables) -> None:
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    first = SasRec(small_tables, config(seed=3))
    assert torch.equal(torch.rand(3), before)
    second = SasRec(small_tables, config(seed=3))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert torch.all(first.items.weight[0] == 0)
