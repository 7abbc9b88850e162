"""The private-network guard turned back on for tests whose sites live on loopback.

``GUARDED`` is the production default, ``OPEN`` lifts the guard, and ``INTRANET`` opens exactly 127.0.0.2 (the
"allowed host" SSRF tests redirect from) while 127.0.0.1 stays refused. The fixtures are a pytest plugin
(``pytest_plugins`` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.core.urls import TargetPolicy
from tests.support.polling import eventually
from tests.support.sites import Site

OPEN = TargetPolicy(allow_private=True)
GUARDED = TargetPolicy()
ALLOWED_HOST = "127.0.0.2"  # a second loopback address; Linux routes all of 127.0.0.0/8 to lo
INTRANET = TargetPolicy(allowed_networks=(ipaddress.ip_network(f"{ALLOWED_HOST}/32"),))


@pytest.fixture
async def allowed_site() -> AsyncIterator[Site]:
    """A site on 127.0.0.2, the one private address ``INTRANET`` lets a fetch reach."""
    s = Site(host=ALLOWED_HOST)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def guarded_settings(settings: Settings) -> Settings:
    """The session's settings with the guard back on, 127.0.0.2 opened as an intranet range."""
    return settings.model_copy(
        update={"allow_private_targets": False, "allowed_private_networks": list(INTRANET.allowed_networks)}
    )


@pytest.fixture
async def guarded_worker(guarded_settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """An in-process worker (the code of `kubecrawl worker`) with the guard on."""
    from kubecrawl.worker.runtime import run_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(guarded_settings, stop=stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, 30)


async def final_record(client: httpx.AsyncClient, url: str, worker: asyncio.Task[None]) -> dict[str, Any]:
    """Poll GET /metadata until the record is final; a worker that died is reported at once, not as a timeout."""

    async def final() -> dict[str, Any] | None:
        if worker.done():
            worker.result()  # re-raises the worker's own error
            raise AssertionError("the worker stopped before the record was final")
        response = await client.get("/metadata", params={"url": url, "include_source": "false"})
        return response.json() if response.status_code == 200 else None

    return await eventually(final, timeout=60, what=f"final record for {url}")
