from __future__ import annotations

import numpy as np
import pytest
import torch

from seminar.retrieval.kernels import reference_decoded_scores, reference_sdc_scores
from seminar.retrieval.pq import MultiModalPQ, PQConfig

from .conftest import gaussian_tables, trained_pq


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        PQConfig(2, 10, n_sub=3)
    with pytest.raises(ValueError, match="n_centroids"):
        PQConfig(2, 8, n_sub=2, n_centroids=70000)


@pytest.mark.parametrize(
    ("n_channels", "n_sub", "n_centroids", "dtype", "nbytes"),
    [
        (4, 8, 512, np.uint16, 36),  # the paper: 9-bit codes, 4·8·9 bits
        (4, 16, 16, np.uint8, 32),  # 4-bit, packed two per byte
        (4, 8, 256, np.uint8, 32),
        (2, 4, 65536, np.uint16, 16),
        (3, 5, 10, np.uint8, 8),  # ceil(3·5·4 / 8)
    ],
)
def test_code_dtype_and_bytes(
    n_channels: int, n_sub: int, n_centroids: int, dtype: type, nbytes: int
) -> None:
    cfg = PQConfig(n_channels, 8 * n_sub, n_sub, n_centroids)
    assert cfg.code_dtype == np.dtype(dtype)
    assert cfg.bytes_per_behaviour == nbytes


def test_train_refuses_too_few_vectors() -> None:
    tables = gaussian_tables(2, 8, 100, seed=0)
    with pytest.raises(ValueError, match="cannot train 256 centroids on 100 training vectors"):
        MultiModalPQ.train(tables, PQConfig(2, 8, 2, 256))


def test_train_validates_tables() -> None:
    tables = gaussian_tables(2, 8, 300, seed=0)
    with pytest.raises(ValueError, match="expected 2 embedding tables"):
        MultiModalPQ.train(tables[:1], PQConfig(2, 8, 2, 16))
    bad = [tables[0], tables[1][:, :4]]
    with pytest.raises(ValueError, match=r"must be \[N, d=8\]"):
        MultiModalPQ.train(bad, PQConfig(2, 8, 2, 16))
    nan = [tables[0], tables[1].copy()]
    nan[1][3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MultiModalPQ.train(nan, PQConfig(2, 8, 2, 16))


def test_encode_validation() -> None:
    pq = trained_pq()
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="expected 3 channels"):
        pq.encode(rng.standard_normal((5, 2, 16)))
    with pytest.raises(ValueError, match="expected dimension d=16"):
        pq.encode(rng.standard_normal((5, 3, 12)))
    x = rng.standard_normal((5, 3, 16))
    x[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pq.encode(x)
    with pytest.raises(ValueError, match="codes must lie in"):
        pq.decode(np.full((2, 3, 4), 16))


def test_encode_accepts_channel_list_and_decode_shape() -> None:
    pq = trained_pq()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 3, 16)).astype(np.float32)
    codes = pq.encode(x)
    assert codes.shape == (7, 3, 4) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, pq.encode([x[:, m] for m in range(3)]))
    assert pq.decode(codes).shape == (7, 3, 16)


def test_codebooks_are_trained() -> None:
    """Quantization error of the trained codebooks is far below that of random codebooks."""
    pq = trained_pq()
    x = np.stack(gaussian_tables(3, 16, 2000, seed=9), axis=1)
    rng = np.random.default_rng(3)
    random_books = rng.standard_normal(pq.codebooks.shape).astype(np.float32)
    random_pq = MultiModalPQ(pq.config, random_books)
    trained, rand = pq.quantization_mse(x), random_pq.quantization_mse(x)
    assert trained < 0.5 * rand
    assert trained < 0.6  # unit-variance data, 16 centroids per 4-d sub-vector


def test_not_trained_on_searched_sequence() -> None:
    """Encoding must not change the codebooks (they come from the embedding tables only)."""
    pq = trained_pq()
    before = pq.codebooks.copy()
    pq.encode(np.random.default_rng(4).standard_normal((50, 3, 16)))
    np.testing.assert_array_equal(before, pq.codebooks)


def test_adc_tables_match_decoded_inner_product() -> None:
    pq = trained_pq()
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 16, (40, 3, 4))
    target = rng.standard_normal((3, 16)).astype(np.float32)
    g = np.array([0.2, 0.3, 0.5], dtype=np.float32)
    tables = pq.adc_tables(target, g)
    assert tables.shape == (3, 4, 16)
    adc = tables[np.arange(3)[None, :, None], np.arange(4)[None, None, :], codes].sum((1, 2))
    ref = reference_decoded_scores(
        torch.from_numpy(pq.decode(codes)), torch.from_numpy(target), torch.from_numpy(g)
    )
    np.testing.assert_allclose(adc, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_sdc_tables_match_paper_formula_and_decoded() -> None:
    pq = trained_pq()
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 16, (30, 3, 4))
    target_codes = rng.integers(0, 16, (3, 4))
    g = np.array([0.6, 0.1, 0.3], dtype=np.float32)
    pair = pq.sdc_pair_table
    assert pair.shape == (3, 3, 4, 16, 16)
    sdc = pq.sdc_tables(target_codes, g)
    via_tables = sdc[np.arange(3)[None, :, None], np.arange(4)[None, None, :], codes].sum((1, 2))
    paper = reference_sdc_scores(
        torch.from_numpy(pair), torch.from_numpy(codes), torch.from_numpy(target_codes), torch.from_numpy(g)
    ).numpy()
    decoded = reference_decoded_scores(
        torch.from_numpy(pq.decode(codes)), torch.from_numpy(pq.decode(target_codes)), torch.from_numpy(g)
    ).numpy()
    np.testing.assert_allclose(via_tables, paper, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(paper, decoded, rtol=1e-4, atol=1e-4)


def test_gamma_validation() -> None:
    pq = trained_pq()
    target = np.zeros((3, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="sum to 1"):
        pq.adc_tables(target, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="3 channel weights"):
        pq.adc_tables(target, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"target of shape \[M=3, d=16\]"):
        pq.adc_tables(np.zeros((2, 16)), [0.2, 0.3, 0.5])


def test_save_load_round_trip(tmp_path) -> None:
    pq = trained_pq()
    path = tmp_path / "sub" / "pq.safetensors"
    pq.save(path)
    loaded = MultiModalPQ.load(path)
    assert loaded.config == pq.config
    np.testing.assert_array_equal(loaded.codebooks, pq.codebooks)
    assert not [p for p in path.parent.iterdir() if p.name != "pq.safetensors"]  # no temp files left
    x = np.random.default_rng(7).standard_normal((10, 3, 16))
    np.testing.assert_array_equal(loaded.encode(x), pq.encode(x))


def test_load_rejects_foreign_file(tmp_path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "x.safetensors"
    save_file({"codebooks": np.zeros((1, 1, 2, 1), dtype=np.float32)}, str(path))
    with pytest.raises(ValueError, match="not a saved MultiModalPQ"):
        MultiModalPQ.load(path)


def test_uint16_codes_for_512_centroids() -> None:
    tables = gaussian_tables(2, 4, 1200, seed=1)
    pq = MultiModalPQ.train(tables, PQConfig(2, 4, 1, 512, n_iter=4))
    codes = pq.encode(np.stack(tables, axis=1)[:200])
    assert codes.dtype == np.uint16 and codes.max() >= 256
