"""The metadata pipeline: one message → fetch → extract → one atomic upsert → settle.

Error mapping to the queue lives here and only here:
- malformed message / unknown schema            → dead-letter ``invalid_message`` at once
- ``PermanentError`` (4xx, blocked target, …)    → FAILED_PERMANENT, dead-letter with the reason
- ``TransientError`` (DNS, connect, timeout, 5xx, 408, 429)
      attempts < max  → FAILED_RETRYABLE, republish through a delay tier (Retry-After honoured)
      attempts ≥ max  → FAILED_PERMANENT, dead-letter with the reason
- the database is unavailable                    → retry through a delay tier without counting an attempt
Attempts are counted in the database when processing starts, so a worker killed mid-message (redelivery)
counts too, and a message that keeps killing workers is still bounded.
"""

from __future__ import annotations

import hashlib
import time

from pydantic import ValidationError

from kubecrawl.broker.base import Delivery, Publisher
from kubecrawl.core import metrics
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FetchedPage
from kubecrawl.core.settings import RetrySettings
from kubecrawl.fetch.extracting import extract_metadata
from kubecrawl.fetch.fetching import Fetcher, FetchResult
from kubecrawl.fetch.retrying import response_error
from kubecrawl.store.contract import PageMetadataStore
from kubecrawl.store.database import database_errors, refused_value, store_error
from kubecrawl.worker.settling import dead_letter, handle_guarded, retry_database_unavailable, settle_failure

log = get_logger(__name__)


def fetched_page(result: FetchResult) -> FetchedPage:
    meta = extract_metadata(result.body, content_type=result.content_type, base_url=result.final_url)
    source = result.body.decode(meta.charset or "utf-8", errors="replace") if meta.is_html else None
    return FetchedPage(
        http_status=result.status_code,
        final_url=result.final_url,
        redirects=[{"url": hop.url, "status": hop.status, "location": hop.location} for hop in result.redirects],
        response_headers=[[name, value] for name, value in result.headers],
        cookies=[cookie.as_dict() for cookie in result.cookies],
        title=meta.title,
        description=meta.description,
        canonical=meta.canonical,
        language=meta.language,
        robots=meta.robots,
        opengraph=meta.opengraph,
        twitter=meta.twitter,
        content_type=result.content_type,
        content_length=result.content_length,
        content_hash=hashlib.sha256(result.body).hexdigest(),
        charset=meta.charset,
        body_bytes=result.body_bytes,
        truncated=result.truncated,
        page_source=source,
        timings=result.timings,
    )


class MetadataPipeline:
    def __init__(
        self, *, pages: PageMetadataStore, fetcher: Fetcher, publisher: Publisher, retry: RetrySettings
    ) -> None:
        self._pages = pages
        self._fetcher = fetcher
        self._publisher = publisher
        self._retry = retry

    async def handle(self, delivery: Delivery) -> None:
        await handle_guarded(delivery, self._handle)

    async def _handle(self, delivery: Delivery) -> str:
        try:
            task = MetadataTask.model_validate_json(delivery.body)
        except ValidationError as exc:
            await dead_letter(self._publisher, delivery, code="invalid_message", reason=f"not a MetadataTask v1: {exc}")
            return "invalid"
        log_ = log.bind(request_id=task.request_id, url=task.url)
        try:
            start = await self._pages.begin_attempt(task.url, task.request_id)
        except database_errors() as exc:
            return await retry_database_unavailable(
                self._publisher, delivery, exc, request_id=task.request_id, url=task.url
            )
        if start.already_done:
            await delivery.ack()
            log_.info("message_already_processed")
            return "duplicate"
        if start.attempts > self._retry.max_attempts:
            reason = f"gave up after {start.attempts - 1} attempts (worker crashes or redeliveries)"
            await self._pages.fail(
                task.url, task.request_id, code="max_attempts_exceeded", detail=reason, permanent=True
            )
            await dead_letter(self._publisher, delivery, code="max_attempts_exceeded", reason=reason)
            return "dead_lettered"
        return await self._fetch_and_store(delivery, task, start.attempts)

    async def _fetch_and_store(self, delivery: Delivery, task: MetadataTask, attempts: int) -> str:
        log_ = log.bind(request_id=task.request_id, url=task.url, attempt=attempts)
        started = time.perf_counter()
        http_status: int | None = None
        try:
            result = await self._fetcher.fetch(task.url)
            http_status = result.status_code
            metrics.FETCH_BYTES.inc(result.body_bytes)
            error = response_error(result.status_code, dict(result.headers))
            if error is not None:
                raise error
            page = fetched_page(result)
        except KubecrawlError as exc:
            return await self._failed(delivery, task, attempts, exc, http_status)
        finally:
            metrics.FETCH_DURATION.observe(time.perf_counter() - started)
        try:
            await self._pages.complete(task.url, task.request_id, page)
        except database_errors() as exc:
            if not refused_value(exc):
                raise  # an outage: handle_guarded puts the message back
            # A value of this page the database refuses: retrying would fail the same way.
            return await self._failed(delivery, task, attempts, store_error(exc, "storing the page"), http_status)
        await delivery.ack()
        log_.info("page_fetched", http_status=page.http_status, bytes=page.body_bytes, title=page.title)
        return "completed"

    async def _failed(
        self,
        delivery: Delivery,
        task: MetadataTask,
        attempts: int,
        exc: KubecrawlError,
        http_status: int | None,
    ) -> str:
        async def record(reason: str, *, permanent: bool) -> None:
            await self._pages.fail(
                task.url, task.request_id, code=exc.code, detail=reason, permanent=permanent, http_status=http_status
            )

        failure = await settle_failure(
            self._publisher, delivery, exc, attempts=attempts, retry=self._retry, record=record
        )
        log_ = log.bind(request_id=task.request_id, url=task.url, attempt=attempts, code=exc.code)
        if failure.outcome == "retried":
            log_.info("fetch_failed_retryable", detail=exc.detail, delay_s=failure.delay)
        else:
            log_.warning("fetch_failed_permanent", detail=failure.reason)
        return failure.outcome
