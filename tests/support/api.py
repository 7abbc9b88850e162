"""The API app in-process with its real publisher and database, started and stopped like a process would be."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from kubecrawl.api.app import create_app
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.core.settings import Settings
from kubecrawl.store.opening import open_database


@dataclass
class ApiHandle:
    app: FastAPI
    client: httpx.AsyncClient
    publisher: RabbitPublisher


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[ApiHandle]:
    """The API app with its real publisher and database, started and stopped like a process would."""
    database = open_database(settings.database_url.get_secret_value())
    publisher = RabbitPublisher.from_settings(settings, connection_name="kubecrawl-publisher")
    app = create_app(settings, publisher=publisher, database=database)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client,
    ):
        yield ApiHandle(app, client, publisher)
