"""Crawl scope (pure): which discovered links a crawl follows.

A link is in scope when it is http(s), normalises cleanly (fragment stripped, default port and dot-segments
removed), sits on the seed's host (or an allowed host; with ``sameHost: false`` any host), matches an
``include`` regex when any is given, and matches no ``exclude`` regex (RE2: linear time, whatever the pattern).
Links longer than ``core.urls.MAX_URL_BYTES`` are skipped and counted (``kubecrawl_crawl_links_skipped``).
Depth and maxPages are enforced by the frontier (``store/frontier.py``), which knows how many pages the crawl
already holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubecrawl.core import metrics
from kubecrawl.core.errors import InvalidUrl
from kubecrawl.core.sites import ScopeSpec, compile_pattern
from kubecrawl.core.urls import normalise_url_and_host, url_host

# admit() verdicts are memoised: a site's navigation puts the same links on every page, so a crawl meets each URL
# about 25 times. One memo for the process, keyed by scope and URL, holds at most _MEMO_SIZE verdicts (7 MB for
# links of 45 characters); when full, the older half goes. Per scope, a fixed bound either thrashed on crawls
# larger than it (2,048 URLs: every link judged again on a 6,000-page crawl, 6 % of its time,
# bench/profile_crawl.py) or, times the 1,024 scopes a worker keeps (worker/crawling.py), bounded nothing useful.
# Only URLs up to _MEMO_URL_LENGTH characters are remembered; longer links, rare, are judged each time.
_MEMO_SIZE = 32_768
_MEMO_URL_LENGTH = 512


_VERDICTS: dict[tuple[int, str], str | None] = {}


def _remember(key: tuple[int, str], verdict: str | None) -> None:
    global _VERDICTS  # noqa: PLW0603 (rebuilt, not emptied: the newer half stays)
    if len(_VERDICTS) >= _MEMO_SIZE:
        # Insertion order is age: keep the newer half (one copy per _MEMO_SIZE / 2 insertions).
        _VERDICTS = dict(itertools.islice(_VERDICTS.items(), len(_VERDICTS) // 2, None))
    _VERDICTS[key] = verdict


@dataclass(frozen=True, slots=True)
class Scope:
    hosts: frozenset[str]
    any_host: bool
    include: tuple[Any, ...]  # RE2 patterns (core.sites.compile_pattern)
    exclude: tuple[Any, ...]
    # Not part of the scope's identity; frozen holds for the fields above, the memo only caches their verdicts.
    # this scope's part of the process's memo: a number no other Scope object of the process has
    _memo_key: int = field(default_factory=itertools.count().__next__, init=False, repr=False, compare=False)

    @classmethod
    def for_site(cls, seed_url: str, spec: ScopeSpec) -> Scope:
        hosts = {url_host(seed_url), *(host.lower().rstrip(".") for host in spec.allowed_hosts)}
        return cls(
            hosts=frozenset(hosts),
            any_host=not spec.same_host,
            include=tuple(compile_pattern(p) for p in spec.include),
            exclude=tuple(compile_pattern(p) for p in spec.exclude),
        )

    def admit(self, url: str) -> str | None:
        """The normalised URL if it is in scope, else ``None``."""
        if not isinstance(url, str):  # outlinks read back from JSON may be anything, unhashable ones included
            return None
        key = (self._memo_key, url)
        try:
            return _VERDICTS[key]
        except KeyError:
            pass
        verdict = self._judge(url)
        if len(url) <= _MEMO_URL_LENGTH:
            _remember(key, verdict)
        return verdict

    def _judge(self, url: str) -> str | None:
        try:
            normal, host = normalise_url_and_host(url)
        except InvalidUrl as exc:
            if exc.code == "url_too_long":  # skipped, never failing the page; counted so it is seen
                metrics.CRAWL_LINKS_SKIPPED.labels(reason=exc.code).inc()
            return None
        if not self.any_host and host not in self.hosts:
            return None
        if self.include and not any(p.search(normal) for p in self.include):
            return None
        if any(p.search(normal) for p in self.exclude):
            return None
        return normal

    def filter(self, urls: Iterable[str]) -> list[str]:
        seen: dict[str, None] = {}
        for url in urls:
            normal = self.admit(url)
            if normal is not None:
                seen.setdefault(normal, None)
        return list(seen)
