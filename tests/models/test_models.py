"""Model invariants: gradients reach every parameter, content survives, padding is ignored, losses have the
right sign and temperature, fast paths equal their references."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.data.loader import EvalSamples, TrainSamples, WindowConfig
from seminar.data.schema import SeminarDataset
from seminar.models.attention import TargetAttention
from seminar.models.features import FeatureTables
from seminar.models.infonce import clip_allowed, shared_exp_clip_loss, shifted_clip_mask
from seminar.models.psu import PretrainConfig, PretrainingSearchUnit, chunk, clip_loss, clip_mask, pair_bce
from seminar.models.ranker import MODELS, Ranker, RankerConfig, consistency_loss
from seminar.models.search import EtaSearch, QinSearch, pack_sign_bits, popcount64, select_top_k
from tests.data.helpers import synthetic_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SeminarDataset:
    return synthetic_dataset(tmp_path_factory.mktemp("models") / "d", users=40, items=300, mean_length=30)


@pytest.fixture(scope="module")
def tables(ds: SeminarDataset) -> FeatureTables:
    """The dataset's tables plus a random user profile (synthetic data has none): up to 3 of 7 values
    per user, the last user with none, so every model test also runs the user-feature path."""
    generator = torch.Generator().manual_seed(0)
    profile = torch.randint(0, 8, (ds.n_users, 3), generator=generator)
    profile[-1] = 0
    return replace(FeatureTables.from_dataset(ds), n_user_attributes=7, user_attributes=profile)


def train_batch(ds: SeminarDataset, length: int = 24, n: int = 32) -> dict[str, torch.Tensor]:
    return TrainSamples(ds, WindowConfig(max_length=length, train_negatives=3)).__getitems__(list(range(n)))


@pytest.mark.parametrize("model", MODELS)
def test_every_ranker_parameter_gets_a_gradient(
    ds: SeminarDataset, tables: FeatureTables, model: str
) -> None:
    # BCE: a softmax over each target's candidates is blind to the head's last bias (shift-invariant)
    ranker = Ranker(tables, RankerConfig(model=model, dim=16, heads=2, top_k=8, loss="bce"))
    loss, _ = ranker(train_batch(ds))
    loss.backward()
    missing = [n for n, p in ranker.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_user_profile_enters_the_user_vector(tables: FeatureTables) -> None:
    ranker = Ranker(tables, RankerConfig(dim=16, heads=2))
    assert ranker.user_features is not None
    users = torch.arange(tables.n_users)
    with torch.no_grad():
        got = ranker.user_vector(users) - ranker.users(users)
    for user in range(tables.n_users):
        ids = [int(v) for v in tables.user_attributes[user] if v > 0]
        want = ranker.user_features.weight[ids].mean(dim=0) if ids else torch.zeros(16)
        torch.testing.assert_close(got[user], want.detach(), rtol=1e-5, atol=1e-6)
    plain = Ranker(tables, RankerConfig(dim=16, heads=2, user_features=False))
    assert plain.user_features is None
    assert not any(name.startswith("user_features") for name in plain.state_dict())
    # the profile module is made last: every other module starts from the same seeded weights
    with_profile = {k: v for k, v in ranker.state_dict().items() if not k.startswith("user_features")}
    assert with_profile.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in with_profile.items())


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"top_k": 0}, "top_k"),
        ({"heads": 0}, "heads"),
        ({"dim": 0}, "dim"),
        ({"fusion_lambda": 5.0}, "fusion_lambda"),
        ({"gsu_consistency": float("nan")}, "gsu_consistency"),
        ({"layers": 0}, "layers"),
        ({"gate": "bogus"}, "gate"),
        ({"eta_bits": 32}, "eta_bits"),
        ({"consistency_samples": -1}, "consistency_samples"),
        ({"hidden": [128, 0]}, "hidden"),
        ({"recent": 60}, "recent"),
    ],
)
def test_ranker_config_refuses_values_no_model_could_use(bad: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        RankerConfig(**bad)


def test_an_unknown_model_name_is_refused_when_built(tables: FeatureTables) -> None:
    from seminar.models.registry import build_ranker

    with pytest.raises(ValueError, match="unknown model 'bogus'"):
        build_ranker(tables, RankerConfig(model="bogus"))


def test_ranker_config_round_trips_and_reads_legacy_runs_without_user_features() -> None:
    config = RankerConfig(model="twin", top_k=7)
    assert RankerConfig.from_dict(config.to_dict()) == config
    assert RankerConfig.from_dict({**config.to_dict(), "unknown_key": 1}) == config
    legacy = {k: v for k, v in config.to_dict().items() if k != "user_features"}
    assert RankerConfig.from_dict(legacy).user_features is False


def test_every_psu_parameter_gets_a_gradient(ds: SeminarDataset, tables: FeatureTables) -> None:
    psu = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2))
    loss, parts = psu(train_batch(ds))
    loss.backward()
    assert set(parts) == {"next_pair", "align", "relevance"}
    assert not [n for n, p in psu.named_parameters() if p.grad is None]


def test_content_vectors_survive_construction_and_restore(ds: SeminarDataset, tables: FeatureTables) -> None:
    expected = torch.from_numpy(np.asarray(ds.vectors["item_text"], dtype=np.float32))
    psu = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2))
    ranker = Ranker(tables, RankerConfig(dim=16, heads=2))
    ranker.load_pretrained(psu.embedding.state_dict())
    for module in (psu.embedding, ranker.embedding):
        assert torch.equal(module.item_text_content, expected)
    assert torch.equal(ranker.embedding.item_ids.weight, psu.embedding.item_ids.weight)
    assert not any("content" in name for name, _ in ranker.named_parameters())


def test_twin_gsu_shares_the_esu_parameters(tables: FeatureTables, ds: SeminarDataset) -> None:
    ranker = Ranker(tables, RankerConfig(model="twin", dim=16, heads=2, top_k=4))
    assert ranker.search.esu is ranker.esu
    names = [n for n, _ in ranker.named_parameters()]
    assert sum(n.endswith("esu.key.weight") for n in names) == 1  # registered once
    with torch.no_grad():
        ranker.esu.key.weight.mul_(3.0)  # changing the ESU changes the GSU's scores
    inputs = ranker._search_inputs(
        train_batch(ds, n=4),
        train_batch(ds, n=4)["target_items"][:, None],
        train_batch(ds, n=4)["target_queries"][:, None],
    )
    expected = ranker.esu.relevance(inputs.target_fused, inputs.hist_fused, inputs.mask)
    assert torch.equal(ranker.search.relevance(inputs), expected)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 3),
    length=st.integers(1, 20),
    k=st.integers(1, 25),
    seed=st.integers(0, 10_000),
)
def test_top_k_never_returns_padding(b: int, c: int, length: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    relevance = torch.randn(b, c, length, generator=g)
    real = torch.randint(0, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None, :] >= (length - real)[:, None]  # left padding
    indices, valid = select_top_k(relevance, mask, k)
    assert indices.shape[-1] == min(k, length)
    for bi in range(b):
        assert torch.all(mask[bi][indices[bi][valid[bi]]])
        assert int(valid[bi, 0].sum()) == min(k, int(real[bi]))
        chosen = indices[bi][valid[bi]].view(c, -1)
        best = relevance[bi].masked_fill(~mask[bi], float("-inf")).topk(chosen.shape[-1], dim=-1).indices
        assert torch.equal(chosen.sort(-1).values, best.sort(-1).values)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 4),
    length=st.integers(1, 12),
    heads=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_attention_fast_path_equals_reference_and_ignores_padding(
    b: int, c: int, length: int, heads: int, seed: int
) -> None:
    torch.manual_seed(seed)
    att = TargetAttention(8, heads)
    target, keys = torch.randn(b, c, 8), torch.randn(b, length, 8)
    mask = torch.rand(b, length) > 0.3
    out = att(target, keys, mask)
    ref_logits, ref_out = att.reference(target, keys, mask)
    torch.testing.assert_close(att.logits(target, keys, mask), ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    # the GSU's score: the heads' mean logit, per target mask too
    per_target = torch.rand(b, c, length) > 0.3
    unmasked = att.reference(target, keys, torch.ones_like(mask))[0]
    for m in (mask, per_target):
        heads_mask = m[:, None, None, :] if m.dim() == 2 else m[:, :, None, :]
        expected = unmasked.masked_fill(~heads_mask, float("-inf"))
        torch.testing.assert_close(att.relevance(target, keys, m), expected.mean(dim=2), rtol=1e-5, atol=1e-5)
    changed = keys.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    torch.testing.assert_close(att(target, changed, mask), out, rtol=1e-5, atol=1e-5)
    assert torch.all(out[~mask.any(-1)] == 0)  # a sequence with no real behaviour gives zeros, not NaN


def test_embedding_unique_path_equals_direct(tables: FeatureTables, ds: SeminarDataset) -> None:
    ranker = Ranker(tables, RankerConfig(dim=16, heads=2))
    batch = train_batch(ds)
    channels, gamma, fused = ranker.embedding.pairs(batch["hist_queries"], batch["hist_items"])
    direct = ranker.embedding(batch["hist_queries"], batch["hist_items"])
    torch.testing.assert_close(channels, direct)
    torch.testing.assert_close(gamma, ranker.embedding.weights(direct))
    torch.testing.assert_close(fused, ranker.embedding.fuse(direct, gamma))
    projections = torch.randn(direct.shape[-2], 16, 16)
    pair = ranker.embedding.encode(batch["hist_queries"], batch["hist_items"])
    expected = (torch.einsum("blmd,mde->blme", direct, projections) * gamma.unsqueeze(-1)).sum(-2)
    torch.testing.assert_close(pair.projected(projections), expected, rtol=1e-4, atol=1e-5)
    item_w = gamma[..., 1:] / gamma[..., 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(pair.item(), (direct[..., 1:, :] * item_w.unsqueeze(-1)).sum(-2))
    torch.testing.assert_close(gamma.sum(-1), torch.ones_like(gamma[..., 0]))
    assert torch.allclose(gamma[..., 0], torch.tensor(0.5))  # λ


def test_clip_loss_sign_and_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(3, 16, 32, generator=g), dim=-1)
    valid = torch.ones(3, 16, dtype=torch.bool)
    aligned = clip_loss(a, a, valid, 0.07)
    shuffled = clip_loss(a, a[:, torch.randperm(16, generator=g)], valid, 0.07)
    assert aligned < 0.05 < np.log(16) * 0.8 < shuffled
    assert clip_loss(a, a, valid, 0.05) < clip_loss(a, a, valid, 0.5)  # temperature divides
    padded = valid.clone()
    padded[:, :4] = False
    noisy = a.clone()
    noisy[:, :4] = torch.randn(3, 4, 32, generator=g)  # padding content must not matter
    assert torch.isclose(clip_loss(a, noisy, padded, 0.07), clip_loss(a, a, padded, 0.07))


def reference_clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain form: both directions' full log-softmax, padded anchors' rows zeroed after -inf masking."""
    logits = torch.einsum("nsd,ntd->nst", a, b) / temperature
    allowed = valid[:, :, None] & valid[:, None, :]
    if exclude is not None:
        allowed = allowed & ~(exclude & ~torch.eye(a.shape[1], dtype=torch.bool))
    logits = logits.masked_fill(~allowed, float("-inf"))
    diag = torch.arange(a.shape[1])
    anchors = valid[:, :, None]
    a_to_b = torch.where(anchors, logits, torch.zeros_like(logits))
    b_to_a = torch.where(anchors, logits.transpose(1, 2), torch.zeros_like(logits))
    rows = -torch.log_softmax(a_to_b, dim=2)[:, diag, diag]
    cols = -torch.log_softmax(b_to_a, dim=2)[:, diag, diag]
    return ((rows + cols) * valid).sum() / (2 * valid.sum().clamp_min(1))


