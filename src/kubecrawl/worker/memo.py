"""A per-process memo with a bound: the page pipeline keeps parsed crawl specs and robots.txt in it.

A worker runs for days over any number of crawls and hosts (a crawl with ``sameHost: false`` reaches thousands),
so what it remembers per crawl or per host must have a ceiling. The oldest entry goes first: crawls and hosts are
worked on in bursts, so the oldest is the one least likely to be asked for again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most ``size`` entries; storing one more forgets the oldest."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> V:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
