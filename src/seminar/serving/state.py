"""Saving and restoring a ScoringService's histories, so a restart keeps what clients appended.

A snapshot holds every user's behaviours as internal ids and timestamps (CSR: one row of
``offsets`` per user); the PQ codes are not stored, because the export's per-id code tables give
them back exactly. The file is one safetensors file written atomically, tagged with a digest of the
export's manifest (which lists every file's sha256): restoring into a service built from another
export (other ids, other codes) is refused, as is a damaged file, and nothing is stored unless the
whole snapshot is valid. Users first seen in serving are saved by raw id, in the order that gave
them their rows, so a restart gives every one of them back its history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from seminar.io import atomic_path, json_digest
from seminar.serving.errors import ServingError

if TYPE_CHECKING:
    from seminar.serving.service import ScoringService

FORMAT = "seminar.Histories/1"
ARRAYS = {
    "users": np.int64,
    "offsets": np.int64,
    "items": np.int32,
    "queries": np.int32,
    "timestamps": np.int64,
}


class StateError(ServingError):
    """A history snapshot that is damaged, of another export, or cannot be restored here."""


def save_histories(service: ScoringService, path: Path | str) -> int:
    """Write every stored history to ``path`` (atomically); returns the number of users."""
    with service.store.lock:  # snapshots stay valid after the lock: appends write past them
        views = {user: sequence.snapshot() for user, sequence in service.store.items()}
        new_users = list(service.ids.new_users)
    users = np.array(sorted(views), dtype=np.int64)
    lengths = np.array([len(views[int(u)]) for u in users], dtype=np.int64)
    arrays = {
        "users": users,
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        **{
            name: np.concatenate([getattr(views[int(u)], name) for u in users]).astype(ARRAYS[name])
            if users.size
            else np.empty(0, dtype=ARRAYS[name])
            for name in ("items", "queries", "timestamps")
        },
    }
    metadata = {
        "format": FORMAT,
        "export": json_digest(service.export.manifest),
        "new_users": json.dumps(new_users),
    }
    with atomic_path(Path(path)) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)
    return int(users.size)


def _read(path: Path, digest: str) -> tuple[dict[str, np.ndarray], list[str]]:
    try:
        with safe_open(str(path), "numpy") as handle:
            metadata = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as exc:
        raise StateError(f"{path}: not a readable history snapshot ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise StateError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("export") != digest:
        raise StateError(f"{path}: saved from another export; its ids and codes would not match this one")
    for name, dtype in ARRAYS.items():
        if name not in arrays or arrays[name].dtype != dtype or arrays[name].ndim != 1:
            raise StateError(f"{path}: array {name!r} missing or not a 1-d {np.dtype(dtype).name} array")
    try:  # snapshots written before new users were served have none
        new_users = json.loads(metadata.get("new_users", "[]"))
    except ValueError:
        new_users = None
    if not isinstance(new_users, list) or not all(isinstance(u, str) for u in new_users):
        raise StateError(f"{path}: its list of new users is damaged")
    return arrays, new_users


def load_histories(service: ScoringService, path: Path | str) -> int:
    """Restore a snapshot into a service that holds no history yet; returns the number of users.

    Everything is checked (ids within the export's maps, time order per user, offsets) before the
    first behaviour is stored.
    """
    path = Path(path)
    arrays, new_users = _read(path, json_digest(service.export.manifest))
    users, offsets = arrays["users"], arrays["offsets"]
    items, queries, stamps = arrays["items"], arrays["queries"], arrays["timestamps"]
    n = items.size
    if offsets.size != users.size + 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise StateError(f"{path}: offsets do not describe {users.size} users and {n} behaviours")
    if queries.size != n or stamps.size != n:
        raise StateError(f"{path}: {n} items but {queries.size} queries and {stamps.size} timestamps")
    ids = service.ids
    n_users = len(ids.users) + len(new_users)
    n_items, n_queries = len(ids.items) - 1, len(ids.queries) - 1
    if users.size and (users.min() < 0 or users.max() >= n_users or np.unique(users).size != users.size):
        raise StateError(f"{path}: user rows must be distinct and within [0, {n_users})")
    if n and (items.min() < 1 or items.max() > n_items or queries.min() < 1 or queries.max() > n_queries):
        raise StateError(f"{path}: an item or query id lies outside this export's maps")
    same_user = np.repeat(np.arange(users.size), np.diff(offsets))
    if np.any((np.diff(stamps) < 0) & (same_user[1:] == same_user[:-1])):
        raise StateError(f"{path}: a user's timestamps go back in time")
    width = service.store.code_width
    codes = service.tables.codes_of(queries, items) if n else np.empty((0, width), dtype=np.uint8)
    with service.store.lock:
        if len(service.store) or ids.new_users:
            raise StateError(f"{path}: the service already holds histories; restore into a fresh one")
        try:
            ids.restore_new_users(new_users)
        except ServingError as exc:
            raise StateError(f"{path}: {exc}") from exc
        for row, user in enumerate(users):
            start, stop = offsets[row], offsets[row + 1]
            service.store.get_or_create(int(user)).extend(
                codes[start:stop], items[start:stop], queries[start:stop], stamps[start:stop]
            )
    return int(users.size)
