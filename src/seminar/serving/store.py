"""Per-user lifelong sequences held as PQ codes plus the ids and timestamps the ESU needs.

Each user owns four growable numpy arrays (codes uint8 [n, M·n_sub], item and query ids int32,
timestamps int64) that grow geometrically, so an append is amortised O(new behaviours) and memory
stays close to ``n · (M·n_sub + 16)`` bytes. Readers take a :class:`History` snapshot under the lock:
appends only ever write past the snapshot's length (or into a new, larger array), so a snapshot
stays valid while scoring runs outside the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

GROWTH = 1.5
MIN_CAPACITY = 64


@dataclass(frozen=True)
class History:
    """A read-only view of a user's first ``n`` behaviours, oldest first."""

    codes: np.ndarray  # [n, M·n_sub] uint8, C-contiguous
    items: np.ndarray  # [n] int32
    queries: np.ndarray  # [n] int32
    timestamps: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return int(self.items.shape[0])


class UserSequence:
    """One user's behaviours in growable arrays (never a Python list of objects)."""

    __slots__ = ("_codes", "_items", "_queries", "_timestamps", "length")

    def __init__(self, code_width: int) -> None:
        self._codes = np.empty((0, code_width), dtype=np.uint8)
        self._items = np.empty(0, dtype=np.int32)
        self._queries = np.empty(0, dtype=np.int32)
        self._timestamps = np.empty(0, dtype=np.int64)
        self.length = 0

    @property
    def capacity(self) -> int:
        return int(self._items.shape[0])

    @property
    def last_timestamp(self) -> int | None:
        return int(self._timestamps[self.length - 1]) if self.length else None

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        grown = self.capacity and int(self.capacity * GROWTH)
        capacity = max(needed, grown, MIN_CAPACITY if self.capacity else 0)
        n = self.length
        for name in ("_codes", "_items", "_queries", "_timestamps"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)

    def extend(
        self, codes: np.ndarray, items: np.ndarray, queries: np.ndarray, timestamps: np.ndarray
    ) -> None:
        """Append validated behaviours (the caller checks ids and time order)."""
        n, m = self.length, items.shape[0]
        self._reserve(n + m)
        self._codes[n : n + m] = codes
        self._items[n : n + m] = items
        self._queries[n : n + m] = queries
        self._timestamps[n : n + m] = timestamps
        self.length = n + m

    def snapshot(self) -> History:
        n = self.length
        return History(self._codes[:n], self._items[:n], self._queries[:n], self._timestamps[:n])

    @property
    def used_bytes(self) -> int:
        """Bytes of the stored behaviours: codes plus item/query ids plus timestamps."""
        return self.length * (self._codes.shape[1] + 4 + 4 + 8)

    @property
    def allocated_bytes(self) -> int:
        """Bytes the arrays hold, spare capacity included."""
        return sum(a.nbytes for a in (self._codes, self._items, self._queries, self._timestamps))

    def trim(self) -> None:
        """Release spare capacity (e.g. after a bulk load)."""
        n = self.length
        for name in ("_codes", "_items", "_queries", "_timestamps"):
            setattr(self, name, getattr(self, name)[:n].copy())


class SequenceStore:
    """Sequences by internal user index; one lock serialises appends and snapshot taking."""

    def __init__(self, code_width: int) -> None:
        self.code_width = code_width
        self._users: dict[int, UserSequence] = {}
        self.lock = threading.Lock()

    def get(self, user: int) -> UserSequence | None:
        return self._users.get(user)

    def get_or_create(self, user: int) -> UserSequence:
        sequence = self._users.get(user)
        if sequence is None:
            sequence = self._users[user] = UserSequence(self.code_width)
        return sequence

    def __len__(self) -> int:
        return len(self._users)

    def items(self) -> list[tuple[int, UserSequence]]:
        """(user index, sequence) pairs; call it under ``lock``."""
        return list(self._users.items())

    def total_behaviours(self) -> int:
        return sum(s.length for s in self._users.values())

    def allocated_bytes(self) -> int:
        return sum(s.allocated_bytes for s in self._users.values())

    def used_bytes(self) -> int:
        return sum(s.used_bytes for s in self._users.values())
