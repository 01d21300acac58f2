"""Atomic file and directory writes, so an interrupted run never leaves a file a later run trusts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: builds are not serialised there
    fcntl = None  # type: ignore[assignment]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: Path | str, obj: Any) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_npy_atomic(target: Path | str, array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


@contextlib.contextmanager
def atomic_directory(target: Path | str, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in only when the block succeeds.

    Leftovers of an earlier interrupted build (``.<name>.partial-*``) are removed first: they are
    never resumed from, because nothing guarantees their files are complete. A previous version
    moved aside (``.<name>.old-*``) is removed only when the target is in place (that swap
    finished); without a target it is the last complete copy, and it is left for the user.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = list(target.parent.glob(f".{target.name}.partial-*"))
    if target.exists():
        stale += target.parent.glob(f".{target.name}.old-*")
    for leftover in stale:
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite to replace it")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield work
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(work, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: Path | str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an advisory lock on ``path`` for the block; another holder makes this wait (after ``on_wait``).

    Two builds of one directory would otherwise remove each other's partial work. The kernel drops
    the lock when its process dies, so a killed run never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_lock(path: Path | str) -> Iterator[bool]:
    """Hold an advisory lock on ``path`` for the block if no other process holds it; yields whether
    this process does (without ``fcntl`` always True). Parallel workers use it to claim a task each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def json_digest(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys), to tell manifests apart."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_digests(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Size and sha256 of each named file of ``directory``: the body of a verifiable manifest."""
    return {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
        for name in names
    }


def verify_manifest(
    directory: Path,
    manifest_path: Path,
    *,
    fmt: str,
    version: int,
    required: Sequence[str],
    error: type[Exception],
    missing: str,
) -> dict[str, Any]:
    """Check a manifest's format and version and every listed file's size and sha256; return it.

    Every failure raises ``error`` naming the file; ``missing`` explains an absent manifest (a
    directory whose writing never finished). Entries must stay inside ``directory``.
    """
    if not manifest_path.is_file():
        raise error(missing)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise error(f"{manifest_path}: not a {fmt} manifest")
    if manifest.get("version") != version:
        raise error(f"{manifest_path}: version {manifest.get('version')}, this library reads {version}")
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in required):
        raise error(f"{manifest_path}: manifest does not list every required file ({', '.join(required)})")
    for name, expected in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise error(f"{manifest_path}: file entry {name!r} is not a path inside {directory}")
        path = directory / rel
        if not path.is_file():
            raise error(f"{path}: listed in {manifest_path.name} but missing")
        if not isinstance(expected, dict):
            raise error(f"{manifest_path}: malformed entry for {name}")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise error(f"{path}: {size} bytes, manifest says {expected.get('bytes')} (truncated?)")
        if sha256_file(path) != expected.get("sha256"):
            raise error(f"{path}: sha256 does not match the manifest (corrupted or modified)")
    return manifest
