"""The FastAPI application factory.

``create_app`` receives its settings, publisher and database (built in ``main()``; ``store/opening.py``), so the
same app runs on RabbitMQ + PostgreSQL (or MongoDB) in production and on the in-process broker + SQLite in the
embedded default.
Start-up fails fast: the database and the broker are awaited with backoff, then the process exits non-zero.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from kubecrawl import __version__
from kubecrawl.api import documenting, errors
from kubecrawl.api.auth import AuthMiddleware, RateLimiter
from kubecrawl.api.enqueuing import MetadataEnqueuer
from kubecrawl.api.limiting import BodyLimitMiddleware
from kubecrawl.api.observing import ObservingMiddleware
from kubecrawl.api.reviews import KubernetesReviews
from kubecrawl.api.routes import crawls, health, metadata, sites
from kubecrawl.api.serving import Lifecycle
from kubecrawl.broker.base import Publisher
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.store.connection import DatabaseConnection
from kubecrawl.store.opening import MongoDatabase, SqlDatabase, open_database

log = get_logger(__name__)


def framework_options() -> dict[str, Any]:
    """``FastAPI(…)`` options of every kubecrawl app (and of bench/publish.py's HTTP ceiling, to compare alike).

    FastAPI's native OpenTelemetry (0.16x) is off: kubecrawl observes with Prometheus and structlog
    (``api/observing.py``), and with it on every request looked up the global tracer, meter and logger providers
    (reading ``os.environ``), a few per cent of the API's CPU per ``POST /metadata`` (bench/publish.py).
    """
    if "telemetry" not in inspect.signature(FastAPI).parameters:  # FastAPI before native telemetry
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def create_app(
    settings: Settings, *, publisher: Publisher, database: SqlDatabase | MongoDatabase, manage_lifecycle: bool = True
) -> FastAPI:
    """Build the app. With ``manage_lifecycle`` the app starts and closes the publisher and the database."""
    kubernetes_auth = "kubernetes" in settings.auth

    # The database's connection state (readiness reads it); its watch runs while the app does.
    connection = DatabaseConnection(
        database.ping, backoff=settings.db_backoff(), check_interval=settings.db_check_interval_seconds
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await connection.connect()
        if manage_lifecycle:
            await publisher.start()
        if kubernetes_auth:  # in a cluster its ServiceAccount, else KUBECONFIG; fails the start-up without either
            app.state.reviews = await KubernetesReviews.connect(
                audience=settings.auth_audience, cache_seconds=settings.auth_cache_seconds
            )
        # Everything built so far (modules, the app, its routes, pools, connections) lives as long as the process:
        # out of the collector's sight it is no longer scanned by every full collection. Those scans of the
        # start-up heap were about a fifth of the API's CPU per POST /metadata under load (bench/publish.py).
        gc.freeze()
        log.info("api_started", version=__version__, auth=settings.auth)
        if settings.auth == "none":
            log.warning("api_auth_disabled", hint="anyone who reaches the API controls every site and crawl")
        try:
            yield
        finally:
            gc.unfreeze()  # a process that starts apps again (tests) collects the old ones
            if kubernetes_auth:
                await app.state.reviews.aclose()
            await connection.close()
            if manage_lifecycle:
                await publisher.close()
                await database.close()
            log.info("api_stopped")

    app = FastAPI(
        title="kubecrawl",
        version=__version__,
        summary="Web page metadata on demand and scheduled site crawls",
        lifespan=lifespan,
        generate_unique_id_function=documenting.operation_id,
        **framework_options(),
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.database = database
    app.state.connection = connection
    app.state.lifecycle = Lifecycle()  # the SIGTERM drain (api/serving.py)
    stores = database.stores
    app.state.pages = stores.pages
    app.state.enqueuer = MetadataEnqueuer(stores.pages, publisher)
    app.state.sites = stores.sites
    app.state.crawls = stores.crawls
    app.state.subscribers = crawls.Subscribers(
        per_crawl=settings.sse_max_subscribers_per_crawl, total=settings.sse_max_subscribers
    )
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)  # inside the observer
    if settings.auth != "none":  # outside the body limit: strangers are answered before any body is read
        app.add_middleware(
            AuthMiddleware,
            keys=database.keys if "api_keys" in settings.auth else None,
            kubernetes=kubernetes_auth,
            limiter=RateLimiter(rate=settings.auth_rate_limit_per_second, burst=settings.auth_rate_limit_burst)
            if settings.auth_rate_limit_per_second > 0
            else None,
            cache_seconds=settings.auth_cache_seconds,
            metrics_public=not settings.metrics_require_auth,
        )
    app.add_middleware(ObservingMiddleware)
    metadata.add_post_route(app)  # first: the hot route is matched before anything else
    app.include_router(metadata.router)
    app.include_router(health.router)
    app.include_router(sites.router)
    app.include_router(crawls.router)
    documenting.install(app, settings, extra_models=crawls.EVENT_MODELS)
    return app


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document the API serves with ``settings``, built without connecting to anything
    (``kubecrawl openapi``, which ``scripts/openapi`` writes to docs/openapi.json)."""
    publisher = RabbitPublisher.from_settings(settings, connection_name="kubecrawl-openapi")
    app = create_app(settings, publisher=publisher, database=open_database(settings.database_url.get_secret_value()))
    return app.openapi()
