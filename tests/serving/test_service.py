"""The scoring service against the plain reference: the ranker's own scoring over the user's whole
history, with its exact GSU or with the PQ GSU attached (``attach_pq_gsu``); appends, errors and
memory accounting."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from seminar.data.schema import EMPTY_QUERY
from seminar.models.ranker import Ranker, RankerConfig
from seminar.serving import (
    Behaviour,
    EmptyHistoryError,
    ScoringService,
    ServingError,
    TimestampOrderError,
    UnknownItemError,
    UnknownQueryError,
    load_export,
)
from seminar.serving.export import export_run
from seminar.train.checkpoint import save_checkpoint
from tests.serving.conftest import (
    PQ,
    RERANK,
    TOP_K,
    Trained,
    reference_batch,
    reference_positions,
    reference_ranker,
)


def dataset_history(trained: Trained, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = trained.ds
    s, e = int(ds.offsets[user]), int(ds.offsets[user + 1])
    return np.asarray(ds.items[s:e]), np.asarray(ds.queries[s:e]), np.asarray(ds.timestamps[s:e])


def append_ids(
    service: ScoringService, trained: Trained, user: int, items: np.ndarray, queries: np.ndarray, stamps
) -> int:
    ids = trained.ids
    return service.append_columns(
        ids.users[user], [ids.items[i] for i in items], [ids.queries[q] for q in queries], stamps
    )


def synthetic_history(trained: Trained, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A long history drawn from the dataset's ids (repeats included), half of it searches."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, trained.ds.n_items + 1, n)
    queries = np.where(rng.random(n) < 0.5, EMPTY_QUERY, rng.integers(2, trained.ds.n_queries + 1, n))
    stamps = np.cumsum(rng.integers(0, 50, n)) + 1_000
    return items, queries, stamps


def check_against_reference(
    service: ScoringService,
    trained: Trained,
    user: int,
    history: tuple[np.ndarray, np.ndarray, np.ndarray],
    targets: np.ndarray,
    query: int,
    k: int = TOP_K,
    rerank: int | None = RERANK,
) -> None:
    """``rerank`` None: the service's exact GSU against the ranker's own; else the PQ GSU."""
    items, queries, stamps = history
    now = int(stamps[-1]) + 77
    ids = trained.ids
    got = service.score_many(ids.users[user], [ids.items[t] for t in targets], ids.queries[query], k, now)
    ranker = reference_ranker(trained, k=k, rerank=rerank)
    batch = reference_batch(user, items, queries, stamps, targets, query, now)
    expected = ranker.score_candidates(batch)[0]
    logits = torch.tensor([r.logit for r in got])
    kept = reference_positions(ranker, batch)
    # Equal pairs (repeats) tie exactly, and either may fill the ADC shortlist's last places; the
    # ESU's recency bias then sees another distance. Where the kept positions agree the logits are
    # equal; where a tied repeat was swapped they differ by that bias term only.
    same = torch.tensor(
        [sorted(b.position for b in r.behaviours) == list(k) for r, k in zip(got, kept, strict=True)]
    )
    assert torch.allclose(logits[same], expected[same], rtol=1e-4, atol=1e-5), (logits, expected)
    assert torch.allclose(logits[~same], expected[~same], atol=1e-3), (logits, expected)
    probabilities = torch.tensor([r.probability for r in got])[same]
    assert np.allclose(probabilities.numpy(), torch.sigmoid(expected[same]).numpy(), atol=1e-6)
    # The same behaviours as the ranker keeps, compared as (query, item) pairs.
    for r, expected_positions in zip(got, kept, strict=True):
        mine = sorted((queries[b.position], items[b.position]) for b in r.behaviours)
        assert mine == sorted(zip(queries[expected_positions], items[expected_positions], strict=True))
    for r in got:  # the behaviours are reported chronologically, in raw ids
        assert [b.position for b in r.behaviours] == sorted(b.position for b in r.behaviours)
        for b in r.behaviours:
            assert b.item == ids.items[items[b.position]] and b.timestamp == stamps[b.position]
            assert b.query == ids.queries[queries[b.position]]


SCORING_PATHS = [("exact", "faiss", None)] + [
    ("pq", backend, rerank) for backend in ("faiss", "numpy") for rerank in (RERANK, 0)
]


@pytest.mark.parametrize(("gsu", "backend", "rerank"), SCORING_PATHS)
def test_scores_equal_the_reference(trained: Trained, gsu: str, backend: str, rerank: int | None) -> None:
    """The exact GSU against the ranker's own; the PQ GSU (either scan) against the ranker with it."""
    options = {} if rerank is None else {"rerank_factor": rerank}
    service = ScoringService.load(trained.export, gsu=gsu, backend=backend, **options)
    rng = np.random.default_rng(1)
    for user in range(0, trained.ds.n_users, 2):
        history = dataset_history(trained, user)
        append_ids(service, trained, user, *history)
        targets = rng.integers(1, trained.ds.n_items + 1, 5)
        for query in (EMPTY_QUERY, int(history[1].max())):
            check_against_reference(service, trained, user, history, targets, query, rerank=rerank)