@settings(max_examples=60, deadline=None)
@given(
    groups=st.integers(1, 4),
    size=st.integers(1, 12),
    padded=st.integers(0, 12),
    repeats=st.booleans(),
    temperature=st.sampled_from([1.0, 0.1, 0.07, 0.03, 0.02]),  # 0.02: the shared form's fallback
    zero_padding=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_clip_loss_forms_equal_the_plain_form_with_their_gradients(
    groups: int, size: int, padded: int, repeats: bool, temperature: float, zero_padding: bool, seed: int
) -> None:
    """clip_loss (its own mask or a shared one) and shared_exp_clip_loss (its own shifted mask or a
    shared one) against both directions' full log-softmax, values and gradients."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(size)[None].expand(groups, -1) >= min(padded, size - 1)  # >= 1 real per group
    unit = torch.nn.functional.normalize(torch.randn(2, groups, size, 8, generator=g), dim=-1)
    if zero_padding:  # F.normalize of a padded (zero) channel is zero
        unit = unit * valid[None, :, :, None]
    # near-equal pairs make the own logit the largest, 1 / temperature: the shift's bound is met
    b = torch.where(torch.rand(groups, size, 1, generator=g) < 0.3, unit[0], unit[1])
    a, b = unit[0].clone().requires_grad_(), b.clone().requires_grad_()
    items = torch.randint(0, max(2, size // 2) if repeats else 10**6, (groups, size), generator=g)
    exclude = items[:, :, None] == items[:, None, :]
    allowed = clip_allowed(valid, exclude)
    plain = reference_clip_loss(a, b, valid, temperature, exclude)
    plain_grads = torch.autograd.grad(plain, (a, b))
    forms = [
        clip_loss(a, b, valid, temperature, exclude),
        clip_loss(a, b, valid, temperature, mask=clip_mask(valid, exclude)),
        shared_exp_clip_loss(a, b, valid, temperature, allowed),
        shared_exp_clip_loss(a, b, valid, temperature, allowed, shifted_clip_mask(allowed, temperature)),
    ]
    for loss in forms:
        torch.testing.assert_close(loss, plain)
        for grad, plain_grad in zip(torch.autograd.grad(loss, (a, b)), plain_grads, strict=True):
            assert torch.isfinite(grad).all()
            torch.testing.assert_close(grad, plain_grad)


def test_shared_exp_clip_loss_refuses_long_vectors_and_a_second_backward() -> None:
    valid = torch.ones(1, 4, dtype=torch.bool)
    a = torch.nn.functional.normalize(torch.randn(1, 4, 8), dim=-1).requires_grad_()
    with pytest.raises(ValueError, match="norm <= 1"):
        shared_exp_clip_loss(a, 2 * a, valid, 0.1, clip_allowed(valid))
    loss = shared_exp_clip_loss(a, a, valid, 0.1, clip_allowed(valid))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


def test_alignment_loss_is_the_plain_form_over_every_channel_pair(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    psu = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align_chunks=2))
    batch = train_batch(ds, n=8)
    channels = psu.embedding.encode(batch["hist_queries"], batch["hist_items"]).channels()
    loss = psu.align_loss(batch, channels)
    unit = chunk(torch.nn.functional.normalize(channels[:, :, 1:].float(), dim=-1), 2)
    valid = chunk(batch["mask"], 2)
    items = chunk(batch["hist_items"], 2)
    plain = torch.stack(
        [
            reference_clip_loss(
                unit[:, :, i], unit[:, :, j], valid, 0.07, items[:, :, None] == items[:, None, :]
            )
            for i, j in itertools.combinations(range(unit.shape[2]), 2)
        ]
    ).mean()
    torch.testing.assert_close(loss, plain)


def test_pair_and_consistency_losses_on_known_cases() -> None:
    assert pair_bce(torch.full((8,), 10.0), torch.full((8,), -10.0)) < 1e-3
    assert pair_bce(torch.full((8,), -10.0), torch.full((8,), 10.0)) > 5
    valid = torch.ones(2, 3, 5, dtype=torch.bool)
    logits = torch.randn(2, 3, 5)
    assert consistency_loss(logits, torch.softmax(logits, -1), valid) < 1e-6
    assert consistency_loss(logits, torch.softmax(-5 * logits, -1), valid) > 0.1


def test_next_pair_and_relevance_learn_a_learnable_signal(ds: SeminarDataset, tables: FeatureTables) -> None:
    """A constructed case: one fixed batch; both supervised PSU losses must fall well below chance."""
    torch.manual_seed(0)
    psu = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align=False))
    batch = train_batch(ds, n=32)
    optimizer = torch.optim.Adam(psu.parameters(), lr=1e-2)
    _, start = psu(batch)
    for _ in range(60):
        loss, parts = psu(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert start["next_pair"] > 1.2 and parts["next_pair"] < 0.3 * start["next_pair"]
    assert parts["relevance"] < 0.5 * start["relevance"]


def test_popcount_and_packed_hamming_match_reference() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-(2**62), 2**62, (500,), generator=g) * 2 + torch.randint(0, 2, (500,), generator=g)
    expected = torch.tensor([bin(v & (2**64 - 1)).count("1") for v in x.tolist()])
    assert torch.equal(popcount64(x), expected)
    a, b = torch.randn(20, 128, generator=g), torch.randn(20, 128, generator=g)
    packed = popcount64(pack_sign_bits(a) ^ pack_sign_bits(b)).sum(-1)
    assert torch.equal(packed, ((a > 0) != (b > 0)).sum(-1))
    with pytest.raises(ValueError, match="multiple of 64"):
        EtaSearch(8, n_bits=10)


def test_qin_keeps_only_query_stage_candidates(tables: FeatureTables, ds: SeminarDataset) -> None:
    ranker = Ranker(tables, RankerConfig(model="qin", dim=16, heads=2, top_k=3, qin_first_stage=5))
    batch = train_batch(ds, n=8)
    inputs = ranker._search_inputs(batch, batch["target_items"][:, None], batch["target_queries"][:, None])
    relevance = ranker.search.relevance(inputs)
    assert isinstance(ranker.search, QinSearch)
    finite = torch.isfinite(relevance)
    assert torch.all(finite.sum(-1) <= 5)


def test_scores_for_eval_batches(ds: SeminarDataset, tables: FeatureTables) -> None:
    ranker = Ranker(tables, RankerConfig(dim=16, heads=2, top_k=8)).eval()
    batch = EvalSamples(ds, "test", "pair", max_length=24).__getitems__([0, 1, 2])
    scores = ranker.score_candidates(batch)
    assert scores.shape == (3, ds.test_negatives.shape[1] + 1) and torch.isfinite(scores).all()


@pytest.mark.parametrize("model", MODELS)
def test_keeping_every_behaviour_skips_the_gsu_and_scores_the_same(
    ds: SeminarDataset, tables: FeatureTables, model: str
) -> None:
    """top_k ≥ L keeps all L without scoring them; it must equal the GSU path that selects all L real
    behaviours of a longer, front-padded window."""
    batch = EvalSamples(ds, "test", "pair", max_length=12).__getitems__([0, 1, 2, 3])
    length, pad = batch["mask"].shape[1], 5
    padded = dict(batch)
    for name, value in batch.items():
        if name.startswith("hist_") or name == "mask":
            padded[name] = torch.cat([torch.zeros_like(value[:, :pad]), value], dim=1)
    ranker = Ranker(tables, RankerConfig(model=model, dim=16, heads=2, top_k=length)).eval()
    through_gsu = ranker.score_candidates(padded)  # L + 5 > top_k: the GSU picks the L real ones

    def no_gsu(*args, **kwargs):
        raise AssertionError("the GSU scored a window it keeps whole")

    ranker.search.relevance = no_gsu
    skipped = ranker.score_candidates(batch)
    torch.testing.assert_close(skipped, through_gsu, rtol=1e-4, atol=1e-5)


def test_unknown_model_is_explained(tables: FeatureTables) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        Ranker(tables, RankerConfig(model="bert4rec"))


def test_psu_needs_a_loss(tables: FeatureTables) -> None:
    with pytest.raises(ValueError, match="at least one"):
        PretrainingSearchUnit(tables, PretrainConfig(next_pair=False, align=False, relevance=False))


def test_features_from_disk(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path / "d", users=10, items=100, mean_length=10)
    tables = FeatureTables.from_dataset(ds)
    assert tables.item_category.shape == (ds.n_items + 1,) and int(tables.item_category[1:].min()) > 0


def test_construction_is_seeded_and_leaves_the_global_rng_alone(tables: FeatureTables) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = Ranker(tables, RankerConfig(dim=16, heads=2, seed=7))
    PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, seed=7))
    assert torch.equal(torch.rand(3), before)
    second = Ranker(tables, RankerConfig(dim=16, heads=2, seed=7))
    assert torch.equal(first.embedding.item_ids.weight, second.embedding.item_ids.weight)


def test_fused_at_equals_gathering_the_fused_history(ds: SeminarDataset, tables: FeatureTables) -> None:
    ranker = Ranker(tables, RankerConfig(dim=16, heads=2))
    batch = train_batch(ds, n=6)
    history = ranker.embedding.encode(batch["hist_queries"], batch["hist_items"])
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, batch["hist_items"].shape[1], (6, 3, 5), generator=generator)
    full = history.fused()  # B L d
    expected = torch.stack([full[b, positions[b].reshape(-1)].view(3, 5, -1) for b in range(6)])
    assert torch.allclose(history.fused_at(positions), expected, atol=1e-6)


def test_seminar_kept_logits_equal_the_full_gsu_gathered(ds: SeminarDataset, tables: FeatureTables) -> None:
    ranker = Ranker(tables, RankerConfig(model="seminar", dim=16, heads=2, top_k=5))
    with torch.no_grad():
        ranker.search.projections.add_(0.2 * torch.randn(ranker.search.projections.shape))
    batch = train_batch(ds, n=6)
    items = torch.cat([batch["target_items"][:, None], batch["neg_items"]], dim=1)
    queries = torch.cat([batch["target_queries"][:, None], batch["neg_queries"]], dim=1)
    inputs = ranker._search_inputs(batch, items, queries)
    full = ranker.search.relevance(inputs)
    indices, valid = select_top_k(full.detach(), inputs.mask, 5)
    kept = ranker.search.logits_at(inputs, indices)
    assert torch.allclose(kept[valid], torch.gather(full, 2, indices)[valid], rtol=1e-4, atol=1e-6)
    tables = ranker.search.key_tables(inputs.history)  # the training step's shared, projected-once keys
    assert torch.allclose(ranker.search.relevance(inputs, tables), full, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ranker.search.logits_at(inputs, indices, tables), kept, rtol=1e-5, atol=1e-6)
    # both ways to the kept logits (each target's keys gathered, or the window scored and gathered)
    # give the same values and the same gradients
    grads = []
    for dense_ratio in (0, 10_000):
        ranker.zero_grad(set_to_none=True)
        logits = ranker.search.logits_at(inputs, indices, dense_ratio=dense_ratio)
        assert torch.allclose(logits, kept, rtol=1e-5, atol=1e-6)
        logits.square().sum().backward(retain_graph=True)  # inputs embedded once for both
        grads.append(ranker.search.projections.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model", ["sim_soft", "eta", "twin", "qin", "seminar"])
def test_gsu_recency_adds_the_head_averaged_esu_bias_to_the_gsu_scores(
    ds: SeminarDataset, tables: FeatureTables, model: str
) -> None:
    """With a zero bias the selection is the content GSU's; a large bias on the nearest buckets makes
    the kept behaviours the most recent ones; in both cases it equals relevance + mean bias, top-K."""
    batch = EvalSamples(ds, "test", "pair", max_length=24).__getitems__([0, 1, 2, 3])
    # QIN's first stage keeps the whole window here (its first stage under the bias: the next test)
    config = RankerConfig(model=model, dim=16, heads=2, top_k=4, qin_first_stage=24)
    plain = Ranker(tables, config).eval()
    biased = Ranker(tables, replace(config, gsu_recency=True)).eval()
    assert biased.uses_gsu_recency and not plain.uses_gsu_recency
    items, queries = batch["cand_items"], batch["cand_queries"]
    inputs = plain._search_inputs(batch, items, queries)
    with torch.no_grad():
        kept_plain, _ = plain._select(inputs, None)
        kept_zero, _ = biased._select(inputs, None)
        assert torch.equal(kept_plain, kept_zero)
        biased.recency.zero_()
        biased.recency[:, :3] = 1e4  # buckets 0-2: the 7 behaviours nearest the target
        kept, valid = biased._select(inputs, None)
        relevance = biased.search.relevance(inputs)
        length = batch["mask"].shape[1]
        distance = length - 1 - torch.arange(length)
        bucket = torch.log2(distance.float() + 1).long()
        reference = relevance + biased.recency.mean(0)[bucket]
        expected, _ = select_top_k(reference, inputs.target_mask, 4)
        # the bias is added in place to a product formed for the call, never to a shared tensor
        bias = biased._gsu_recency_bias(inputs, None, None)
        torch.testing.assert_close(biased.search.biased_relevance(inputs, bias), reference)
        assert torch.equal(biased.search.relevance(inputs), relevance)
    assert torch.equal(kept, expected)
    real = kept[valid]
    assert (real >= length - 7).all()  # every kept real behaviour is among the 7 most recent


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 5),
    length=st.integers(1, 70),
    how=st.sampled_from(["window", "ends", "shared ends", "distance"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_gsu_recency_bias_equals_the_table_at_each_slots_bucket(
    tables: FeatureTables, b: int, c: int, length: int, how: str, seed: int
) -> None:
    """The bias the GSU adds (computed per distance, then broadcast or slid) is the head-averaged table
    at floor(log2(distance + 1)) of every (target, slot): the whole window, per-target ends (the
    same in every sequence, as training windows have them, or not), or serving's per-slot distances."""
    from seminar.models.ranker import RECENCY_BUCKETS
    from seminar.models.search import SearchInputs

    ranker = Ranker(tables, RankerConfig(model="twin", dim=8, heads=2, gsu_recency=True))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ranker.recency.copy_(torch.randn(ranker.recency.shape, generator=g))
    empty = torch.zeros((b, c), dtype=torch.long)
    inputs = SearchInputs(None, empty, None, None, None, torch.ones((b, length), dtype=torch.bool), None)
    positions = torch.arange(length)
    ends = distance = None
    if how == "window":
        back = (length - 1 - positions).expand(b, c, -1)
    elif how in ("ends", "shared ends"):
        ends = torch.randint(0, length + 1, (1 if how == "shared ends" else b, c), generator=g).expand(b, c)
        back = ends[:, :, None] - 1 - positions
    else:
        distance = torch.randint(-2, 40_000, (b, length), generator=g)
        back = distance[:, None, :].expand(b, c, -1)
    bucket = torch.tensor(
        [min(int(np.log2(max(d, 0) + 1)), RECENCY_BUCKETS - 1) for d in back.reshape(-1).tolist()]
    ).view(b, c, length)
    with torch.no_grad():
        got = ranker._gsu_recency_bias(inputs, ends, distance)
        expected = ranker.recency.mean(dim=0)[bucket]
    assert got.shape == (b, c, length) and torch.equal(got, expected)


def test_qin_with_gsu_recency_keeps_its_first_stage_by_the_query(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    """The bias reorders QIN's second stage only: however large, it keeps nothing outside the K1
    behaviours the target query chose."""
    batch = EvalSamples(ds, "test", "search", max_length=24).__getitems__([0, 1, 2, 3])
    ranker = Ranker(tables, RankerConfig(model="qin", dim=16, heads=2, top_k=4, gsu_recency=True)).eval()
    assert ranker.uses_gsu_recency
    inputs = ranker._search_inputs(batch, batch["cand_items"], batch["cand_queries"])
    with torch.no_grad():
        ranker.recency.zero_()
        ranker.recency[:, :3] = 1e4
        kept, valid = ranker._select(inputs, None)
        query_sim = torch.einsum("bcd,bld->bcl", inputs.target.query(), inputs.history.item())
        stage_one, _ = select_top_k(query_sim, inputs.target_mask, 8)  # K1 = 2K
    first = torch.zeros_like(query_sim, dtype=torch.bool).scatter_(2, stage_one, True)
    assert torch.gather(first, 2, kept)[valid].all()


def test_gsu_recency_on_a_gsu_without_content_scores_is_said_to_change_nothing(
    tables: FeatureTables, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        ranker = Ranker(tables, RankerConfig(model="sim_hard", dim=16, heads=2, gsu_recency=True))
    assert not ranker.uses_gsu_recency and "gsu_recency changes nothing" in caplog.text


@settings(max_examples=40, deadline=None)
@given(
    lead=st.tuples(st.integers(1, 3), st.integers(1, 4)),
    length=st.integers(1, 60),
    n=st.integers(0, 20),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_sampled_positions_are_distinct_allowed_and_as_many_as_possible(lead, length, n, share, seed) -> None:
    from seminar.models.search import sample_allowed

    g = torch.Generator().manual_seed(seed)
    allowed = torch.rand((*lead, length), generator=g) < share
    torch.manual_seed(seed)
    positions, valid = sample_allowed(allowed, n)
    m = min(n, length)
    assert positions.shape == valid.shape == (*lead, m)
    if m == 0:
        return
    flat_p, flat_v, flat_a = positions.reshape(-1, m), valid.reshape(-1, m), allowed.reshape(-1, length)
    for p, v, a in zip(flat_p, flat_v, flat_a, strict=True):
        real = p[v].tolist()
        assert len(set(real)) == len(real) and all(a[i] for i in real)
        assert len(real) == min(m, int(a.sum()))


def test_sampled_positions_are_uniform_over_the_allowed_ones() -> None:
    """Every allowed position is drawn about equally often (the fast path and the few-allowed path)."""
    from seminar.models.search import sample_allowed

    torch.manual_seed(0)
    for allowed_count in (12, 4):  # 12 of 30: draws suffice; 4 of 30 with n = 3: many rows fall back
        allowed = torch.zeros((20_000, 30), dtype=torch.bool)
        allowed[:, torch.arange(allowed_count) * 2] = True
        positions, valid = sample_allowed(allowed, 3)
        assert bool(valid.all())
        counts = torch.bincount(positions.reshape(-1), minlength=30).float()
        expected = 20_000 * 3 / allowed_count
        assert counts[~allowed[0]].sum() == 0
        assert torch.all((counts[allowed[0]] - expected).abs() < 0.05 * expected), counts


def test_alignment_contrasts_only_the_latest_align_window_behaviours(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    """A window up to ``align_window`` long is aligned whole (as before the option); a longer one
    only over its latest ``align_window`` behaviours: what lies before them does not change the loss."""
    batch = train_batch(ds, length=24, n=8)
    # every slot a real and distinct item, so that the early ones take part if aligned at all
    batch["mask"] = torch.ones_like(batch["mask"])
    batch["hist_items"] = torch.arange(1, 25).expand(8, -1).clone()
    whole = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align_window=24)).eval()
    longer = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align_window=10**6)).eval()
    latest = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align_window=12)).eval()
    with torch.no_grad():
        channels = whole.embedding.encode(batch["hist_queries"], batch["hist_items"]).channels()
        assert torch.equal(whole.align_loss(batch, channels), longer.align_loss(batch, channels))
        changed = channels.clone()
        changed[:, :12] = torch.randn(changed[:, :12].shape)
        assert not torch.equal(whole.align_loss(batch, changed), whole.align_loss(batch, channels))
        assert torch.equal(latest.align_loss(batch, changed), latest.align_loss(batch, channels))


