"""``POST /metadata`` and ``GET /metadata?url=``: record in the store first, then publish; never fetch here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from kubecrawl.api.deps import PagesDep, PublisherDep, RequestIdDep, SettingsDep
from kubecrawl.broker.tasks import publish_task
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.errors import InvalidUrl, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FINAL_PAGE_STATUSES, PageStatus
from kubecrawl.core.settings import Settings
from kubecrawl.core.urls import normalise_url
from kubecrawl.store.pages import PageStore

router = APIRouter(tags=["metadata"])
log = get_logger(__name__)
# A pending fetch older than this is assumed lost (its message purged) and may be published again.
STUCK_AFTER = timedelta(minutes=15)


class MetadataRequest(BaseModel):
    url: Any = None


def validated_url(raw: Any, settings: Settings) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidUrl("url is required", code="empty_url")
    if not isinstance(raw, str):
        raise InvalidUrl("url must be a string", code="invalid_url")
    url = normalise_url(raw)
    settings.target_policy().check_literal(url)
    return url


async def _publish(pages: PageStore, publisher: PublisherDep, url: str, request_id: str) -> None:
    """Publish, and if that fails undo the store's record of it so nothing waits on a lost message."""
    try:
        await publish_task(publisher, MetadataTask(url=url, request_id=request_id))
    except TransientError:
        await pages.release_request(url, request_id)
        raise


@router.post("/metadata", status_code=202)
async def post_metadata(
    body: MetadataRequest,
    settings: SettingsDep,
    pages: PagesDep,
    publisher: PublisherDep,
    request_id: RequestIdDep,
) -> JSONResponse:
    url = validated_url(body.url, settings)
    await pages.record_request(url, request_id)
    await _publish(pages, publisher, url, request_id)
    return JSONResponse({"status": PageStatus.QUEUED.value, "url": url, "request_id": request_id}, 202)


@router.get("/metadata")
async def get_metadata(
    settings: SettingsDep,
    pages: PagesDep,
    publisher: PublisherDep,
    request_id: RequestIdDep,
    url: Annotated[str | None, Query()] = None,
    max_age: Annotated[int | None, Query(ge=0, description="seconds; older records are refreshed")] = None,
    include_source: Annotated[bool, Query(description="include the stored page source")] = True,
) -> JSONResponse:
    url = validated_url(url, settings)
    record = await pages.get(url)
    if record is None:
        if await pages.enqueue_if_missing(url, request_id):
            await _publish(pages, publisher, url, request_id)
            return JSONResponse({"status": PageStatus.QUEUED.value, "url": url, "request_id": request_id}, 202)
        record = await pages.get(url)
        if record is None:  # deleted by a concurrent failed publish: report what the caller can retry
            return JSONResponse({"status": PageStatus.QUEUED.value, "url": url}, 202)
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
