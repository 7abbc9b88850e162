"""The worker's probes (`kubecrawl worker --metrics-port`) against real RabbitMQ and PostgreSQL: answered on the
worker's event loop, so a blocked loop fails liveness; readiness follows the consumer's connection."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import httpx
import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.worker.runtime import run_worker
from tests.support.polling import eventually
from tests.support.servers import RabbitServer, free_port


@pytest.fixture
async def probes(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, metrics_port=port, stop=stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        yield client
    stop.set()
    await asyncio.wait_for(task, 30)


async def status(client: httpx.AsyncClient, path: str) -> int:
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return 0


async def test_probes_and_metrics_are_served_once_the_worker_consumes(probes: httpx.AsyncClient) -> None:
    await eventually(lambda: _is(probes, "/health/ready", 200), timeout=60, what="worker ready")
    assert (await probes.get("/health/live")).json()["status"] == "ok"
    metrics = await probes.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "kubecrawl_fetch_response_bytes_total " in metrics.text  # this process's registry, label-free counter


async def test_liveness_is_not_answered_while_the_event_loop_is_blocked(probes: httpx.AsyncClient) -> None:
    await eventually(lambda: _is(probes, "/health/live", 200), timeout=60, what="worker live")
    url = str(probes.base_url.join("/health/live"))
    outcome: dict[str, object] = {}
    asked = threading.Event()

    def kubelet() -> None:  # a probe with a 1 s timeout, as the kubelet sends it, from outside the loop
        asked.set()
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                outcome["status"] = answer.status
        except (TimeoutError, urllib.error.URLError) as exc:
            outcome["error"] = repr(exc)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=kubelet)
    thread.start()
    asked.wait()
    time.sleep(2.5)  # on purpose: this blocks the worker's event loop (same loop as the test)
    await asyncio.to_thread(thread.join)
    assert "status" not in outcome, outcome  # a helper-thread server would have answered 200 here
    assert "timed out" in str(outcome["error"]), outcome
    assert await status(probes, "/health/live") == 200  # the loop runs again: alive again


async def test_readiness_fails_while_the_broker_is_down_and_recovers(
    probes: httpx.AsyncClient, rabbit: RabbitServer
) -> None:
    await eventually(lambda: _is(probes, "/health/ready", 200), timeout=60, what="worker ready")
    rabbit.stop_app()
    try:
        answer = await eventually(lambda: _answer_if(probes, "/health/ready", 503), timeout=60, what="not ready")
        assert "consumer_not_consuming" in answer.json()["reason"]
        assert await status(probes, "/health/live") == 200  # not ready, but alive: no restart for a broker outage
    finally:
        rabbit.start_app()
    await eventually(lambda: _is(probes, "/health/ready", 200), timeout=90, what="ready again")


async def _is(client: httpx.AsyncClient, path: str, code: int) -> bool:
    return await status(client, path) == code


async def _answer_if(client: httpx.AsyncClient, path: str, code: int) -> httpx.Response | None:
    try:
        answer = await client.get(path)
    except httpx.TransportError:
        return None
    return answer if answer.status_code == code else None
