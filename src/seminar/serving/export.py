"""`seminar export`: one self-contained directory a scoring service loads without the dataset.

It holds the ranker's weights and config, the feature tables the model looks up (content vectors,
attributes, tokens), the GSU's product quantizer fitted on the trained per-id keys, and the raw ↔
internal id maps. The directory is assembled under a temporary name and swapped in complete, with
``manifest.json`` (sizes and sha256 of every file) written last.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import save_model

from seminar import __version__
from seminar.data.schema import SeminarDataset
from seminar.io import atomic_directory, file_digests, write_json_atomic
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker
from seminar.retrieval.gsu import PQ_FILE, PQGsuConfig, fit_gsu_pq, gsu_key_tables
from seminar.serving.bundle import (
    FEATURES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SERVABLE_MODELS,
    WEIGHTS,
)
from seminar.serving.errors import ExportError
from seminar.serving.ids import IdMaps
from seminar.serving.tables_io import save_feature_tables
from seminar.settings import ExperimentSettings
from seminar.train.runs import load_run_model
from seminar.train.trainer import BEST


def _check_servable(ranker: Ranker, run_dir: Path) -> None:
    if ranker.config.model not in SERVABLE_MODELS:
        raise ExportError(
            f"{run_dir}: a {ranker.config.model!r} ranker cannot be exported; serving replaces the GSU "
            f"by PQ codes, which needs an inner-product GSU: {', '.join(SERVABLE_MODELS)}"
        )


def _training_settings(run_dir: Path) -> dict[str, Any] | None:
    """The settings the run recorded (None for a run that recorded none)."""
    saved = ExperimentSettings.read(run_dir)
    return None if saved is None else asdict(saved)


def export_run(
    ds: SeminarDataset,
    run_dir: Path | str,
    out: Path | str,
    pq_config: PQGsuConfig | None = None,
    *,
    checkpoint: str = BEST,
    overwrite: bool = False,
) -> Path:
    """Write the export of a trained ranker run; refuses non-bilinear GSUs and >256 centroids."""
    run_dir, out = Path(run_dir), Path(out)
    pq_config = pq_config or PQGsuConfig()
    if pq_config.n_centroids > 256:
        raise ExportError(
            f"serving holds one byte per code: --pq-centroids must be ≤ 256, got {pq_config.n_centroids}"
        )
    tables = FeatureTables.from_dataset(ds)
    model = load_run_model(run_dir, tables, checkpoint)
    if not isinstance(model, Ranker):
        raise ExportError(f"{run_dir} is not a ranker run (a PSU pretraining run has no ranking head)")
    _check_servable(model, run_dir)
    model.eval()
    keys = gsu_key_tables(model)
    pq = fit_gsu_pq(keys, pq_config)
    ids = IdMaps.from_dataset(ds)
    with atomic_directory(out, overwrite=overwrite) as work:
        save_model(model, str(work / WEIGHTS), metadata={"format": "seminar-export"})
        sizes = save_feature_tables(tables, work / FEATURES)
        pq.save(work / PQ_FILE)
        names = [WEIGHTS, FEATURES, PQ_FILE, *ids.save(work)]
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "seminar_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"class": "seminar.models.ranker.Ranker", "config": model.config.to_dict()},
            "features": sizes,
            "gsu": {
                **pq_config.to_dict(),
                "n_sub": pq.config.n_sub,
                "n_channels": keys.n_channels,
                "dim": keys.dim,
                "bytes_per_behaviour": pq.bytes_per_behaviour,
            },
            "settings": _training_settings(run_dir),
            "source": {
                "data": str(ds.root),
                "dataset": ds.manifest.get("source"),
                "run": str(run_dir),
                "checkpoint": checkpoint,
            },
            "files": file_digests(work, names),
        }
        write_json_atomic(work / MANIFEST, manifest)
    return out
