"""Reading an export directory back: verify every file against the manifest, then rebuild the model.

An export is trusted only as a whole. ``manifest.json`` is written last and lists the size and
sha256 of every other file, so a directory without it is an unfinished export, and a file whose
hash differs was damaged or edited: both are refused with :class:`ExportError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_model

from seminar.io import verify_manifest
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


def verify_export(root: Path | str) -> dict[str, Any]:
    """Check the manifest and every listed file's size and sha256; return the manifest."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"{root}: no export directory here")
    return verify_manifest(
        root,
        root / MANIFEST,
        fmt=FORMAT,
        version=FORMAT_VERSION,
        required=REQUIRED,
        error=ExportError,
        missing=f"{root}: no {MANIFEST}; this is not an export, or writing it never finished "
        "(re-run `seminar export`)",
    )


def load_export(root: Path | str) -> Export:
    """Verify an export and rebuild its ranker on the CPU (eval mode) with its quantizer and id maps."""
    root = Path(root)
    manifest = verify_export(root)
    try:
        config = RankerConfig.from_dict(manifest["model"]["config"])
        tables = load_feature_tables(root / FEATURES, manifest["features"])
        ranker = Ranker(tables, config)
        load_model(ranker, str(root / WEIGHTS), strict=True, device="cpu")
        pq = MultiModalPQ.load(root / PQ_FILE)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{root}: the export's model cannot be rebuilt ({exc})") from exc
    if config.model not in SERVABLE_MODELS:
        raise ExportError(f"{root}: model {config.model!r} cannot be served; exports hold {SERVABLE_MODELS}")
    return Export(root, manifest, ranker.eval(), pq, IdMaps.load(root))
