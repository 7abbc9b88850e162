"""The worker's HTTP port: ``/metrics``, ``/health/live`` and ``/health/ready``, served on the worker's own event
loop (aiohttp), not on a thread of its own.

That is what makes liveness true: a worker whose event loop is blocked (a runaway regex, a synchronous call that
never returns) consumes nothing, and a probe answered by a helper thread would call it alive for ever. Here the
probe cannot be answered until the loop runs again, so the kubelet's liveness timeout restarts the container.

Readiness: the consumer is connected and consuming, the publisher (retries, crawl links) is READY, and the database
answers a ping. A worker that is not ready keeps running and reconnecting; readiness only tells rollouts (and
people) that it is not working right now.
"""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubecrawl.broker.base import Publisher, PublisherState
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.logging import get_logger
from kubecrawl.store.opening import Database

log = get_logger(__name__)


class Consumer(Protocol):
    @property
    def consuming(self) -> bool: ...


class WorkerProbes:
    def __init__(self, consumer: Consumer, publisher: Publisher, database: Database) -> None:
        self._consumer = consumer
        self._publisher = publisher
        self._database = database
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        self._app = app

    async def start(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104  # probed from the node
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("worker_probes_listening", port=port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def live(self, _: web.Request) -> web.Response:
        # Answering at all is the proof: this handler runs on the loop that does the work.
        return web.json_response({"status": "ok", "time": time.time()})

    async def ready(self, _: web.Request) -> web.Response:
        reasons: dict[str, str] = {}
        if not self._consumer.consuming:
            reasons["consumer_not_consuming"] = "the consumer is not connected or not consuming"
        if self._publisher.state is not PublisherState.READY:
            reasons["publisher_not_ready"] = f"publisher is {self._publisher.state}"
        try:
            await self._database.ping()
        except StoreUnavailable as exc:
            reasons["database_unavailable"] = exc.detail
        if reasons:
            reason = ",".join(reasons)
            log.warning("readiness_failed", reason=reason, detail=reasons)
            return web.json_response({"status": "unavailable", "reason": reason, "detail": reasons}, status=503)
        return web.json_response({"status": "ready"})
