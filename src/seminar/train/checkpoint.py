"""Checkpoints that are either complete and verified or refused.

A checkpoint is a directory holding ``model.safetensors`` (weights), ``trainer_state.pt``
(optimizer, progress counters, RNG states; read back with ``weights_only=True`` so loading never
runs pickled code) and ``config.json``. The directory is assembled under a temporary name, each
file written atomically, and a ``COMPLETE`` manifest with the size and sha256 of every file is
written last; only then is the directory swapped in. Loading checks the manifest and every hash
first, so a truncated or edited checkpoint raises :class:`CheckpointError` instead of being used.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from seminar.errors import CheckpointError
from seminar.io import atomic_directory, atomic_path, file_digests, verify_manifest, write_json_atomic

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
CONFIG = "config.json"
MARKER = "COMPLETE"
FORMAT = "seminar-checkpoint"
FORMAT_VERSION = 1
REQUIRED = (WEIGHTS, STATE, CONFIG)


def save_checkpoint(
    directory: Path | str, model: torch.nn.Module, trainer_state: dict[str, Any], config: dict[str, Any]
) -> Path:
    """Write a verified checkpoint to ``directory``, replacing an older one only once it is complete.

    ``trainer_state`` may hold tensors, numbers, strings, lists and dicts (what
    ``torch.load(weights_only=True)`` accepts); ``config`` must be JSON-serialisable.
    """
    directory = Path(directory)
    with atomic_directory(directory, overwrite=True) as work:
        with atomic_path(work / WEIGHTS) as tmp:
            save_model(model, str(tmp), metadata={"format": FORMAT})
        with atomic_path(work / STATE) as tmp:
            torch.save(trainer_state, tmp)
        write_json_atomic(work / CONFIG, config)
        files = file_digests(work, REQUIRED)
        write_json_atomic(work / MARKER, {"format": FORMAT, "version": FORMAT_VERSION, "files": files})
    for leftover in directory.parent.glob(f".{directory.name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return directory


def _resolve(directory: Path) -> Path:
    """The checkpoint directory, or the previous one if a crash hit between the two renames of a swap."""
    if directory.is_dir():
        return directory
    previous = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for candidate in reversed(previous):
        try:
            verify_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    raise CheckpointError(f"no checkpoint at {directory}")


def verify_checkpoint(directory: Path | str) -> dict[str, Any]:
    """Check the ``COMPLETE`` manifest and every file's size and sha256; return the manifest."""
    directory = Path(directory)
    return verify_manifest(
        directory,
        directory / MARKER,
        fmt=FORMAT,
        version=FORMAT_VERSION,
        required=REQUIRED,
        error=CheckpointError,
        missing=f"{directory}: no {MARKER} marker; the checkpoint was never finished",
    )


def load_weights(directory: Path | str, model: torch.nn.Module) -> Path:
    """Verify the checkpoint and copy its weights into ``model`` (strict: names and shapes must match)."""
    directory = _resolve(Path(directory))
    verify_checkpoint(directory)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        load_model(model, str(directory / WEIGHTS), strict=True, device=str(device))
    except RuntimeError as exc:  # names or shapes differ: say which run and the likely cause
        raise ValueError(
            f"{directory}: the saved weights do not fit this model; was it trained with another model "
            f"configuration or another dataset (e.g. one prepared without user features)? {exc}"
        ) from exc
    return directory


def load_checkpoint(directory: Path | str, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify, load weights into ``model`` and return ``(trainer_state, config)``."""
    directory = load_weights(directory, model)
    state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    config = json.loads((directory / CONFIG).read_text())
    return state, config


def read_checkpoint_config(directory: Path | str) -> dict[str, Any]:
    """The verified ``config.json`` of a checkpoint, without touching any model."""
    directory = _resolve(Path(directory))
    verify_checkpoint(directory)
    return json.loads((directory / CONFIG).read_text())


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (and CUDA) generator states, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` needs tuples; make sure nested lists (after a round trip) become tuples."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
