"""api/access.py: what each request needs, as an API-key scope and as RBAC attributes (pure); api/caching.py."""

from __future__ import annotations

import pytest

from kubecrawl.api.access import READ_CRAWLS, Access, crawl_access, request_access
from kubecrawl.api.caching import TtlCache


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/sites", Access("read", "list", "crawlsites")),
        ("GET", "/sites/ns/docs", Access("read", "get", "crawlsites", namespace="ns", name="docs")),
        ("HEAD", "/sites/ns/docs/crawls", Access("read", "get", "crawlsites", namespace="ns", name="docs")),
        ("POST", "/sites/ns/docs/crawls", Access("write", "create", "crawlsites", "trigger", "ns", "docs")),
        ("PUT", "/sites/ns/docs", Access("admin", "update", "crawlsites", "sync", "ns", "docs")),
        ("DELETE", "/sites/ns/docs", Access("admin", "delete", "crawlsites", "sync", "ns", "docs")),
        ("POST", "/metadata", Access("write", "create", "metadata")),
        ("GET", "/metadata", Access("write", "create", "metadata")),  # enqueues on a miss
        ("GET", "/crawls/c1", READ_CRAWLS),
        ("GET", "/crawls/c1/events", READ_CRAWLS),
        ("POST", "/crawls/c1/cancel", Access("write", "delete", "crawlsites", "trigger", deferred=True)),
        ("GET", "/openapi.json", Access("read", "get", path="/openapi.json")),
        ("GET", "/metrics", Access("read", "get", path="/metrics")),
        # Not a route today: admin for keys, its own non-resource URL for RBAC.
        ("POST", "/sites/ns/docs", Access("admin", "post", path="/sites/ns/docs")),
        ("DELETE", "/everything", Access("admin", "delete", path="/everything")),
    ],
)
def test_each_request_maps_to_its_scope_and_rbac_attributes(method: str, path: str, expected: Access) -> None:
    assert request_access(method, path, metrics_public=False) == expected


def test_health_is_public_and_metrics_by_setting() -> None:
    assert request_access("GET", "/health/ready", metrics_public=False) is None
    assert request_access("GET", "/metrics", metrics_public=True) is None


def test_a_deferred_crawl_access_names_the_crawls_site() -> None:
    cancel = request_access("POST", "/crawls/c1/cancel", metrics_public=True)
    assert cancel is not None
    assert crawl_access(cancel, "team-a/docs") == Access("write", "delete", "crawlsites", "trigger", "team-a", "docs")


def test_the_cache_is_bounded_and_keeps_remembered_nones(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("kubecrawl.api.caching.time.monotonic", lambda: now[0])
    cache: TtlCache[str, int | None] = TtlCache(size=2, seconds=10)
    cache.put("a", 1)
    cache.put("refused", None)
    assert "refused" in cache
    assert cache.get("refused") is None
    cache.put("c", 3)  # full: the oldest goes
    assert "a" not in cache
    assert len(cache) == 2
    now[0] += 10
    assert "c" not in cache  # expired
    cache.put("zero", 0, seconds=0)  # a zero time to live remembers nothing
    assert "zero" not in cache
