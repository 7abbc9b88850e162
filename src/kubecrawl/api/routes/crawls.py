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
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from kubecrawl.api.auth import may_reach
from kubecrawl.api.deps import CrawlsDep
from kubecrawl.api.documenting import errors
from kubecrawl.core.errors import Forbidden, NotFound, PermanentError, TooManyRequests
from kubecrawl.core.models import FINAL_CRAWL_STATES, Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.store.contract import CrawlStore

router = APIRouter(tags=["crawls"])
# Progress must reach clients within 1 s of a page outcome; polling twice a second leaves room for the write.
POLL_SECONDS = 0.5
# Comment lines keep proxies (and clients) from timing out an idle stream.
KEEPALIVE_SECONDS = 15.0
# Outcomes listed per event; a resume after a long gap sends several events back to back.
OUTCOMES_PER_EVENT = 500
# Crawl ids are UUIDs; anything printable up to 64 characters gets its 404, anything else a 400.
CrawlId = Annotated[str, Path(pattern=r"^[\x21-\x7e]{1,64}$")]
# Cursors and event ids are database row ids and versions: BIGINT.
_MAX_BIGINT = 2**63 - 1


def _counter(value: str, *, what: str, code: str) -> int:
    """A non-negative BIGINT written in ASCII digits, else 400 ``code`` (``str.isdigit`` also takes '²', which
    ``int()`` refuses, and a 30-digit number would overflow the database's column)."""
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(_MAX_BIGINT))) or int(value) > _MAX_BIGINT:
        raise PermanentError(f"{what} must be a number from a previous answer", code=code)
    return int(value)


class CrawlPages(BaseModel):
    items: list[CrawlPage]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")


class Outcome(BaseModel):
    """One page's outcome in a ``progress`` event."""

    seq: int | None
    url: str
    state: CrawlPageState
    http_status: int | None
    changed: bool | None
    error_code: str | None


class Progress(BaseModel):
    """The data of a ``progress`` event: the crawl's counters and the outcomes since the previous event."""

    id: str
    state: CrawlState
    counters: CrawlCounters
    in_flight: int
    pages: list[Outcome]


# The data of each event of GET /crawls/{crawl_id}/events, added to the document's components.
EVENT_MODELS: tuple[type[BaseModel], ...] = (Progress, Crawl)


def _event_schema(names: list[str], model: str) -> dict[str, Any]:
    """One kind of event as a parsed SSE event (``event``, ``id``, ``data``), its ``data`` a JSON document of
    ``model``: the shape OpenAPI 3.2 gives ``itemSchema``, and what a 3.1 ``schema`` of ``text/event-stream``
    describes to tools that validate streams (schemathesis)."""
    return {
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"enum": names},
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the crawl's version"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{model}"},
            },
        },
    }


_EVENT_SCHEMA = {
    "oneOf": [_event_schema(["progress"], "Progress"), _event_schema(["completed", "failed", "cancelled"], "Crawl")]
}
_NOT_FOUND = errors(
    bad_request=("invalid_request",), not_found=("crawl_not_found",), unavailable=("database_unavailable",)
)


async def _crawl(crawls: CrawlStore, crawl_id: str, request: Request | None = None) -> Crawl:
    """The crawl, or 404 (also to a caller who may not read the crawl's site: a key limited to other namespaces,
    a ServiceAccount without RBAC on the CrawlSite, ``api/auth.py``); 403 to one who may read it but not do
    what it asks (cancel)."""
    crawl = await crawls.get(crawl_id)
    if crawl is None or (request is not None and not await may_reach(request, crawl.site, read=True)):
        raise NotFound(f"crawl {crawl_id} not found", code="crawl_not_found")
    if request is not None and not await may_reach(request, crawl.site):
        raise Forbidden(f"may not do {request.method} on crawls of site {crawl.site}")
    return crawl


@router.get("/crawls/{crawl_id}", response_model=Crawl, responses=_NOT_FOUND)
async def get_crawl(crawl_id: CrawlId, crawls: CrawlsDep, request: Request) -> JSONResponse:
    return JSONResponse((await _crawl(crawls, crawl_id, request)).model_dump(mode="json"))


