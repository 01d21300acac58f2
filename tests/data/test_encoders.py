"""Tests for content encoders, token bags and the vector cache."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from seminar.data.encoders import (
    CacheWarning,
    ClipEncoder,
    HashingTextEncoder,
    MiniLMTextEncoder,
    TextEncoder,
    VectorCache,
    default_cache_dir,
    make_text_encoder,
    parse_token_bags,
)
from seminar.data.tables import DataError

SRC = Path(__file__).resolve().parents[2] / "src"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------------
# MiniLM


def test_minilm_offline_similarity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    enc = MiniLMTextEncoder(device="cpu")
    assert isinstance(enc, TextEncoder)
    assert enc.name == "all-MiniLM-L6-v2"
    assert enc._model is None  # lazy: nothing loaded before the first encode
    titles = ["space adventure film", "a movie about space travel", "chocolate cake recipe"]
    vecs = enc.encode_texts(titles, batch_size=2, progress=False)
    assert vecs.shape == (3, 384)
    assert vecs.dtype == np.float32
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2]) + 0.3
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[1], vecs[2]) + 0.3
    # empty strings still give a finite vector; batching does not change results
    more = enc.encode_texts(["", *titles], batch_size=256, progress=False)
    assert np.isfinite(more).all()
    np.testing.assert_allclose(more[1:], vecs, atol=1e-5)
    assert enc.encode_texts([], progress=False).shape == (0, 384)


def test_offline_switch_restores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from seminar.data.encoders import _hub_offline

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with _hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert "TRANSFORMERS_OFFLINE" not in os.environ


# --------------------------------------------------------------------------------------------------
# CLIP (tiny random model built offline)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor as ImageProcessor

    # Byte-level BPE without merges: every byte symbol, alone and as a word end, then the specials.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for sym in alphabet + [s + "</w>" for s in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[sym] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ckpt = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    return ckpt


def _write_images(folder: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 50), (32, 32), (64, 20)]):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_clip_texts_and_images(tiny_clip: Path, tmp_path: Path) -> None:
    enc = ClipEncoder(tiny_clip, device="cpu")
    assert enc.dim == 16
    assert enc.name.startswith("clip:tiny-clip-")
    assert isinstance(enc, TextEncoder)
    long_text = "a very long title that goes on and on past the sixteen token context " * 3
    texts = enc.encode_texts(["red shoes", "", long_text, "blue hat"], batch_size=3, progress=False)
    assert texts.shape == (4, 16)
    assert texts.dtype == np.float32
    assert np.isfinite(texts).all()
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(texts[0], texts[3])

    paths = _write_images(tmp_path)
    imgs = enc.encode_images(paths, batch_size=2, progress=False)
    assert imgs.shape == (3, 16)
    assert imgs.dtype == np.float32
    assert np.isfinite(imgs).all()
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    assert enc.missing_images == 0
    # the same image gives the same vector whatever its batch
    again = enc.encode_images([paths[2], paths[0]], batch_size=1, progress=False)
    np.testing.assert_allclose(again, imgs[[2, 0]], atol=1e-5)


def test_clip_missing_images(tiny_clip: Path, tmp_path: Path) -> None:
    enc = ClipEncoder(tiny_clip, device="cpu")
    good = _write_images(tmp_path)[0]
    gone = tmp_path / "nope-missing.png"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")

    with pytest.raises(DataError, match=r"row 1.*nope-missing\.png"):
        enc.encode_images([good, gone], progress=False)
    with pytest.raises(DataError, match=r"broken\.jpg"):
        enc.encode_images([broken], progress=False)
    with pytest.raises(DataError, match=r"row 0: no image path"):
        enc.encode_images([None, good], progress=False)

    vecs = enc.encode_images([good, gone, None, broken, good], missing="zeros", progress=False)
    assert vecs.shape == (5, 16)
    assert enc.missing_images == 3
    assert np.all(vecs[[1, 2, 3]] == 0)
    assert np.linalg.norm(vecs[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(vecs[4], vecs[0], atol=1e-6)

    lenient = ClipEncoder(tiny_clip, missing="zeros", device="cpu")
    assert np.all(lenient.encode_images([None], progress=False) == 0)
    assert lenient.missing_images == 1


def test_clip_name_tracks_checkpoint(tiny_clip: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tiny-clip"
    shutil.copytree(tiny_clip, copy)
    assert ClipEncoder(copy).name == ClipEncoder(tiny_clip).name
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same config, different weights
    weights.write_bytes(bytes(data))
    assert ClipEncoder(copy).name != ClipEncoder(tiny_clip).name
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ClipEncoder(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# Hashing


def test_hashing_encoder_normalised_and_similar() -> None:
    enc = HashingTextEncoder(dim=64)
    assert enc.name == "hashing-64"
    assert isinstance(enc, TextEncoder)
    texts = ["Space adventure film", "space adventures", "chocolate cake recipe", "", "!!!"]
    vecs = enc.encode_texts(texts, batch_size=2, progress=False)
    assert vecs.shape == (5, 64)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2])
    np.testing.assert_array_equal(vecs, HashingTextEncoder(dim=64).encode_texts(texts, progress=False))
    assert HashingTextEncoder(dim=128).encode_texts(["x"], progress=False).shape == (1, 128)


def test_hashing_encoder_deterministic_across_processes() -> None:
    texts = ["space adventure film", "chocolate cake recipe"]
    code = (
        "import sys, numpy as np; from seminar.data.encoders import HashingTextEncoder as H; "
        f"np.save(sys.stdout.buffer, H(32).encode_texts({texts!r}, progress=False))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
        import io

        outputs.append(np.load(io.BytesIO(proc.stdout)))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], HashingTextEncoder(32).encode_texts(texts, progress=False))


# --------------------------------------------------------------------------------------------------
# Token bags


def test_parse_token_bags_round_trip() -> None:
    values = ["12 4 4", None, "", "0", "  7   99 ", "2147483646"]
    offsets, ids = parse_token_bags(values, source="items.csv")
    assert offsets.dtype == np.int64
    assert ids.dtype == np.int32
    assert offsets.tolist() == [0, 3, 3, 3, 4, 6, 7]
    bags = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(values))]
    assert bags == [[13, 5, 5], [], [], [1], [8, 100], [2147483647]]
    # shifting back recovers the original ids
    for value, bag in zip(values, bags, strict=True):
        assert [t - 1 for t in bag] == [int(t) for t in (value or "").split()]


def test_parse_token_bags_empty_input() -> None:
    offsets, ids = parse_token_bags([], source="q")
    assert offsets.tolist() == [0]
    assert ids.size == 0 and ids.dtype == np.int32


@pytest.mark.parametrize(
    ("bad", "token"),
    [("12 x 4", "x"), ("3 -4", "-4"), ("1.5", "1.5"), ("7,8", "7,8")],
)
def test_parse_token_bags_malformed(bad: str, token: str) -> None:
    with pytest.raises(DataError) as info:
        parse_token_bags(["1 2", None, bad], source="kuaisar/items.csv")
    msg = str(info.value)
    assert "kuaisar/items.csv" in msg
    assert "row 2" in msg
    assert repr(bad) in msg
    assert repr(token) in msg


def test_parse_token_bags_overflow() -> None:
    with pytest.raises(DataError, match=r"q\.csv: row 1: .*2147483647"):
        parse_token_bags(["1", "5 2147483647"], source="q.csv")
    with pytest.raises(DataError, match=r"row 0"):
        parse_token_bags(["99999999999999999999999"], source="q.csv")


# --------------------------------------------------------------------------------------------------
# Vector cache


class Counter:
    """A compute callback that counts its calls."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.arr


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_cache_hit_skips_compute(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    inputs = ["a", "b", "c"]
    compute = Counter(_vectors(3))
    first = cache.get_or_compute("enc", "title", inputs, compute)
    assert first.dtype == np.float16
    assert first.shape == (3, 8)
    np.testing.assert_array_equal(first, compute.arr.astype(np.float16))
    second = cache.get_or_compute("enc", "title", list(inputs), compute, dim=8)
    assert compute.calls == 1
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float16
    # a fresh cache object on the same root re-uses the file too
    VectorCache(tmp_path).get_or_compute("enc", "title", inputs, compute)
    assert compute.calls == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_key_sensitivity(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    compute = Counter(_vectors(2))
    cache.get_or_compute("enc", "title", ["a", "b"], compute)
    for name, kind, inputs in [
        ("enc", "title", ["b", "a"]),  # order
        ("enc", "title", ["a", "bb"]),  # content
        ("enc", "title", ["ab", ""]),  # boundaries
        ("enc", "query", ["a", "b"]),  # kind
        ("enc2", "title", ["a", "b"]),  # encoder
        ("enc", "title", ["a", None]),  # None differs from ""
        ("enc", "title", ["a", ""]),
    ]:
        before = compute.calls
        cache.get_or_compute(name, kind, inputs, compute)
        assert compute.calls == before + 1, (name, kind, inputs)
    assert len({VectorCache.key("e", "k", v) for v in (["ab", ""], ["a", "b"], ["", "ab"])}) == 3


def test_cache_truncated_file_recomputed(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    inputs = [f"t{i}" for i in range(50)]
    compute = Counter(_vectors(50))
    expected = cache.get_or_compute("enc", "title", inputs, compute)
    path = cache.path_for("enc", "title", inputs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(CacheWarning, match="unreadable"):
        got = cache.get_or_compute("enc", "title", inputs, compute)
    assert compute.calls == 2
    np.testing.assert_array_equal(got, expected)
    # the file was overwritten with a good copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get_or_compute("enc", "title", inputs, compute)
    assert compute.calls == 2


def test_cache_invalid_contents_recomputed(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    inputs = ["a", "b"]
    compute = Counter(_vectors(2))
    path = cache.path_for("enc", "title", inputs)
    path.parent.mkdir(parents=True)
    for bogus, reason in [
        (np.zeros((3, 8), np.float16), "shape"),
        (np.zeros((2, 8), np.float32), "dtype"),
        (np.full((2, 8), np.nan, np.float16), "non-finite"),
    ]:
        np.save(path, bogus)
        with pytest.warns(CacheWarning, match=reason):
            got = cache.get_or_compute("enc", "title", inputs, compute)
        np.testing.assert_array_equal(got, compute.arr.astype(np.float16))
    assert compute.calls == 3
    np.save(path, np.zeros((2, 4), np.float16))
    with pytest.warns(CacheWarning, match="shape"):
        cache.get_or_compute("enc", "title", inputs, compute, dim=8)


def test_cache_rejects_bad_computed_arrays(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    nan = _vectors(3)
    nan[1, 2] = np.nan
    with pytest.raises(DataError, match=r"NaN or inf.*input 1"):
        cache.get_or_compute("enc", "title", ["a", "b", "c"], lambda: nan)
    with pytest.raises(DataError, match=r"2 rows for 3 inputs"):
        cache.get_or_compute("enc", "title", ["a", "b", "c"], lambda: _vectors(2))
    with pytest.raises(DataError, match="width 8, expected 4"):
        cache.get_or_compute("enc", "title", ["a", "b", "c"], lambda: _vectors(3), dim=4)
    with pytest.raises(DataError, match="float16 range"):
        cache.get_or_compute("enc", "title", ["a"], lambda: np.full((1, 2), 1e6, np.float32))
    assert not list(tmp_path.rglob("*.npy"))


def test_cache_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEMINAR_CACHE_DIR", str(tmp_path / "c"))
    assert VectorCache().root == tmp_path / "c"
    monkeypatch.delenv("SEMINAR_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "seminar" / "vectors"


# --------------------------------------------------------------------------------------------------
# Factory


def test_make_text_encoder(tiny_clip: Path) -> None:
    assert make_text_encoder("none") is None
    assert isinstance(make_text_encoder("minilm"), MiniLMTextEncoder)
    hashing = make_text_encoder("hashing")
    assert isinstance(hashing, HashingTextEncoder) and hashing.dim == 64
    wide = make_text_encoder("hashing:128")
    assert isinstance(wide, HashingTextEncoder) and wide.name == "hashing-128"
    clip = make_text_encoder(f"clip:{tiny_clip}")
    assert isinstance(clip, ClipEncoder) and clip.checkpoint == tiny_clip.resolve()
    for bad in ("bert", "hashing:abc", "hashing:0", "clip:", "minilm:2"):
        with pytest.raises(ValueError, match=r"minilm|dimension|checkpoint"):
            make_text_encoder(bad)
    with pytest.raises(ValueError, match=r"valid choices: .*'minilm'.*'hashing'.*'clip:.*'none'"):
        make_text_encoder("word2vec")


def test_image_cache_key_follows_the_bytes_not_the_file_stamp(tmp_path: Path) -> None:
    import os

    from seminar.data.content import _image_key

    first = tmp_path / "a.jpg"
    first.write_bytes(b"\xff\xd8 first image")
    stamp = first.stat()
    key = _image_key(first)
    copy = tmp_path / "elsewhere" / "b.jpg"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    assert _image_key(copy) == key  # same bytes: the cached vector is reused
    first.write_bytes(b"\xff\xd8 other image")  # same size, then the old timestamps put back
    os.utime(first, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert first.stat().st_size == stamp.st_size and first.stat().st_mtime_ns == stamp.st_mtime_ns
    assert _image_key(first) != key
    assert _image_key(tmp_path / "missing.jpg") == str(tmp_path / "missing.jpg")
    assert _image_key(None) == ""
