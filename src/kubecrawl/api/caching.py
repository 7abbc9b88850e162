"""A small bounded cache with a time to live, for answers about credentials (``api/auth.py``, ``api/reviews.py``).

Bounded in entries, so a stream of distinct tokens (a guessing attacker) costs at most ``size`` entries: when full,
expired entries are dropped first, then the oldest. Twenty lines do not earn a dependency (cachetools' TTLCache
would do the same).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, *, size: int, seconds: float) -> None:
        self._size = size
        self._seconds = seconds
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, *, seconds: float | None = None) -> None:
        ttl = self._seconds if seconds is None else seconds
        if ttl <= 0:
            return
        now = time.monotonic()
        self._entries.pop(key, None)
        if len(self._entries) >= self._size:
            for old in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
                del self._entries[old]
            while len(self._entries) >= self._size:
                self._entries.popitem(last=False)
        self._entries[key] = (now + ttl, value)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        entry = self._entries.get(key)  # type: ignore[arg-type]
        return entry is not None and entry[0] > time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)
