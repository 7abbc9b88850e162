"""``POST /metadata`` and ``GET /metadata?url=``: record in the store first, then publish; never fetch here.

``POST /metadata`` is the API's hot path (bench/publish.py). Its endpoint takes the ``Request`` and returns the
``Response`` itself (``PlainRoute``, registered on the app ahead of the routers by ``add_post_route``): it
reads its JSON body with orjson and hands the request to the ``MetadataEnqueuer`` (``api/enqueuing.py``), which
records and publishes concurrent requests in batches. FastAPI's body model, dependencies and handler cost more
CPU than the request's own work; the answers are the same (400 ``invalid_request`` for a body that is not a
JSON object), and the OpenAPI schema still shows the body and the 202.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from kubecrawl.api.deps import PagesDep, PublisherDep, RequestIdDep, SettingsDep
from kubecrawl.api.documenting import PUBLISH_CODES, URL_CODES, errors
from kubecrawl.api.enqueuing import MetadataEnqueuer
from kubecrawl.broker.base import Publisher
from kubecrawl.broker.tasks import publish_task
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.errors import InvalidUrl, PermanentError, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FINAL_PAGE_STATUSES, PageMetadataRecord, PageStatus
from kubecrawl.core.settings import Settings
from kubecrawl.core.urls import normalise_url
from kubecrawl.store.contract import PageMetadataStore

router = APIRouter(tags=["metadata"])
log = get_logger(__name__)
# A pending fetch older than this is assumed lost (its message purged) and may be published again.
STUCK_AFTER = timedelta(minutes=15)
# A GET miss that finds the row of a concurrent miss released (its publish failed) records the miss itself; each
# round means one more concurrent publish failed, so after a few the broker is refusing and the answer is 503.
MISS_ROUNDS = 3
# max_age bound: ten years is "any age"; far larger ones overflow the date arithmetic (issue 12: a 500).
MAX_AGE_SECONDS = 10 * 366 * 86_400


# A URL is refused as core/urls.py says, or as a target the guard blocks (docs/security.md).
_URL_CODES = (*URL_CODES, "blocked_target")
_UNAVAILABLE = (*PUBLISH_CODES, "database_unavailable")


class MetadataRequest(BaseModel):
    """The body of ``POST /metadata`` (its OpenAPI schema; the route validates the body itself, and refuses
    unknown fields with 400 ``invalid_request``, as every body of the API does)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the page to fetch, http or https", examples=["https://example.com/"])


class Queued(BaseModel):
    """The 202 answer of ``POST /metadata``, and of a ``GET /metadata`` miss."""

    status: PageStatus = PageStatus.QUEUED
    url: str
    request_id: str


class Pending(BaseModel):
    """The 202 answer of ``GET /metadata`` while a fetch is pending: a miss just queued (with ``request_id``) or
    one queued earlier (with ``attempts`` and ``last_error_code``)."""

    status: PageStatus
    url: str
    request_id: str | None = Field(default=None, description="of the fetch this request queued")
    attempts: int | None = None
    last_error_code: str | None = None


class Refresh(BaseModel):
    """A refresh of a stale record: queued (with its ``request_id``) or not (with the error ``code``)."""

    status: str = Field(description="QUEUED or FAILED")
    request_id: str | None = None
    code: str | None = None


class Metadata(PageMetadataRecord):
    """The 200 answer of ``GET /metadata``: the stored record (``page_source`` left out with
    ``include_source=false``), whether it is older than ``max_age``, and the refresh that caused."""

    stale: bool
    refresh: Refresh | None = None