@pytest.mark.parametrize("rerank", [None, RERANK, 0])
def test_long_histories_with_repeats_equal_the_reference(trained: Trained, rerank: int | None) -> None:
    """Long histories (the fast top-k's own path: n > 4K) with repeated pairs, which tie exactly."""
    if rerank is None:
        service = ScoringService.load(trained.export)
    else:
        service = ScoringService.load(trained.export, gsu="pq", rerank_factor=rerank)
    for user, n in ((0, 600), (1, 3)):
        history = synthetic_history(trained, n, seed=user)
        append_ids(service, trained, user, *history)
        targets = np.arange(1, 9)
        check_against_reference(service, trained, user, history, targets, EMPTY_QUERY, rerank=rerank)
        check_against_reference(service, trained, user, history, targets, 2, k=7, rerank=rerank)


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_codes_of_the_fused_key_equal_the_reference(trained: Trained, tmp_path: Path, backend: str) -> None:
    """An export whose quantizer codes the fused key (``--pq-layout fused``): every behaviour is
    encoded from its own key at append, and serving keeps what the ranker with that PQ GSU keeps.
    Eight sub-vectors, so that two different pairs rarely share every code: an ADC tie at the
    shortlist's last place between different pairs may be broken either way by either side."""
    config = dataclasses.replace(PQ, layout="fused", n_sub=8)
    export = export_run(trained.ds, trained.run, tmp_path / "fused", config)
    fused = dataclasses.replace(trained, export=export)
    service = ScoringService.load(export, gsu="pq", backend=backend)
    assert service.tables.code_width == 8  # n_sub bytes per behaviour, not M · n_sub
    rng = np.random.default_rng(2)
    for user in range(0, trained.ds.n_users, 3):
        history = dataset_history(trained, user)
        append_ids(service, trained, user, *history)
        codes = service.history(trained.ids.users[user]).codes
        keys = service.tables.keys(history[1], history[0])
        assert np.array_equal(codes, service.tables.fused.encode_channel(0, keys))
        targets = rng.integers(1, trained.ds.n_items + 1, 5)
        for query in (EMPTY_QUERY, int(history[1].max())):
            check_against_reference(service, fused, user, history, targets, query)


