"""What a process remembers of recent crawls: bounded by their known URLs, not by a handful of crawls."""

from __future__ import annotations

import pytest

from kubecrawl.store import frontier
from kubecrawl.store.database import create_engine
from kubecrawl.store.frontier import Frontier


def _frontier() -> Frontier:
    return Frontier(create_engine("sqlite:///:memory:"))  # never connected


def test_many_small_crawls_in_flight_are_all_remembered() -> None:
    memos = _frontier()
    for n in range(200):
        memos.memo(f"crawl-{n}").known.update(f"http://host-{n}.test/{i}" for i in range(20))
    assert memos.memo("crawl-0").known  # the oldest of 200 crawls of 20 URLs each is still known


def test_the_least_recent_crawls_are_forgotten_once_their_urls_exceed_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(frontier, "_MEMO_URLS", 100)
    memos = _frontier()
    for n in range(20):
        memos.memo(f"crawl-{n}").known.update(f"http://a.test/{n}/{i}" for i in range(10))
    memos.memo("crawl-new")
    assert memos.memo("crawl-19").known  # the most recent ones are kept
    assert not memos.memo("crawl-0").known  # forgotten: 200 URLs known, 100 allowed
