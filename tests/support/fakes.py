"""The test doubles of the pure-logic unit tests, defined once: a publisher (with or without batches), the page
metadata store as the API's enqueuer and the worker's metadata pipeline see it, and the crawl store as the
worker's page pipeline sees it, and the operator's Kubernetes and broker edges (CronJobs, the API, a pool's
Deployment and queue).

Each records what it was asked and answers as the test configures it; none pretends to be a server (integration
tests use the real ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from kubecrawl.broker.base import Outgoing, PublisherState
from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.core.models import CrawlState
from kubecrawl.fetch.fetching import FetchResult
from kubecrawl.operator.pool.deciding import Observation
from kubecrawl.operator.pool.workloads import Pod, Scale, ScaleConflict
from kubecrawl.store.contract import AttemptStart, FinishResult, HostState, HostTurn, PageOutcome, PageRef, PageStart

Request = tuple[str, str]  # (url, request id), as the enqueuer records them


class FakePublisher:
    """Confirms every message unless ``error`` (raised by every publish) or ``refuse(message_id)`` says otherwise.

    ``published`` holds (routing key, headers) of each confirmed message, ``message_ids`` their ids. It has no
    ``publish_batch``: the enqueuer publishes one message after the other, as on the embedded in-process broker.
    """

    state = PublisherState.READY

    def __init__(
        self, error: Exception | None = None, *, refuse: Callable[[str], TransientError | None] = lambda _: None
    ) -> None:
        self.error = error
        self.refuse = refuse
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.message_ids: list[str] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        if self.error is not None:
            raise self.error
        refused = self.refuse(message_id)
        if refused is not None:
            raise refused
        self.published.append((routing_key, dict(headers or {})))
        self.message_ids.append(message_id)


class FakeBatchPublisher(FakePublisher):
    """``FakePublisher`` with ``publish_batch``, as ``RabbitPublisher`` has: ``batches`` holds each batch's ids."""

    def __init__(self, refuse: Callable[[str], TransientError | None] = lambda _: None) -> None:
        super().__init__(refuse=refuse)
        self.batches: list[list[str]] = []

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, **_: Any) -> None:
        raise AssertionError("a batch publisher is sent batches")

    async def publish_batch(
        self, routing_key: str, messages: Sequence[Outgoing], *, on_confirmed: Callable[[int], None] | None = None
    ) -> list[TransientError | None]:
        assert routing_key == "kubecrawl.metadata"
        self.batches.append([m.message_id for m in messages])
        outcomes = [self.refuse(m.message_id) for m in messages]
        for index, outcome in enumerate(outcomes):
            if outcome is None and on_confirmed is not None:
                on_confirmed(index)
        return outcomes


class FakeWriter:
    """The enqueuer's ``RequestWriter``: records each batch in its ``FakePages``; ``gate`` holds a write open."""

    def __init__(self, pages: FakePages) -> None:
        self.pages = pages
        self.closed = False

    async def record(self, batch: Sequence[Request]) -> None:
        self.pages.recorded.append(list(batch))
        if self.pages.gate is not None:
            await self.pages.gate.wait()
        if self.pages.record_error is not None:
            self.closed = True
            raise self.pages.record_error

    async def close(self) -> None:
        self.closed = True
        if self.pages.on_close is not None:
            await self.pages.on_close()


class FakePages:
    """The page metadata store: what the API's enqueuer writes and releases (``recorded``, ``released``), and
    what the worker's metadata pipeline begins (``start``: an ``AttemptStart``, or an exception to raise) and
    fails (``failed``)."""

    def __init__(self, start: AttemptStart | Exception | None = None) -> None:
        self.start = start
        self.failed: list[dict[str, Any]] = []
        self.recorded: list[list[Request]] = []
        self.released: list[list[Request]] = []
        self.writers: list[FakeWriter] = []
        self.gate: asyncio.Event | None = None
        self.record_error: Exception | None = None
        self.release_error: Exception | None = None
        self.on_close: Callable[[], Awaitable[None]] | None = None

    async def request_writer(self) -> FakeWriter:
        writer = FakeWriter(self)
        self.writers.append(writer)
        return writer

    async def release_requests(self, batch: Sequence[Request]) -> None:
        self.released.append(list(batch))
        if self.release_error is not None:
            raise self.release_error

    async def begin_attempt(self, url: str, request_id: str) -> AttemptStart:
        if self.start is None:
            raise AssertionError("this test's pages have no attempt to begin")
        if isinstance(self.start, Exception):
            raise self.start
        return self.start

    async def fail(self, url: str, request_id: str, **kwargs: Any) -> None:
        self.failed.append(kwargs)


class FakeHosts:
    """A crawl store's hosts: robots.txt already known (``robots_txt``, None: none), no spacing to wait for,
    pauses recorded; a turn is refused ``busy`` times (another worker holds the host), then given; every ask,
    turn and release is recorded in ``turns`` as ("busy"|"take"|"release", host)."""

    def __init__(self, robots_txt: str | None = None, *, busy: int = 0) -> None:
        self.robots_txt = robots_txt
        self.paused: list[tuple[str, str]] = []
        self.busy = busy
        self.turns: list[tuple[str, str]] = []

    async def claim_robots(self, crawl_id: str, host: str, *, lease: timedelta) -> tuple[bool, HostState]:
        return False, HostState("READY", self.robots_txt)

    async def reserve_slot(self, crawl_id: str, host: str, *, hold: timedelta) -> HostTurn | None:
        if self.busy:
            self.busy -= 1
            self.turns.append(("busy", host))
            return None
        self.turns.append(("take", host))
        return HostTurn(0.0, utcnow() + hold)

    async def release_slot(self, crawl_id: str, host: str, turn: HostTurn, spacing: float) -> None:
        self.turns.append(("release", host))

    async def pause(self, crawl_id: str, host: str, until: datetime) -> None:
        self.paused.append((crawl_id, host))


