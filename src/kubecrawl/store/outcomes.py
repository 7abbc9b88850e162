"""Settling page outcomes, the parts no database changes: the window and ``scope.maxPages`` arithmetic, which
fields an outcome stores, which crawl counters it moves, and how a settled batch is shared out among the callers
that submitted it. The SQL and the MongoDB stores both use them.

``PageOutcome`` (``store/contract.py``) is the one definition of an outcome; everything here derives from its
fields. The SQL stores build their statements from ``OUTCOME_COLUMNS``; migration 0003's
``kubecrawl_finish_pages`` names the same columns in PL/pgSQL (a past migration: never edited), and
``tests/unit/store/test_outcomes.py`` proves the two lists agree.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubecrawl.core.models import CrawlCounters, CrawlPageState, CrawlState
from kubecrawl.store.contract import FinishResult, PageOutcome, PageRef

P = CrawlPageState
# The crawl counters, in the API model's order.
COUNTERS = tuple(CrawlCounters.model_fields)
# What an outcome carries but does not store as a field of the page: its state is stored as ``state``, the rest
# only moves counters (``skipped_robots``) or the frontier (``new_links``).
_NOT_FIELDS = frozenset({"state", "skipped_robots", "new_links"})
# The page fields an outcome stores as they are.
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(PageOutcome) if f.name not in _NOT_FIELDS)
# Everything settling a page writes: its state, its place in the SSE sequence, the times, the links to follow
# when a later crawl gets 304 (``outlinks``), and the result fields.
OUTCOME_COLUMNS = ("state", "seq", "fetched_at", "updated_at", "outlinks", *RESULT_FIELDS)
# An error message is stored cut to this many characters (a stack of redirects or a long TLS error).
ERROR_CHARS = 2000


def window_room(config: dict[str, Any], in_flight: int) -> int:
    """How many more pages the window admits: ``politeness.maxConcurrency`` less those in flight."""
    return int(config["politeness"]["maxConcurrency"]) - in_flight


def pages_left(config: dict[str, Any], discovered: int) -> int:
    """How many more pages ``scope.maxPages`` admits into the frontier."""
    return max(0, int(config["scope"]["maxPages"]) - discovered)


def max_pages_of(config: dict[str, Any] | None) -> int | None:
    """A crawl's ``scope.maxPages`` as its config snapshot holds it (None for a row read without it)."""
    return None if config is None else int(config["scope"]["maxPages"])


def outcome_values(outcome: PageOutcome) -> dict[str, Any]:
    """The stored values of an outcome (``state``, ``outlinks`` and the result fields), as plain data."""
    values = {name: getattr(outcome, name) for name in RESULT_FIELDS}
    values["state"] = outcome.state.value
    values["outlinks"] = list(outcome.new_links) if outcome.state is P.DONE else None
    if values["error"] is not None:
        values["error"] = values["error"][:ERROR_CHARS]
    return values


def counted(outcome: PageOutcome) -> dict[str, int]:
    """The crawl counters one outcome moves."""
    if outcome.state is P.DONE:
        moved = {"fetched": 1}
        if outcome.changed is not None:
            moved["changed" if outcome.changed else "unchanged"] = 1
        return moved
    if outcome.state is P.FAILED:
        return {"failed": 1}
    return {"skipped_robots": 1} if outcome.skipped_robots else {}


def tally(settled: Sequence[tuple[PageOutcome, int]]) -> tuple[Counter[str], dict[str, int]]:
    """What a batch of settled pages (outcome, depth) moves: the crawl counters, and each new link at the depth
    below the first page that found it."""
    counters = Counter[str]()
    links: dict[str, int] = {}
    for outcome, depth in settled:
        counters.update(counted(outcome))
        for url in outcome.new_links:
            links.setdefault(url, depth + 1)
    return counters, links


@dataclass(frozen=True, slots=True)
class SettledBatch:
    """What settling a batch of outcomes did, whichever way it was settled."""

    settled: list[int]  # the pages whose outcome this batch wrote, in arrival order
    state: CrawlState
    previous_state: CrawlState
    to_publish: list[PageRef]


def shared_out(batch: SettledBatch | None, items: Sequence[tuple[int, PageOutcome]]) -> list[FinishResult | None]:
    """One result per submitted outcome: None for those not settled (duplicates); the refill shared out among
    the settled ones so their callers publish in parallel; exactly one of them reports a completion."""
    if batch is None:
        return [None] * len(items)
    owners = {page_id: FinishResult([], batch.state, completed_now=False) for page_id in batch.settled}
    shares = list(owners.values())
    for index, ref in enumerate(batch.to_publish):
        shares[index % len(shares)].to_publish.append(ref)
    shares[0].completed_now = batch.state is CrawlState.COMPLETED and batch.previous_state is not batch.state
    return [owners.pop(page_id, None) for page_id, _ in items]
