"""Reading an export directory back: verify every file against the manifest, then rebuild the model.

An export is trusted only as a whole. ``manifest.json`` is written last and lists the size and
sha256 of every other file, so a directory without it is an unfinished export, and a file whose
hash differs was damaged or edited: both are refused with :class:`ExportError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors.torch import load_model

from seminar.io import sha256_file
from seminar.models.ranker import Ranker, RankerConfig
from seminar.retrieval.gsu import PQ_FILE
from seminar.retrieval.pq import MultiModalPQ
from seminar.serving.errors import ExportError
from seminar.serving.ids import ID_FILES, IdMaps
from seminar.serving.tables_io import load_feature_tables

FORMAT = "seminar-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
FEATURES = "features.safetensors"
REQUIRED = (WEIGHTS, FEATURES, PQ_FILE, *ID_FILES.values())
SERVABLE_MODELS = ("seminar", "twin", "sim_soft")  # bilinear GSUs: the ones PQ codes can stand in for


@dataclass
class Export:
    """A verified export: the ranker (its trained GSU, eval mode), the GSU quantizer and the id maps."""

    root: Path
    manifest: dict[str, Any]
    ranker: Ranker
    pq: MultiModalPQ
    ids: IdMaps

    @property
    def rerank_factor(self) -> int:
        return int(self.manifest["gsu"]["rerank_factor"])

    @property
    def top_k(self) -> int:
        """The K the ranker was trained with (from the manifest: a service may re-configure the ranker)."""
        return int(self.manifest["model"]["config"]["top_k"])


def _safe_name(root: Path, name: str) -> Path:
    """A manifest entry as a path inside the export (a tampered manifest must not point elsewhere)."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ExportError(f"{root / MANIFEST}: file entry {name!r} is not a path inside the export")
    return root / rel


def verify_export(root: Path | str) -> dict[str, Any]:
    """Check the manifest and every listed file's size and sha256; return the manifest."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"{root}: no export directory here")
    path = root / MANIFEST
    if not path.is_file():
        raise ExportError(
            f"{root}: no {MANIFEST}; this is not an export, or writing it never finished "
            "(re-run `seminar export`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ExportError(f"{path}: version {manifest.get('version')}, this library reads {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in REQUIRED):
        raise ExportError(f"{path}: manifest does not list every file of an export ({', '.join(REQUIRED)})")
    for name, expected in files.items():
        file = _safe_name(root, name)
        if not file.is_file():
            raise ExportError(f"{file}: listed in {MANIFEST} but missing")
        if not isinstance(expected, dict):
            raise ExportError(f"{path}: malformed entry for {name}")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise ExportError(f"{file}: {size} bytes, manifest says {expected.get('bytes')} (truncated?)")
        if sha256_file(file) != expected.get("sha256"):
            raise ExportError(f"{file}: sha256 does not match the manifest (corrupted or modified)")
    return manifest


def _ranker_config(values: dict[str, Any]) -> RankerConfig:
    known = {f.name for f in fields(RankerConfig)}
    return RankerConfig(**{k: v for k, v in values.items() if k in known})


def load_export(root: Path | str) -> Export:
    """Verify an export and rebuild its ranker on the CPU (eval mode) with its quantizer and id maps."""
    root = Path(root)
    manifest = verify_export(root)
    try:
        config = _ranker_config(manifest["model"]["config"])
        tables = load_feature_tables(root / FEATURES, manifest["features"])
        ranker = Ranker(tables, config)
        load_model(ranker, str(root / WEIGHTS), strict=True, device="cpu")
        pq = MultiModalPQ.load(root / PQ_FILE)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{root}: the export's model cannot be rebuilt ({exc})") from exc
    if config.model not in SERVABLE_MODELS:
        raise ExportError(f"{root}: model {config.model!r} cannot be served; exports hold {SERVABLE_MODELS}")
    return Export(root, manifest, ranker.eval(), pq, IdMaps.load(root))