class FakeCrawls:
    """The crawl store as the page pipeline sees it: ``start`` is what ``begin_page`` answers; the steps taken
    are recorded (``retried``: (page, code, error); ``finished``: the outcomes written)."""

    def __init__(self, start: PageStart | None) -> None:
        self.start = start
        self.hosts = FakeHosts()
        self.retried: list[tuple[int, str, str]] = []
        self.finished: list[PageOutcome] = []
        self.released: list[PageRef] = []

    async def begin_page(self, crawl_id: str, page_id: int) -> PageStart | None:
        return self.start

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        self.retried.append((page_id, code, error))

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        self.finished.append(outcome)
        return FinishResult(to_publish=[], crawl_state=CrawlState.RUNNING, completed_now=False)

    async def release(self, crawl_id: str, refs: Sequence[PageRef]) -> None:
        self.released.extend(refs)


class FakeDelivery:
    """One received message; ``settled`` lists how it was settled (``ack``, ``reject``, ``requeue``)."""

    redelivered = False

    def __init__(self, body: bytes, *, queue: str, message_id: str = "m1") -> None:
        self.body = body
        self.queue = queue
        self.message_id = message_id
        self.headers: Mapping[str, Any] = {}
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def reject(self, *, requeue: bool = False) -> None:
        self.settled.append("requeue" if requeue else "reject")


class FakeFetcher:
    """Answers every fetch with ``answer`` (a ``FetchResult``), or raises it (an exception); counts the calls."""

    def __init__(self, answer: FetchResult | Exception) -> None:
        self.answer = answer
        self.calls = 0

    async def fetch(self, url: str, **_: Any) -> FetchResult:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class FakeCronJobs:
    """The operator's CronJobs as a dict: server-side apply bumps ``resourceVersion`` only when the manifest
    changed, as the API server does; ``error`` is raised by every call while set."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: Exception | None = None
        self._version = 0

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return self.objects.get((namespace, name))

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self._check()
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        existing = self.objects.get(key)
        if existing is not None and existing["spec"] == manifest["spec"]:
            return existing
        self._version += 1
        uid = existing["metadata"]["uid"] if existing is not None else f"cronjob-{self._version}"
        stored = {**manifest, "metadata": {**meta, "uid": uid, "resourceVersion": str(self._version)}}
        self.objects[key] = stored
        return stored

    async def delete(self, namespace: str, name: str, uid: str) -> bool:
        self._check()
        existing = self.objects.get((namespace, name))
        if existing is None or existing["metadata"]["uid"] != uid:
            return False
        del self.objects[namespace, name]
        return True


class FakeSiteApi:
    """The kubecrawl API as the operator calls it: ``sites`` holds the specs put; ``error`` is raised while set;
    ``crawls`` is what ``latest_crawl`` answers per site."""

    def __init__(self) -> None:
        self.sites: dict[tuple[str, str], dict[str, Any]] = {}
        self.crawls: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: Exception | None = None

    async def put_site(self, namespace: str, name: str, spec: dict[str, Any]) -> bool:
        if self.error is not None:
            raise self.error
        created = (namespace, name) not in self.sites
        self.sites[namespace, name] = spec
        return created

    async def has_site(self, namespace: str, name: str) -> bool:
        if self.error is not None:
            raise self.error
        return (namespace, name) in self.sites

    async def latest_crawl(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return self.crawls.get((namespace, name))


class FakeWorkloads:
    """A pool's Deployment as the scaler sees it: ``scale`` (None: no Deployment), the writes of ``/scale``
    (``writes``; ``conflicts`` of them answered 409 first), the status patches and the pods' deletion costs."""

    def __init__(self, scale: Scale | None, pods: list[Pod] | None = None) -> None:
        self.scale = scale
        self.pods_ = pods or []
        self.writes: list[int] = []
        self.conflicts = 0
        self.statuses: list[dict[str, Any]] = []
        self.costs: list[dict[str, str]] = []
        self.autoscalers: list[str] = []

    async def read_scale(self, namespace: str, deployment: str) -> Scale | None:
        return self.scale

    async def write_replicas(self, namespace: str, deployment: str, replicas: int, resource_version: str) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ScaleConflict("the scale changed since it was read")
        self.writes.append(replicas)
        if self.scale is not None:
            self.scale = Scale(replicas, self.scale.selector, str(int(self.scale.resource_version) + 1))

    async def pods(self, namespace: str, selector: str) -> list[Pod]:
        return self.pods_

    async def set_deletion_costs(self, namespace: str, costs: dict[str, str]) -> None:
        self.costs.append(costs)

    async def scaled_objects(self, namespace: str, deployment: str) -> list[str]:
        return self.autoscalers

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        self.statuses.append(patch)
        return True


class FakeProbe:
    """The broker as the scaler reads it: ``observation`` each poll, or ``error`` (``MetricsUnavailable``)."""

    knows_unacked = False

    def __init__(self, observation: Observation | None = None, error: Exception | None = None) -> None:
        self.observation = observation
        self.error = error

    async def observe(self, queue: str, pods: set[str]) -> Observation:
        if self.error is not None:
            raise self.error
        assert self.observation is not None
        return self.observation


class FakeCrawlSites:
    """Writes to CrawlSites outside kopf's handlers, recorded: status patches, resync requests, Events."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.resyncs: list[str] = []
        self.events: list[tuple[str, Any]] = []

    async def post_event(self, site: Any, event: Any) -> None:
        self.events.append((site.name, event))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        self.patches.append((name, patch))
        return True

    async def request_resync(self, namespace: str, name: str, reason: str) -> bool:
        self.resyncs.append(name)
        return True