def validated_url(raw: Any, settings: Settings) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidUrl("url is required", code="empty_url")
    if not isinstance(raw, str):
        raise InvalidUrl("url must be a string", code="invalid_url")
    url = normalise_url(raw)
    settings.target_policy().check_literal(url)
    return url


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or 400 ``invalid_request`` (FastAPI's answer to the same bodies)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not (
        media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        raise PermanentError("body must be JSON (Content-Type: application/json)", code="invalid_request")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise PermanentError(f"body is not valid JSON: {exc}", code="invalid_request") from exc
    if not isinstance(body, dict):
        raise PermanentError("body must be a JSON object", code="invalid_request")
    return body


async def _publish(pages: PageMetadataStore, publisher: Publisher, url: str, request_id: str) -> None:
    """Publish, and if that fails undo the store's record of it so nothing waits on a lost message."""
    try:
        await publish_task(publisher, MetadataTask(url=url, request_id=request_id))
    except TransientError:
        await pages.release_request(url, request_id)
        raise


class PlainRoute(APIRoute):
    """An ``APIRoute`` whose endpoint takes the ``Request`` and returns the ``Response`` itself.

    FastAPI's own handler around an endpoint (dependency solving, body reading and validation, response
    serialisation, telemetry hooks) cost more of the API's CPU than everything ``POST /metadata`` does itself,
    about 60 µs a request (bench/publish.py). The route is otherwise an ordinary one: documented in OpenAPI
    (``openapi_extra`` describes the body), served through FastAPI's exception handlers (``api/errors.py``).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


async def post_metadata(request: Request) -> Response:
    """Queue a fetch of one page: 202 once it is recorded in the database and confirmed by RabbitMQ."""
    state = request.app.state
    fields = await json_object(request)
    if len(fields) > 1 or (fields and "url" not in fields):  # the cheap test first: this is the hot path
        unknown = ", ".join(sorted(set(fields) - {"url"}))
        raise PermanentError(f"unknown fields: {unknown}", code="invalid_request")
    url = validated_url(fields.get("url"), state.settings)
    request_id: str = request.scope["state"]["request_id"]
    enqueuer: MetadataEnqueuer = state.enqueuer
    await enqueuer.enqueue(url, request_id)
    body = orjson.dumps({"status": PageStatus.QUEUED.value, "url": url, "request_id": request_id})
    return Response(body, 202, media_type="application/json")


def add_post_route(app: FastAPI) -> None:
    """Register ``POST /metadata`` on the app itself, ahead of the included routers.

    Matched first and directly: through ``include_router`` every request also paid FastAPI's included-router
    matching, about 20 µs (bench/publish.py).
    """
    app.router.add_api_route(
        "/metadata",
        post_metadata,
        methods=["POST"],
        status_code=202,
        response_model=Queued,
        responses=errors(
            bad_request=(*_URL_CODES, "invalid_request", "invalid_value"), too_large=True, unavailable=_UNAVAILABLE
        ),
        tags=["metadata"],
        summary="Queue a fetch of one page's metadata",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": MetadataRequest.model_json_schema()}},
            }
        },
        route_class_override=PlainRoute,
    )


@router.get(
    "/metadata",
    response_model=Metadata,
    responses={
        202: {"model": Pending, "description": "No final record yet: a fetch is queued or pending"},
        **errors(
            bad_request=(*_URL_CODES, "invalid_request", "invalid_value"),
            unavailable=(*_UNAVAILABLE, "publish_failed"),
        ),
    },
    summary="Read one page's metadata; a miss queues a fetch",
)
async def get_metadata(
    settings: SettingsDep,
    pages: PagesDep,
    publisher: PublisherDep,
    request_id: RequestIdDep,
    url: Annotated[str, Query(description="the page, http or https (normalised before use)")],
    max_age: Annotated[
        int | None, Query(ge=0, le=MAX_AGE_SECONDS, description="seconds; older records are refreshed")
    ] = None,
    include_source: Annotated[bool, Query(description="include the stored page source")] = True,
) -> JSONResponse:
    url = validated_url(url, settings)
    record = await pages.get(url)
    for _ in range(MISS_ROUNDS):
        if record is not None:
            break
        if await pages.enqueue_if_missing(url, request_id):
            await _publish(pages, publisher, url, request_id)
            return JSONResponse({"status": PageStatus.QUEUED.value, "url": url, "request_id": request_id}, 202)
        # Another request recorded the miss; if its publish failed it released the row again, and this request
        # must not answer QUEUED for a fetch nobody queued: it records and publishes the miss itself.
        record = await pages.get(url)
    if record is None:
        raise TransientError("concurrent requests for this url failed to publish; retry", code="publish_failed")
    now = datetime.now(UTC)
    if record.status in FINAL_PAGE_STATUSES:
        stale = max_age is not None and (
            record.fetched_at is None or record.fetched_at < now - timedelta(seconds=max_age)
        )
        body = record.model_dump(mode="json", exclude=None if include_source else {"page_source"})
        body["stale"] = stale
        if stale and await pages.request_refresh(
            url,
            request_id,
            stale_before=now - timedelta(seconds=max_age or 0),
            stuck_before=now - STUCK_AFTER,
        ):
            # Serve the stored record even if the refresh cannot be queued (stale-if-error): the caller
            # asked for data, and the refresh is retried by the next request.
            try:
                await _publish(pages, publisher, url, request_id)
                body["refresh"] = {"status": "QUEUED", "request_id": request_id}
            except TransientError as exc:
                body["refresh"] = {"status": "FAILED", "code": exc.code}
        return JSONResponse(body, 200)
    if await pages.request_refresh(url, request_id, stale_before=None, stuck_before=now - STUCK_AFTER):
        await _publish(pages, publisher, url, request_id)
    return JSONResponse(
        {
            "status": record.status.value,
            "url": url,
            "attempts": record.attempts,
            "last_error_code": record.last_error_code,
        },
        202,
    )