@router.get(
    "/crawls/{crawl_id}/pages",
    response_model=CrawlPages,
    responses={**_NOT_FOUND, **errors(bad_request=("invalid_request", "invalid_cursor"))},
)
async def crawl_pages(
    crawl_id: CrawlId,
    crawls: CrawlsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="from the previous page's next_cursor")] = None,
    state: Annotated[CrawlPageState | None, Query()] = None,
    changed: Annotated[bool | None, Query()] = None,
    *,
    request: Request,
) -> JSONResponse:
    await _crawl(crawls, crawl_id, request)
    after = _counter(cursor, what="cursor", code="invalid_cursor") if cursor else 0
    items = await crawls.pages(crawl_id, limit=limit, after_id=after, state=state, changed=changed)
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return JSONResponse({"items": [item.model_dump(mode="json") for item in items], "next_cursor": next_cursor})


@router.post("/crawls/{crawl_id}/cancel", response_model=Crawl, responses=_NOT_FOUND)
async def cancel_crawl(crawl_id: CrawlId, crawls: CrawlsDep, request: Request) -> JSONResponse:
    await _crawl(crawls, crawl_id, request)
    crawl = await crawls.cancel(crawl_id)
    if crawl is None:
        raise NotFound(f"crawl {crawl_id} not found", code="crawl_not_found")
    return JSONResponse(crawl.model_dump(mode="json"))


class Subscribers:
    """Open event streams, capped per crawl and in total: each stream polls the database twice a second, so 300
    idle subscribers took 0.6 of a core (issue 12). Past a cap the answer is 429 ``too_many_subscribers``."""

    def __init__(self, *, per_crawl: int, total: int) -> None:
        self.per_crawl = per_crawl
        self.total = total
        self._open: Counter[str] = Counter()

    def hold(self, crawl_id: str) -> _Hold:
        if sum(self._open.values()) >= self.total:
            raise TooManyRequests(f"{self.total} event streams are open on this replica", code="too_many_subscribers")
        if self._open[crawl_id] >= self.per_crawl:
            raise TooManyRequests(
                f"{self.per_crawl} event streams are open for this crawl", code="too_many_subscribers"
            )
        self._open[crawl_id] += 1
        return _Hold(self._open, crawl_id)


class _Hold:
    def __init__(self, open_: Counter[str], crawl_id: str) -> None:
        self._open = open_
        self._crawl_id = crawl_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._open[self._crawl_id] -= 1
            if self._open[self._crawl_id] <= 0:
                del self._open[self._crawl_id]


def _event(name: str, event_id: int, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _final_name(crawl: Crawl) -> str:
    return crawl.state.value.lower()  # completed | failed | cancelled


@router.get(
    "/crawls/{crawl_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: `progress` while the crawl runs (data: Progress), then one of "
            "`completed`, `failed`, `cancelled` (data: Crawl) and the end of the stream. Event ids are the "
            "crawl's version; send the last one as Last-Event-ID to resume. The schema describes one event.",
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
        },
        **_NOT_FOUND,
        **errors(bad_request=("invalid_request", "invalid_last_event_id"), too_many=("too_many_subscribers",)),
    },
)
async def crawl_events(
    crawl_id: CrawlId,
    request: Request,
    crawls: CrawlsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    start = _counter(last_event_id, what="Last-Event-ID", code="invalid_last_event_id") if last_event_id else -1
    crawl = await _crawl(crawls, crawl_id, request)
    subscribers: Subscribers = request.app.state.subscribers
    hold = subscribers.hold(crawl_id)

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _stream(crawls, request, crawl, start):
                yield chunk
        finally:
            hold.release()

    events = stream()
    # A stream never iterated (the client left before the answer began) runs no ``finally``: its slot is given
    # back when the generator is collected.
    weakref.finalize(events, hold.release)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(crawls: CrawlStore, request: Request, crawl: Crawl, start: int) -> AsyncIterator[str]:
    """The events of one subscriber (see the module docstring)."""
    crawl_id = crawl.id
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
        if await request.is_disconnected() or request.app.state.lifecycle.stopping:
            return  # stopping (SIGTERM, api/serving.py): the client resumes on another replica with Last-Event-ID
        await asyncio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
        current = await _crawl(crawls, crawl_id)


def _progress(crawl: Crawl, outcomes: list[CrawlPage]) -> dict[str, Any]:
    return Progress(
        id=crawl.id,
        state=crawl.state,
        counters=crawl.counters,
        in_flight=crawl.in_flight,
        pages=[Outcome.model_validate(page, from_attributes=True) for page in outcomes],
    ).model_dump(mode="json")