def test_incremental_appends_equal_one_bulk_append(trained: Trained) -> None:
    history = synthetic_history(trained, 300, seed=3)
    bulk = ScoringService.load(trained.export)
    append_ids(bulk, trained, 2, *history)
    steps = ScoringService.load(trained.export)
    ids = trained.ids
    cuts = [0, 1, 2, 70, 71, 200, 300]
    for a, b in itertools.pairwise(cuts):
        part = [
            Behaviour(ids.items[i], int(t), ids.queries[q])
            for i, q, t in zip(history[0][a:b], history[1][a:b], history[2][a:b], strict=True)
        ]
        assert steps.append(ids.users[2], part) == b
    one, two = bulk.history(ids.users[2]), steps.history(ids.users[2])
    for name in ("codes", "items", "queries", "timestamps"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    targets = [ids.items[i] for i in (3, 4, 5)]
    for query in (None, ids.queries[2]):
        assert bulk.score_many(ids.users[2], targets, query) == steps.score_many(ids.users[2], targets, query)


def test_codes_are_the_per_id_code_tables(trained: Trained) -> None:
    service = ScoringService.load(trained.export, gsu="pq")
    items, queries, stamps = synthetic_history(trained, 50, seed=4)
    append_ids(service, trained, 0, items, queries, stamps)
    codes = service.history(trained.ids.users[0]).codes
    n_sub = service.tables.query_codes.shape[1]
    assert codes.dtype == np.uint8 and codes.shape == (50, service.tables.code_width)
    assert np.array_equal(codes[:, :n_sub], service.tables.query_codes[queries])
    assert np.array_equal(codes[:, n_sub:], service.tables.item_codes[items].reshape(50, -1))


def test_bad_input_is_refused_and_nothing_is_stored(trained: Trained) -> None:
    service = ScoringService.load(trained.export)
    ids = trained.ids
    user = ids.users[0]
    item = ids.items[1]
    assert service.append(user, [{"item": item, "timestamp": 10}, Behaviour(item, 20, ids.queries[2])]) == 2
    with pytest.raises(UnknownItemError, match="'nope'"):
        service.append(user, [Behaviour(item, 30), Behaviour("nope", 31)])
    with pytest.raises(TimestampOrderError, match="non-decreasing") as order:
        service.append(user, [Behaviour(item, 40), Behaviour(item, 39)])
    assert order.value.status == 422
    with pytest.raises(TimestampOrderError, match="earlier than the latest stored") as stale:
        service.append(user, [Behaviour(item, 19)])
    assert stale.value.status == 409
    with pytest.raises(UnknownQueryError, match="never-seen"):
        service.append(user, [Behaviour(item, 50, "never-seen query")])
    with pytest.raises(ServingError, match="needs keys"):
        service.append(user, [{"item": item}])
    with pytest.raises(ServingError, match="integer"):
        service.append(user, [Behaviour(item, 1.5)])  # type: ignore[arg-type]
    with pytest.raises(ServingError, match="no behaviours"):
        service.append(user, [])
    with pytest.raises(ServingError, match="int64"):
        service.append_columns(user, [item], [None], [30.5])  # never truncated to 30
    with pytest.raises(ServingError, match="int64"):
        service.append_columns(user, [item], [None], [2**64])
    with pytest.raises(ServingError, match="string or None"):
        service.append_columns(user, [item], [7], [30])  # type: ignore[list-item]
    assert len(service.history(user)) == 2  # every refused request left the history as it was
    with pytest.raises(EmptyHistoryError, match="no behaviours yet"):  # a user seen nowhere yet
        service.score("not-a-user", item)
    assert len(service.history("not-a-user")) == 0 and service.user_info("not-a-user").length == 0
    with pytest.raises(EmptyHistoryError, match="no behaviours yet"):
        service.score(ids.users[1], item)
    for k in (0, -3, True):
        with pytest.raises(ServingError, match="k must"):
            service.score(user, item, k=k)
    with pytest.raises(UnknownItemError):
        service.score(user, "nope")
    with pytest.raises(ServingError, match="no candidate"):
        service.score_many(user, [])


def test_unknown_queries_may_be_treated_as_the_empty_query(trained: Trained) -> None:
    service = ScoringService.load(trained.export, unknown_queries="empty")
    ids = trained.ids
    service.append(
        ids.users[0], [Behaviour(ids.items[1], 5, "never-seen query"), Behaviour(ids.items[2], 6, "  ")]
    )
    assert service.history(ids.users[0]).queries.tolist() == [EMPTY_QUERY, EMPTY_QUERY]
    result = service.score(ids.users[0], ids.items[3], query="never-seen query")
    assert result.query is None
    assert result.probability == service.score(ids.users[0], ids.items[3]).probability


def test_memory_per_user_is_codes_plus_ids(trained: Trained) -> None:
    service = ScoringService.load(trained.export)
    per_behaviour = service.tables.code_width + 4 + 4 + 8
    n = 1000
    append_ids(service, trained, 0, *synthetic_history(trained, n, seed=5))
    assert service.memory_per_user() == n * per_behaviour  # one bulk append allocates exactly
    items, queries, stamps = synthetic_history(trained, n, seed=6)
    for a in range(0, n, 10):
        append_ids(service, trained, 1, items[a : a + 10], queries[a : a + 10], stamps[a : a + 10])
    info = service.user_info(trained.ids.users[1])
    assert info.length == n and info.used_bytes == n * per_behaviour
    assert info.used_bytes <= info.allocated_bytes <= 1.5 * info.used_bytes + 64 * per_behaviour
    assert service.stats()["users"] == 2


def test_concurrent_appends_and_scores(trained: Trained) -> None:
    service = ScoringService.load(trained.export)
    ids = trained.ids
    errors: list[BaseException] = []

    def work(user: int) -> None:
        try:
            items, queries, stamps = synthetic_history(trained, 200, seed=user)
            for a in range(0, 200, 20):
                append_ids(service, trained, user, items[a : a + 20], queries[a : a + 20], stamps[a : a + 20])
                service.score(ids.users[user], ids.items[1])
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [service.user_info(ids.users[u]).length for u in range(4)] == [200] * 4


def test_services_sharing_one_export_keep_the_trained_k(trained: Trained) -> None:
    export = load_export(trained.export)
    first, second = ScoringService(export), ScoringService(export)
    assert first.default_k == second.default_k == TOP_K


def test_scoring_leaves_the_loaded_ranker_unchanged(trained: Trained) -> None:
    """Serving skips the ranker's own GSU by an argument, not by rewriting the model it was given."""
    export = load_export(trained.export)
    config = export.ranker.config
    saved = dataclasses.replace(config)
    service = ScoringService(export)
    append_ids(service, trained, 0, *synthetic_history(trained, 60, seed=5))
    k = TOP_K + 3  # more than the ranker's own K: its ESU must still attend over all of them
    [result] = service.score_many(trained.ids.users[0], [trained.ids.items[1]], None, k)
    assert len(result.behaviours) == k
    assert export.ranker.config is config and config == saved and config.top_k == TOP_K


def test_the_exact_gsu_stores_no_codes(trained: Trained) -> None:
    service = ScoringService.load(trained.export)
    append_ids(service, trained, 0, *synthetic_history(trained, 50, seed=4))
    assert service.history(trained.ids.users[0]).codes.shape == (50, 0)
    [result] = service.score_many(trained.ids.users[0], [trained.ids.items[1]])
    assert result.selected_by == "exact" and all(b.adc_score is None for b in result.behaviours)


def test_an_unknown_gsu_mode_is_refused(trained: Trained) -> None:
    with pytest.raises(ValueError, match="gsu must be one of"):
        ScoringService.load(trained.export, gsu="hnsw")


OTHER_GSUS = [
    (model, recent, rerank, False)
    for model, recent in (("twin", 0), ("sim_soft", 0), ("seminar", 2), ("twin", TOP_K))
    for rerank in (None, RERANK, 0)
] + [
    (model, recent, rerank, True)
    for model, recent in (("twin", 0), ("seminar", 0), ("seminar", 2))
    for rerank in (None, RERANK, 0)
]


def exported(trained: Trained, ranker: Ranker, tmp_path: Path) -> Trained:
    """``trained`` with ``ranker`` (as it is, untrained) saved as its run and exported."""
    meta = {"model_class": "seminar.models.ranker.Ranker", "model_config": ranker.config.to_dict()}
    save_checkpoint(tmp_path / "run" / "best", ranker, {}, meta)
    return dataclasses.replace(
        trained,
        run=tmp_path / "run",
        export=export_run(trained.ds, tmp_path / "run", tmp_path / "export", PQ),
    )


@pytest.mark.parametrize(("model", "recent", "rerank", "gsu_recency"), OTHER_GSUS)
def test_other_inner_product_gsus_equal_the_reference(
    trained: Trained, tmp_path, model: str, recent: int, rerank: int | None, gsu_recency: bool
) -> None:
    """Other GSUs, models that keep their last ``recent`` behaviours beside the GSU's choice, and GSUs
    that add the ESU's recency bias (exact and PQ; the bias drawn large enough to change choices)."""
    config = RankerConfig(
        model=model, dim=16, heads=2, top_k=TOP_K, recent=recent, seed=1, gsu_recency=gsu_recency
    )
    ranker = Ranker(trained.tables, config)
    if gsu_recency:
        with torch.no_grad():
            ranker.recency.copy_(
                torch.randn(ranker.recency.shape, generator=torch.Generator().manual_seed(5)) * 3
            )
    other = exported(trained, ranker, tmp_path)
    gsu = "exact" if rerank is None else "pq"
    options = {} if rerank is None else {"rerank_factor": rerank}
    service = ScoringService.load(other.export, gsu=gsu, **options)
    for user in (0, 1):
        history = synthetic_history(other, 120, seed=10 + user)
        append_ids(service, other, user, *history)
        check_against_reference(service, other, user, history, np.arange(1, 6), EMPTY_QUERY, rerank=rerank)
        check_against_reference(service, other, user, history, np.arange(1, 6), 3, rerank=rerank)


def test_a_ranker_with_the_item_popularity_input_is_served_equal_to_the_reference(
    trained: Trained, tmp_path
) -> None:
    """The training counts travel in the export (feature tables and weights), and serving scores
    with them as the ranker does."""
    config = RankerConfig(model="seminar", dim=16, heads=2, top_k=TOP_K, seed=2, item_popularity=True)
    other = exported(trained, Ranker(trained.tables, config), tmp_path)
    service = ScoringService.load(other.export)
    assert service.ranker.popularity is not None
    torch.testing.assert_close(service.ranker.item_counts, trained.tables.item_counts)
    history = synthetic_history(other, 120, seed=21)
    append_ids(service, other, 0, *history)
    check_against_reference(service, other, 0, history, np.arange(1, 6), EMPTY_QUERY, rerank=None)