def test_the_psu_materialises_only_the_aligned_behaviours_with_the_same_loss_and_gradients(
    ds: SeminarDataset, tables: FeatureTables
) -> None:
    """The PSU gathers channels for its latest ``align_window`` behaviours only: the loss and every
    gradient equal aligning the channels of the whole window (which uses only those)."""
    batch = train_batch(ds, length=24, n=8)
    psu = PretrainingSearchUnit(tables, PretrainConfig(dim=16, heads=2, align_window=10, align_chunks=2))
    params = [p for p in psu.parameters() if p.requires_grad]
    torch.manual_seed(0)
    loss, parts = psu(batch)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    history = psu.embedding.encode(batch["hist_queries"], batch["hist_items"])
    torch.manual_seed(0)
    whole = psu.align_loss(batch, history.channels())  # every slot's channels
    assert torch.equal(parts["align"], whole.detach())
    rest = psu.next_pair_loss(batch, history.fused()) * psu.config.next_pair_weight
    rest = rest + psu.relevance_loss(batch, history) * psu.config.relevance_weight
    expected = torch.autograd.grad(rest + psu.config.align_weight * whole, params, allow_unused=True)
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)  # the sum in another order


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 6),
    width=st.integers(1, 40),
    length=st.integers(1, 40),
    shared=st.booleans(),  # every sequence's targets end alike (training windows) or not
    seed=st.integers(0, 2**31 - 1),
)
def test_the_band_mask_is_each_targets_real_behaviours_in_its_window(
    b: int, c: int, width: int, length: int, shared: bool, seed: int
) -> None:
    from seminar.models.search import band_mask

    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((b, width), generator=g) < 0.7
    ends = torch.randint(0, width + 1, (1 if shared else b, c), generator=g).expand(b, c)
    got = band_mask(mask, ends, length)
    for i in range(b):
        for j in range(c):
            end = int(ends[i, j])
            expected = [bool(mask[i, p]) and end - length <= p < end for p in range(width)]
            assert got[i, j].tolist() == expected
