"""PQ as the ranker's GSU: the factorised scores equal the GSU's own, ADC equals the table-lookup
reference, and with a shortlist covering the whole sequence the ranker's scores do not change."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from seminar.data.loader import EvalSamples, TrainSamples, WindowConfig
from seminar.data.schema import SeminarDataset
from seminar.errors import InvalidValue
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig
from seminar.models.search import BilinearSearch
from seminar.retrieval.gsu import (
    PQGsuConfig,
    PQSearch,
    attach_pq_gsu,
    detach_pq_gsu,
    encode_key_tables,
    fit_gsu_pq,
    gsu_key_tables,
)
from seminar.retrieval.kernels import ADCEngine, reference_adc_scores
from seminar.retrieval.pq import MultiModalPQ, PQConfig
from tests.data.helpers import synthetic_dataset

BILINEAR = ("seminar", "twin", "sim_soft")


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("gsu") / "d", users=30, items=200, mean_length=40)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    return FeatureTables.from_dataset(ds)


def perturbed_ranker(tables: FeatureTables, model: str, top_k: int = 6) -> Ranker:
    """A ranker whose G_j, gate and attention are far from their initial values (nothing trivial)."""
    ranker = Ranker(tables, RankerConfig(model=model, dim=16, heads=2, top_k=top_k, seed=3)).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in ranker.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=g))
    return ranker


def search_inputs(ranker: Ranker, ds: SeminarDataset, n: int = 6, start: int = 0):
    samples = TrainSamples(ds, WindowConfig(max_length=30, train_negatives=2))
    batch = samples.__getitems__(list(range(start, start + n)))
    items = torch.cat([batch["target_items"][:, None], batch["neg_items"]], dim=1)
    queries = torch.cat([batch["target_queries"][:, None], batch["neg_queries"]], dim=1)
    return ranker._search_inputs(batch, items, queries)


@pytest.mark.parametrize("model", BILINEAR)
def test_factorised_relevance_equals_the_gsu(tables: FeatureTables, ds: SeminarDataset, model: str) -> None:
    ranker = perturbed_ranker(tables, model)
    assert isinstance(ranker.search, BilinearSearch)
    with torch.no_grad():
        inputs = search_inputs(ranker, ds)
        direct = ranker.search.relevance(inputs)
        factorised = ranker.search.factorised_relevance(inputs)
    real = inputs.mask[:, None, :].expand_as(direct)
    assert torch.allclose(direct[real], factorised[real], rtol=1e-4, atol=1e-5)
    assert torch.isneginf(factorised[~real]).all()


def test_key_tables_cover_every_id(tables: FeatureTables) -> None:
    keys = gsu_key_tables(perturbed_ranker(tables, "seminar"))
    assert keys.query.shape == (tables.n_queries + 1, 16)
    assert keys.items.shape[0] == tables.n_items + 1 and keys.n_channels >= 2
    assert np.isfinite(keys.query).all() and np.isfinite(keys.items).all()


@pytest.mark.parametrize("layout", ["channels", "fused"])
def test_adc_relevance_equals_the_table_lookup_reference(
    tables: FeatureTables, ds: SeminarDataset, layout: str
) -> None:
    ranker = perturbed_ranker(tables, "seminar")
    keys = gsu_key_tables(ranker)
    pq = fit_gsu_pq(keys, PQGsuConfig(n_sub=4, n_centroids=16, n_iter=5, layout=layout))
    assert pq.config.n_channels == (1 if layout == "fused" else keys.n_channels)
    search = PQSearch(ranker.search, pq, keys, top_k=6, rerank_factor=0)
    with torch.no_grad():
        inputs = search_inputs(ranker, ds)
        approx = search.approximate(inputs)
        u = ranker.search.query_vectors(inputs)
    codes = search.codes(inputs.hist_queries, inputs.hist_items)  # B L M n_sub
    codebooks = torch.from_numpy(pq.codebooks)  # M n_sub C dsub
    for b in range(codes.shape[0]):
        for c in range(u.shape[1]):
            query = u[b, c].view(pq.config.n_sub, pq.config.dsub)
            lookup = torch.einsum("mnks,ns->mnk", codebooks, query)  # ADC tables, unit channel weights
            expected = reference_adc_scores(codes[b], lookup)
            real = inputs.mask[b]
            assert torch.allclose(approx[b, c, real], expected[real], rtol=1e-4, atol=1e-4)


def test_decoded_adc_equals_the_engines_reference_on_random_codes(
    tables: FeatureTables, ds: SeminarDataset
) -> None:
    """PQSearch scores ADC as <u, Σ_m decoded key>; on codes from random codebooks it equals the table
    look-ups of :class:`ADCEngine` (unit channel weights), and masked targets stay -inf."""
    ranker = perturbed_ranker(tables, "seminar")
    keys = gsu_key_tables(ranker)
    rng = np.random.default_rng(7)
    config = PQConfig(keys.n_channels, keys.dim, n_sub=4, n_centroids=32)
    books = rng.standard_normal((config.n_channels, config.n_sub, config.n_centroids, config.dsub))
    pq = MultiModalPQ(config, books.astype(np.float32))
    search = PQSearch(ranker.search, pq, keys, top_k=6, rerank_factor=0)
    inputs = search_inputs(ranker, ds)
    generator = torch.Generator().manual_seed(1)
    shape = inputs.hist_queries.shape
    inputs = replace(
        inputs,
        hist_queries=torch.randint(0, keys.query.shape[0], shape, generator=generator),
        hist_items=torch.randint(0, keys.items.shape[0], shape, generator=generator),
    )
    n_targets = inputs.target_fused.shape[1]
    u = torch.from_numpy(rng.standard_normal((shape[0], n_targets, keys.dim)).astype(np.float32))
    with torch.no_grad():
        approx = search.approximate(inputs, u).numpy()
    codes = search.codes(inputs.hist_queries, inputs.hist_items).numpy()  # B L M n_sub
    engine = ADCEngine(pq)
    for b in range(codes.shape[0]):
        expected = engine.scores(engine.queries(u[b].numpy()), codes[b])  # C L
        real = np.broadcast_to(inputs.target_mask[b].numpy(), expected.shape)
        np.testing.assert_allclose(approx[b][real], expected[real], rtol=1e-5, atol=1e-4)
        assert np.isneginf(approx[b][~real]).all()


def test_small_channel_tables_get_exact_codes(tables: FeatureTables) -> None:
    keys = gsu_key_tables(perturbed_ranker(tables, "twin"))
    n_real_queries = keys.query.shape[0] - 1
    config = PQGsuConfig(n_sub=2, n_centroids=max(16, n_real_queries), n_iter=5, layout="channels")
    pq = fit_gsu_pq(keys, config)
    decoded = pq.decode_channel(0, pq.encode_channel(0, keys.query[1:]))
    assert np.allclose(decoded, keys.query[1:], atol=1e-5)


@pytest.mark.parametrize("model", BILINEAR)
def test_full_shortlist_reproduces_exact_scores(
    tables: FeatureTables, ds: SeminarDataset, model: str
) -> None:
    ranker = perturbed_ranker(tables, model, top_k=5)
    batch = EvalSamples(ds, "test", "search", max_length=30).__getitems__(list(range(8)))
    exact = ranker.score_candidates(batch)
    attach_pq_gsu(ranker, PQGsuConfig(n_sub=2, n_centroids=16, rerank_factor=100, n_iter=5))
    assert isinstance(ranker.search, PQSearch)
    assert torch.allclose(ranker.score_candidates(batch), exact, rtol=1e-4, atol=1e-5)
    detach_pq_gsu(ranker)
    assert isinstance(ranker.search, BilinearSearch)


@pytest.mark.parametrize("model", BILINEAR)
def test_a_gsu_recency_ranker_keeps_its_bias_under_the_pq_gsu(
    tables: FeatureTables, ds: SeminarDataset, model: str
) -> None:
    """With a shortlist covering the sequence, the PQ GSU of a ``gsu_recency`` ranker selects as its
    exact GSU does, recency bias included (drawn large enough to change what is kept)."""
    ranker = perturbed_ranker(tables, model, top_k=5)
    ranker.config = replace(ranker.config, gsu_recency=True)
    with torch.no_grad():
        ranker.recency.copy_(torch.randn(ranker.recency.shape, generator=torch.Generator().manual_seed(2)))
        ranker.recency[:, :3] += 50.0  # the 7 behaviours nearest the target first
    batch = EvalSamples(ds, "test", "search", max_length=30).__getitems__(list(range(8)))
    exact = ranker.score_candidates(batch)
    ranker.config = replace(ranker.config, gsu_recency=False)
    plain = ranker.score_candidates(batch)
    ranker.config = replace(ranker.config, gsu_recency=True)
    assert not torch.allclose(plain, exact, rtol=1e-4, atol=1e-5)  # the bias changes the selection here
    attach_pq_gsu(ranker, PQGsuConfig(n_sub=2, n_centroids=16, rerank_factor=100, n_iter=5))
    assert ranker.uses_gsu_recency
    assert torch.allclose(ranker.score_candidates(batch), exact, rtol=1e-4, atol=1e-5)


def test_pq_gsu_without_rerank_changes_the_selection_but_scores_stay_finite(
    tables: FeatureTables, ds: SeminarDataset
) -> None:
    ranker = perturbed_ranker(tables, "seminar", top_k=5)
    batch = EvalSamples(ds, "test", "recommendation", max_length=30).__getitems__(list(range(8)))
    attach_pq_gsu(ranker, PQGsuConfig(n_sub=2, n_centroids=16, rerank_factor=0, n_iter=5))
    scores = ranker.score_candidates(batch)
    assert scores.shape == (8, ds.test_negatives.shape[1] + 1) and torch.isfinite(scores).all()


def test_pq_gsu_needs_an_inner_product_gsu(tables: FeatureTables) -> None:
    ranker = Ranker(tables, RankerConfig(model="eta", dim=16, heads=2))
    with pytest.raises(ValueError, match="inner product"):
        attach_pq_gsu(ranker)


def test_model_recall_on_a_trained_run(tables: FeatureTables, ds: SeminarDataset, tmp_path) -> None:
    from seminar.experiment import finetune
    from seminar.retrieval.model_recall import ModelRecallConfig, run_model_recall
    from seminar.train.trainer import TrainConfig

    run = tmp_path / "run"
    train = TrainConfig(epochs=1, max_length=30, batch_size=64, positions_per_user=2, progress=False)
    finetune(ds, run, RankerConfig(model="seminar", dim=16, heads=2, top_k=4), train, tables=tables)
    config = ModelRecallConfig(
        ks=(4, 8),
        methods=("lsh", "pq_paper_sdc", "pq_paper_adc", "pq_paper_adc_rr16"),
        min_length=20,
        max_users=5,
        negatives_per_user=2,
        progress=False,
    )
    results = run_model_recall(ds, run, config, out=tmp_path / "out", tables=tables)
    rows = {(r["method"], r["k"]): r for r in results["rows"]}
    assert results["users"] == 5 and results["history_length"]["min"] >= 20
    assert all(0.0 <= r["recall"] <= 1.0 and r["n"] == 5 * 3 for r in rows.values())
    # a shortlist of 16·K = 128 ≥ L behaviours re-ranked exactly is the exact top-K
    assert results["history_length"]["max"] <= 16 * 8
    assert rows[("pq_paper_adc_rr16", 8)]["recall"] == 1.0
    assert (tmp_path / "out" / "recall_table.md").read_text().count("pq_paper") == 3
    with pytest.raises(ValueError, match="no test user"):
        run_model_recall(ds, run, ModelRecallConfig(min_length=10_000, progress=False), tables=tables)


def test_model_recall_says_a_gsu_recency_run_is_measured_on_content_scores(
    tables: FeatureTables, ds: SeminarDataset, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    from seminar.experiment import finetune
    from seminar.retrieval.model_recall import ModelRecallConfig, run_model_recall
    from seminar.train.trainer import TrainConfig

    run = tmp_path / "run"
    train = TrainConfig(epochs=1, max_length=30, batch_size=64, positions_per_user=2, progress=False)
    config = RankerConfig(model="twin", dim=16, heads=2, top_k=4, gsu_recency=True)
    finetune(ds, run, config, train, tables=tables)
    recall = ModelRecallConfig(ks=(4,), methods=("lsh",), min_length=20, max_users=2, progress=False)
    with caplog.at_level("WARNING"):
        run_model_recall(ds, run, recall, tables=tables)
    assert "content scores alone" in caplog.text


@pytest.mark.parametrize("biased", [False, True])
def test_rerank_scores_the_shortlist_exactly_and_drops_the_rest(
    tables: FeatureTables, ds: SeminarDataset, biased: bool
) -> None:
    """The shortlist is the top R of ADC (plus the recency bias of a ``gsu_recency`` ranker, when
    given), re-scored exactly (plus the bias); the rest is dropped."""
    ranker = perturbed_ranker(tables, "seminar", top_k=2)
    keys = gsu_key_tables(ranker)
    pq = fit_gsu_pq(keys, PQGsuConfig(n_sub=2, n_centroids=16, n_iter=5))
    search = PQSearch(ranker.search, pq, keys, top_k=2, rerank_factor=3)  # shortlist R = 6 < L
    with torch.no_grad():
        inputs = search_inputs(ranker, ds, start=27)  # 3 to 30 real behaviours: most beyond R
        assert int(inputs.mask.sum(dim=1).max()) > 6
        bias = torch.randn(inputs.mask.shape, generator=torch.Generator().manual_seed(4))[:, None, :] * 3
        bias = bias if biased else None
        relevance = search.biased_relevance(inputs, bias)
        shift = 0.0 if bias is None else bias
        exact = (ranker.search.relevance(inputs) + shift).expand_as(relevance)
        approx = (search.approximate(inputs) + shift).expand_as(relevance)
        if not biased:
            assert torch.equal(relevance, search.relevance(inputs))
    kept = torch.isfinite(relevance)
    real = inputs.mask.sum(dim=1)[:, None].expand(-1, relevance.shape[1])
    assert torch.equal(kept.sum(dim=-1), real.clamp(max=6))
    assert torch.allclose(relevance[kept], exact[kept], rtol=1e-4, atol=1e-5)
    # the shortlist is the ADC top-R: no dropped real behaviour beats a kept one under ADC
    for row in zip(*torch.nonzero(kept.any(-1), as_tuple=True), strict=True):
        dropped = ~kept[row] & inputs.mask[row[0]]
        if dropped.any():
            assert approx[row][kept[row]].min() >= approx[row][dropped].max()


@pytest.mark.parametrize(
    ("dim", "expected"), [(16, 16), (32, 32), (48, 24), (64, 32), (20, 20), (7, 7), (66, 22)]
)
def test_default_sub_vectors_divide_the_key_dimension(dim: int, expected: int) -> None:
    assert PQGsuConfig().sub_vectors(dim) == expected
    assert dim % expected == 0
    assert PQGsuConfig(n_sub=4).sub_vectors(dim) == 4  # an explicit value is kept as given


def test_fused_codes_are_each_behaviours_fused_key_encoded(tables: FeatureTables, ds: SeminarDataset) -> None:
    """A fused quantizer codes a behaviour from its own key (the sum of its channels), decodes to that
    code's centroids, and has no per-id code tables."""
    ranker = perturbed_ranker(tables, "seminar")
    keys = gsu_key_tables(ranker)
    pq = fit_gsu_pq(keys, PQGsuConfig(n_sub=4, n_centroids=16, n_iter=5, layout="fused"))
    search = PQSearch(ranker.search, pq, keys, top_k=6, rerank_factor=0)
    inputs = search_inputs(ranker, ds)
    codes = search.codes(inputs.hist_queries, inputs.hist_items)  # B L 1 n_sub
    queries, items = inputs.hist_queries.numpy(), inputs.hist_items.numpy()
    channels = keys.behaviour_vectors(queries.reshape(-1), items.reshape(-1))  # [B·L, M, d]
    fused = channels.sum(axis=1).reshape(*queries.shape, keys.dim)  # the key the GSU scores
    assert codes.shape == (*inputs.hist_items.shape, 1, 4)
    assert np.array_equal(
        codes[..., 0, :].numpy(),
        pq.encode_channel(0, fused.reshape(-1, keys.dim)).reshape(*fused.shape[:-1], 4),
    )
    decoded = search.decoded_keys(inputs.hist_queries, inputs.hist_items).numpy()
    assert np.allclose(
        decoded, pq.decode_channel(0, codes[..., 0, :].reshape(-1, 4).numpy()).reshape(fused.shape)
    )
    with pytest.raises(ValueError, match="per-id codes"):
        encode_key_tables(pq, keys)
    with pytest.raises(InvalidValue, match="layout"):
        PQGsuConfig(layout="rows")
