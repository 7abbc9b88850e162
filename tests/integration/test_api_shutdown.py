"""SIGTERM of a real `kubecrawl api` process (api/serving.py, docs/api.md "Shutdown"), with a request in flight
and an event stream open: readiness fails first while everything is still served, then the server stops
accepting, the stream ends, the request in flight is answered, and the process exits 0. Real RabbitMQ and
PostgreSQL; no worker, so the crawl stays active and its stream open."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from kubecrawl.core.settings import Settings
from tests.support.apiprocess import ApiProcess, logged_events
from tests.support.environment import env_for
from tests.support.polling import eventually


async def test_sigterm_fails_readiness_first_answers_what_is_in_flight_ends_streams_and_exits_0(
    settings: Settings, tmp_path: Path
) -> None:
    # A delay far longer than the test: the second SIGTERM below ends it, so nothing depends on the clock.
    env = env_for(settings) | {"KUBECRAWL_API_SHUTDOWN_DELAY_SECONDS": "300", "KUBECRAWL_LOG_LEVEL": "INFO"}
    api = ApiProcess(env, tmp_path / "api.log")
    try:
        await api.wait_ready()
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            assert (await client.put("/sites/default/s", json={"url": "https://example.com/"})).status_code == 201
            crawl = (await client.post("/sites/default/s/crawls", json={})).json()

            events: list[str] = []
            streaming = asyncio.Event()

            async def stream() -> None:
                async with client.stream("GET", f"/crawls/{crawl['id']}/events") as response:
                    async for line in response.aiter_lines():
                        events.append(line)
                        streaming.set()

            sent, release = asyncio.Event(), asyncio.Event()

            async def slow_body() -> AsyncIterator[bytes]:
                yield b'{"url": "https://example.com/in-flight"'
                sent.set()  # the first chunk is on the wire: the request is in flight
                await release.wait()
                yield b"}"

            streamer = asyncio.create_task(stream())
            posting = asyncio.create_task(
                client.post("/metadata", content=slow_body(), headers={"content-type": "application/json"})
            )
            await streaming.wait()
            await sent.wait()

            api.proc.send_signal(signal.SIGTERM)

            async def not_ready() -> dict[str, object] | None:
                answer = await client.get("/health/ready")
                return answer.json() if answer.status_code == 503 else None

            body = await eventually(not_ready, timeout=30, what="readiness 503 after SIGTERM")
            assert "shutting_down" in str(body["reason"])
            # Still serving while the endpoints catch up: a new request on a new connection is answered.
            async with httpx.AsyncClient(base_url=api.url) as fresh:
                assert (await fresh.post("/metadata", json={"url": "https://example.com/during"})).status_code == 202
            assert not streamer.done()

            api.proc.send_signal(signal.SIGTERM)  # the second signal skips the rest of the delay

            async def refused() -> bool:
                try:
                    async with httpx.AsyncClient(base_url=api.url) as fresh:
                        await fresh.get("/health/live")
                except httpx.ConnectError:
                    return True
                return False

            await eventually(refused, timeout=30, what="the listener closed")
            async with asyncio.timeout(30):  # a deadline against a hang: the stream ends at its next poll
                await streamer
            assert any(line.startswith("event: progress") for line in events)

            release.set()
            answered = await posting
            assert answered.status_code == 202, answered.text
            assert answered.json()["url"] == "https://example.com/in-flight"

        assert await asyncio.to_thread(api.proc.wait, 60) == 0
        logged = logged_events(api.log_path)
        order = [logged.index(name) for name in ("api_draining", "api_stopping", "publisher_shutdown", "api_stopped")]
        assert order == sorted(order)
    finally:
        if api.proc.poll() is None:
            api.close()


async def test_standalone_drains_on_sigterm_exits_0_and_ctrl_c_skips_the_delay(tmp_path: Path) -> None:
    """`kubecrawl standalone` serves the same way (it exited 143 once uvicorn re-raised the signal)."""
    env = dict(os.environ) | {"KUBECRAWL_API_SHUTDOWN_DELAY_SECONDS": "300", "KUBECRAWL_LOG_LEVEL": "INFO"}
    for sig in (signal.SIGTERM, signal.SIGINT):
        api = ApiProcess(env, tmp_path / f"{sig.name}.log", role=("standalone", "--db", str(tmp_path / "k.db")))
        try:
            await api.wait_ready()
            api.proc.send_signal(sig)
            if sig == signal.SIGTERM:  # draining: not ready, still serving, until a second signal
                async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:

                    async def not_ready() -> bool:
                        return (await client.get("/health/ready")).status_code == 503

                    await eventually(not_ready, timeout=30, what="readiness 503 after SIGTERM")
                    assert (await client.get("/health/live")).status_code == 200
                api.proc.send_signal(sig)
            # SIGINT: no second signal; a 300 s delay would outlast the wait below.
            assert await asyncio.to_thread(api.proc.wait, 60) == 0
            assert "api_stopped" in logged_events(api.log_path)
        finally:
            if api.proc.poll() is None:
                api.close()
