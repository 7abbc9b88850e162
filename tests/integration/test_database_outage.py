"""Readiness tells the truth while PostgreSQL is down, for the API and the worker, and both reconnect on their own:
the database connection state machine (store/connection.py) against a real PostgreSQL stopped and started."""

from __future__ import annotations

import asyncio

import httpx
from structlog.testing import capture_logs

from kubecrawl.core.settings import Settings
from kubecrawl.worker.runtime import run_worker
from tests.support.api import running_api
from tests.support.polling import eventually
from tests.support.servers import PostgresServer, free_port


async def _answer(client: httpx.AsyncClient, path: str) -> httpx.Response | None:
    try:
        return await client.get(path)
    except httpx.TransportError:
        return None


def _gauge(metrics: str, state: str) -> float:
    prefix = f'kubecrawl_database_state{{state="{state}"}} '
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_database_stopped_makes_api_and_worker_unready_and_both_reconnect_when_it_is_back(
    settings: Settings, postgres: PostgresServer
) -> None:
    quick = settings.model_copy(update={"db_check_interval_seconds": 0.2})
    port = free_port()
    stop = asyncio.Event()
    async with (
        running_api(quick) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as worker,
    ):
        task = asyncio.create_task(run_worker(quick, metrics_port=port, stop=stop))
        try:

            async def both_ready() -> bool:
                answers = [await _answer(api.client, "/health/ready"), await _answer(worker, "/health/ready")]
                return all(a is not None and a.status_code == 200 for a in answers)

            await eventually(both_ready, timeout=60, what="API and worker ready")
            assert _gauge((await worker.get("/metrics")).text, "CONNECTED") == 1.0
            with capture_logs() as logs:
                postgres.halt()
                try:

                    async def unready(client: httpx.AsyncClient) -> httpx.Response | None:
                        answer = await _answer(client, "/health/ready")
                        return answer if answer is not None and answer.status_code == 503 else None

                    api_down = await eventually(lambda: unready(api.client), timeout=30, what="API not ready")
                    worker_down = await eventually(lambda: unready(worker), timeout=30, what="worker not ready")
                    assert "database_unavailable" in api_down.json()["reason"]
                    assert "database_unavailable" in worker_down.json()["reason"]
                    assert (await api.client.get("/health/live")).status_code == 200  # not ready, but alive
                    assert _gauge((await worker.get("/metrics")).text, "CONNECTED") == 0.0
                finally:
                    postgres.resume()
                await eventually(both_ready, timeout=60, what="API and worker ready again")
            events = [entry["event"] for entry in logs]
            for event in ("db_disconnected", "db_connect_attempt", "db_connect_failed", "db_connected"):
                assert event in events, event
            assert _gauge((await worker.get("/metrics")).text, "CONNECTED") == 1.0
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
