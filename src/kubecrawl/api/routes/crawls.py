"""``/crawls/{id}``: state and counters, paginated page results, cancel, and live progress over SSE.

SSE: event ids are the crawl's ``version`` (bumped on every page outcome). The stream polls the database
(``POLL_SECONDS``), so any API replica can serve any crawl and a restart loses nothing; one ``progress`` event
coalesces every outcome since the previous one. ``Last-Event-ID`` resumes: the pages finished after that
version are sent first. A finished crawl's stream sends its final event (``completed``/``failed``/
``cancelled``) and ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kubecrawl.api.deps import CrawlsDep
from kubecrawl.core.errors import NotFound, PermanentError
from kubecrawl.core.models import FINAL_CRAWL_STATES, Crawl, CrawlPageState
from kubecrawl.store.contract import CrawlStore

router = APIRouter(tags=["crawls"])
# Progress must reach clients within 1 s of a page outcome; polling twice a second leaves room for the write.
POLL_SECONDS = 0.5
# Comment lines keep proxies (and clients) from timing out an idle stream.
KEEPALIVE_SECONDS = 15.0
# Outcomes listed per event; a resume after a long gap sends several events back to back.
OUTCOMES_PER_EVENT = 500


async def _crawl(crawls: CrawlStore, crawl_id: str) -> Crawl:
    crawl = await crawls.get(crawl_id)
    if crawl is None:
        raise NotFound(f"crawl {crawl_id} not found", code="crawl_not_found")
    return crawl


@router.get("/crawls/{crawl_id}")
async def get_crawl(crawl_id: str, crawls: CrawlsDep) -> JSONResponse:
    return JSONResponse((await _crawl(crawls, crawl_id)).model_dump(mode="json"))


@router.get("/crawls/{crawl_id}/pages")
async def crawl_pages(
    crawl_id: str,
    crawls: CrawlsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="from the previous page's next_cursor")] = None,
    state: Annotated[CrawlPageState | None, Query()] = None,
    changed: Annotated[bool | None, Query()] = None,
) -> dict[str, Any]:
    await _crawl(crawls, crawl_id)
    after = 0
    if cursor:
        if not cursor.isdigit():
            raise PermanentError("cursor must come from next_cursor", code="invalid_cursor")
        after = int(cursor)
    items = await crawls.pages(crawl_id, limit=limit, after_id=after, state=state, changed=changed)
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return {"items": [item.model_dump(mode="json") for item in items], "next_cursor": next_cursor}


@router.post("/crawls/{crawl_id}/cancel")
async def cancel_crawl(crawl_id: str, crawls: CrawlsDep) -> JSONResponse:
    crawl = await crawls.cancel(crawl_id)
    if crawl is None:
        raise NotFound(f"crawl {crawl_id} not found", code="crawl_not_found")
    return JSONResponse(crawl.model_dump(mode="json"))


def _event(name: str, event_id: int, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _final_name(crawl: Crawl) -> str:
    return crawl.state.value.lower()  # completed | failed | cancelled


@router.get("/crawls/{crawl_id}/events")
async def crawl_events(
    crawl_id: str,
    request: Request,
    crawls: CrawlsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    crawl = await _crawl(crawls, crawl_id)
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1

    async def stream() -> AsyncIterator[str]:
        current, seen, idle = crawl, start, 0.0
        yield "retry: 1000\n\n"
        if seen < 0:  # a fresh subscriber gets a snapshot, then every outcome after it
            if current.state in FINAL_CRAWL_STATES:
                yield _event(_final_name(current), current.version, current.model_dump(mode="json"))
                return
            yield _event("progress", current.version, _progress(current, []))
            seen = current.version
        while True:
            if current.version > seen:
                fetched = await crawls.outcomes_since(crawl_id, seen, limit=OUTCOMES_PER_EVENT)
                # Only the outcomes up to the snapshot's version: pages that finished after ``current`` was read
                # belong to a later event (whose id covers them), else they would be streamed twice.
                outcomes = [page for page in fetched if page.seq is not None and page.seq <= current.version]
                chunked = len(outcomes) == OUTCOMES_PER_EVENT and outcomes[-1].seq != current.version
                seen = outcomes[-1].seq or seen if chunked else current.version
                yield _event("progress", seen, _progress(current, outcomes))
                idle = 0.0
                if chunked:
                    continue
            if current.state in FINAL_CRAWL_STATES:
                yield _event(_final_name(current), current.version, current.model_dump(mode="json"))
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"
            current = await _crawl(crawls, crawl_id)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _progress(crawl: Crawl, outcomes: list[Any]) -> dict[str, Any]:
    return {
        "id": crawl.id,
        "state": crawl.state.value,
        "counters": crawl.counters.model_dump(),
        "in_flight": crawl.in_flight,
        "pages": [
            {
                "seq": page.seq,
                "url": page.url,
                "state": page.state.value,
                "http_status": page.http_status,
                "changed": page.changed,
                "error_code": page.error_code,
            }
            for page in outcomes
        ],
    }
