"""Per-user lifelong sequences held as PQ codes plus the ids and timestamps the ESU needs.

Each user owns four growable numpy arrays (codes uint8 [n, M·n_sub], item and query ids int32,
timestamps int64) that grow geometrically, so an append is amortised O(new behaviours) and memory
stays close to ``n · (M·n_sub + 16)`` bytes. Readers take a :class:`History` snapshot under the lock:
appends only ever write past the snapshot's end (or into new arrays), so a snapshot stays valid
while scoring runs outside the lock.

A history cap (``SequenceStore.max_history``) keeps each user's newest behaviours and drops the
oldest, like a ring buffer, but the kept window stays one contiguous slice (the ADC scan reads it in
place): dropping only moves the window's start, and when the arrays' end is reached the window is
copied into fresh arrays with half a cap of room to spare, so the copies stay amortised O(appended).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

GROWTH = 1.5
MIN_CAPACITY = 64

_recent = threading.local()


def dropped_by_last_extend() -> int:
    """Behaviours the calling thread's latest :meth:`UserSequence.extend` dropped (0: none).

    ``ScoringService.append_columns`` returns only the new length; the HTTP layer reads this right
    after its append, in the same thread, so concurrent requests cannot mix up their counts.
    """
    return int(getattr(_recent, "dropped", 0))


@dataclass(frozen=True)
class History:
    """A read-only view of a user's first ``n`` behaviours, oldest first."""

    codes: np.ndarray  # [n, M·n_sub] uint8, C-contiguous
    items: np.ndarray  # [n] int32
    queries: np.ndarray  # [n] int32
    timestamps: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def head(self, n: int) -> History:
        """The first ``n`` behaviours (views, no copy)."""
        return History(self.codes[:n], self.items[:n], self.queries[:n], self.timestamps[:n])


class UserSequence:
    """One user's behaviours in growable arrays (never a Python list of objects).

    The stored behaviours are rows ``[start, start + length)`` of the arrays; ``max_length`` (None:
    unbounded) caps ``length``, the oldest behaviours giving way to new ones.
    """

    __slots__ = ("_codes", "_items", "_queries", "_start", "_timestamps", "length", "max_length")

    def __init__(self, code_width: int, max_length: int | None = None) -> None:
        self._codes = np.empty((0, code_width), dtype=np.uint8)
        self._items = np.empty(0, dtype=np.int32)
        self._queries = np.empty(0, dtype=np.int32)
        self._timestamps = np.empty(0, dtype=np.int64)
        self._start = 0
        self.length = 0
        self.max_length = max_length

    @property
    def capacity(self) -> int:
        return int(self._items.shape[0])

    @property
    def last_timestamp(self) -> int | None:
        return int(self._timestamps[self._start + self.length - 1]) if self.length else None

    def _relocate(self, start: int, keep: int, needed: int) -> None:
        """Copy rows ``[start, start + keep)`` to the front of new arrays with room for ``needed``.

        New arrays rather than in place, so that snapshots of the old ones stay valid.
        """
        grown = max(int(self.capacity * GROWTH), MIN_CAPACITY if self.capacity else 0)
        if self.max_length is not None:  # beyond the cap, spare room only buys fewer copies
            grown = min(grown, self.max_length + max(self.max_length // 2, MIN_CAPACITY))
        capacity = max(needed, grown)
        for name in ("_codes", "_items", "_queries", "_timestamps"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:keep] = old[start : start + keep]
            setattr(self, name, new)
        self._start = 0

    def extend(
        self, codes: np.ndarray, items: np.ndarray, queries: np.ndarray, timestamps: np.ndarray
    ) -> int:
        """Append validated behaviours (the caller checks ids and time order).

        Returns how many of the oldest behaviours (stored ones first, then the oldest of this
        append if it alone exceeds the cap) were dropped to stay within ``max_length``.
        """
        m, cap = items.shape[0], self.max_length
        skipped = 0
        if cap is not None and m > cap:  # only the newest ``cap`` of this append can be kept
            skipped, m = m - cap, cap
            codes, items, queries, timestamps = codes[-m:], items[-m:], queries[-m:], timestamps[-m:]
        keep = self.length if cap is None else min(self.length, cap - m)
        start = self._start + self.length - keep
        if start + keep + m > self.capacity:
            self._relocate(start, keep, keep + m)
            start = 0
        end = start + keep
        self._codes[end : end + m] = codes
        self._items[end : end + m] = items
        self._queries[end : end + m] = queries
        self._timestamps[end : end + m] = timestamps
        dropped = self.length - keep + skipped
        self._start, self.length = start, keep + m
        _recent.dropped = dropped
        return dropped

    def limit(self, max_length: int | None) -> int:
        """Set the cap; a longer history keeps its newest ``max_length``. Returns how many were dropped."""
        self.max_length = max_length
        if max_length is None or self.length <= max_length:
            return 0
        dropped = self.length - max_length
        self._start, self.length = self._start + dropped, max_length
        self.trim()  # release the dropped rows now rather than at the next relocation
        return dropped

    def snapshot(self) -> History:
        s, n = self._start, self.length
        return History(
            self._codes[s : s + n],
            self._items[s : s + n],
            self._queries[s : s + n],
            self._timestamps[s : s + n],
        )

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
        s, n = self._start, self.length
        for name in ("_codes", "_items", "_queries", "_timestamps"):
            setattr(self, name, getattr(self, name)[s : s + n].copy())
        self._start = 0


def _checked_cap(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_history must be a positive integer or None, got {value!r}")
    return value


class SequenceStore:
    """Sequences by internal user index; one lock serialises appends and snapshot taking.

    ``max_history`` caps every user's history (None: unbounded); see the module's docstring.
    """

    def __init__(self, code_width: int, max_history: int | None = None) -> None:
        self.code_width = code_width
        self._users: dict[int, UserSequence] = {}
        self.lock = threading.Lock()
        self._max_history = _checked_cap(max_history)

    @property
    def max_history(self) -> int | None:
        return self._max_history

    @max_history.setter
    def max_history(self, value: int | None) -> None:
        """Cap every history, the stored ones included (their oldest behaviours are dropped now)."""
        value = _checked_cap(value)
        with self.lock:
            self._max_history = value
            for sequence in self._users.values():
                sequence.limit(value)

    def get(self, user: int) -> UserSequence | None:
        return self._users.get(user)

    def get_or_create(self, user: int) -> UserSequence:
        sequence = self._users.get(user)
        if sequence is None:
            sequence = self._users[user] = UserSequence(self.code_width, self._max_history)
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
