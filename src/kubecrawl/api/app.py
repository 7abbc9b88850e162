"""The FastAPI application factory.

``create_app`` receives its settings, publisher and engine (built in ``main()``), so the same app runs on
RabbitMQ + PostgreSQL in production and on the in-process broker + SQLite in the embedded default.
Start-up fails fast: the database and the broker are awaited with backoff, then the process exits non-zero.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl import __version__
from kubecrawl.api import errors
from kubecrawl.api.observing import ObservingMiddleware
from kubecrawl.api.routes import crawls, health, metadata, sites
from kubecrawl.broker.base import Publisher
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.store.crawls import CrawlStore
from kubecrawl.store.database import connect_with_backoff
from kubecrawl.store.pages import PageStore
from kubecrawl.store.sites import SiteStore

log = get_logger(__name__)


def create_app(
    settings: Settings, *, publisher: Publisher, engine: AsyncEngine, manage_lifecycle: bool = True
) -> FastAPI:
    """Build the app. With ``manage_lifecycle`` the app starts and closes the publisher and the engine."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await connect_with_backoff(engine, attempts=settings.db_connect_attempts)
            await publisher.start()
        log.info("api_started", version=__version__)
        try:
            yield
        finally:
            if manage_lifecycle:
                await publisher.close()
                await engine.dispose()
            log.info("api_stopped")

    app = FastAPI(
        title="kubecrawl",
        version=__version__,
        summary="Web page metadata on demand and scheduled site crawls",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.engine = engine
    app.state.pages = PageStore(engine)
    app.state.sites = SiteStore(engine)
    app.state.crawls = CrawlStore(engine)
    errors.install(app)
    app.add_middleware(ObservingMiddleware)
    app.include_router(health.router)
    app.include_router(metadata.router)
    app.include_router(sites.router)
    app.include_router(crawls.router)
    return app
