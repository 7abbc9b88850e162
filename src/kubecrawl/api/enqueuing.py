"""``POST /metadata``'s record-then-publish, batched across concurrent requests.

A request hands its (url, request id) to the ``MetadataEnqueuer`` and awaits ONE future, which resolves once its
row is committed AND the broker confirmed its message, or fails with the ``TransientError`` the API answers
503 with. Behind it, two stages:

1. **Record** (one batch at a time): everything that arrived while the previous batch was being written is
   written by one statement (``RequestWriter.record``: an upsert over arrays; one commit). While a batch is
   being written the next one accumulates, so batches grow with the load and a lone request goes alone on the
   next event-loop turn. The writer keeps its pooled connection while batches keep coming.
2. **Publish** (one task per recorded batch, overlapping the next batch's write): every message of the batch
   goes out in one write to the broker (``publish_metadata_tasks``), then every confirm is awaited. The requests
   whose message was refused or lost have their rows released (``release_requests``, one transaction), then
   every request of the batch gets its answer.

The guarantees are those of one request at a time: a 202 means the row was committed and the message
confirmed, in that order; a 503 leaves no row waiting for a message that does not exist (except when releasing
fails too: then the row stays QUEUED until the next GET after 15 minutes publishes it again). Duplicate URLs in a
batch are written once, with the last request id, and each request still publishes its own message.

Batching took ``POST /metadata`` from four suspensions and four round trips per request (pool checkout, write,
publish, confirm) to one suspension per request and a handful of round trips per batch (bench/publish.py).
A request cancelled before its batch is written is left out of it; after, its message is still published, so
its row never waits for nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass

from kubecrawl.broker.base import Publisher
from kubecrawl.broker.tasks import publish_metadata_tasks
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.errors import InvalidValue, KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.store.contract import PageMetadataStore, RequestWriter

log = get_logger(__name__)


@dataclass(slots=True)
class _Waiting:
    url: str
    request_id: str
    answer: asyncio.Future[None]


class MetadataEnqueuer:
    """Records and publishes ``POST /metadata`` requests in batches; see the module docstring."""

    def __init__(self, pages: PageMetadataStore, publisher: Publisher, *, max_batch: int = 500) -> None:
        self._pages = pages
        self._publisher = publisher
        # Bounds one statement's arrays and one write to the broker; under load a batch holds tens of requests.
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._recorder: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()

    async def enqueue(self, url: str, request_id: str) -> None:
        """Return once the request is recorded and its message confirmed; else raise why (a ``TransientError``)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[None] = loop.create_future()
        self._waiting.append(_Waiting(url, request_id, answer))
        if self._recorder is None or self._recorder.done():
            # A context of its own: the stages must not log with the request id of whichever request started them.
            self._recorder = loop.create_task(self._record_batches(), context=contextvars.Context())
        await answer

    def _next_batch(self) -> list[_Waiting]:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        return [waiting for waiting in batch if not waiting.answer.done()]  # cancelled requests drop out

    async def _record_batches(self) -> None:
        while True:
            writer: RequestWriter | None = None
            try:
                while self._waiting:
                    batch = self._next_batch()
                    if not batch:
                        continue
                    try:
                        writer = await self._record(writer, batch)
                    except asyncio.CancelledError:
                        _cancel(batch)
                        raise
                    except InvalidValue:
                        # One request's value (a NUL byte, say) fails the whole statement: the others must not
                        # pay for it. Each is recorded alone, and only the guilty one answers 400.
                        writer, batch = await self._record_alone(batch)
                    except Exception as exc:  # every failure goes to the batch's requests, none is lost
                        _fail(batch, exc, stage="recording")
                        continue
                    if not batch:
                        continue
                    task = asyncio.get_running_loop().create_task(self._publish(batch))
                    self._publishing.add(task)
                    task.add_done_callback(self._publishing.discard)
            finally:
                if writer is not None:
                    await writer.close()
            # Requests that arrived while the writer was being closed saw this task running and started none.
            # No await between this check and the end of the task: a request arriving later starts a new one.
            if not self._waiting:
                return

    async def _record(self, writer: RequestWriter | None, batch: list[_Waiting]) -> RequestWriter:
        if writer is None or writer.closed:
            writer = await self._pages.request_writer()
        await writer.record([(waiting.url, waiting.request_id) for waiting in batch])
        return writer

    async def _record_alone(self, batch: list[_Waiting]) -> tuple[RequestWriter | None, list[_Waiting]]:
        """Record each request of a refused batch by itself; the requests recorded, to be published."""
        writer: RequestWriter | None = None
        recorded: list[_Waiting] = []
        for waiting in batch:
            try:
                writer = await self._record(writer, [waiting])
            except asyncio.CancelledError:
                _cancel(batch)
                raise
            except Exception as exc:
                _fail([waiting], exc, stage="recording")
            else:
                recorded.append(waiting)
        return writer, recorded

    async def _publish(self, batch: list[_Waiting]) -> None:
        def confirmed(index: int) -> None:  # answered as its own confirm arrives, before the rest of the batch's
            if not batch[index].answer.done():
                batch[index].answer.set_result(None)

        try:
            outcomes = await publish_metadata_tasks(
                self._publisher,
                [MetadataTask(url=waiting.url, request_id=waiting.request_id) for waiting in batch],
                on_confirmed=confirmed,
            )
            failed = [(waiting, error) for waiting, error in zip(batch, outcomes, strict=True) if error is not None]
            if failed:
                await self._release([(waiting.url, waiting.request_id) for waiting, _ in failed])
            for waiting, error in failed:
                if not waiting.answer.done():
                    waiting.answer.set_exception(error)
        except asyncio.CancelledError:
            _cancel(batch)
            raise
        except Exception as exc:  # a bug: the requests still get an answer (500), and the log the traceback
            _fail(batch, exc, stage="publishing")

    async def _release(self, failed: list[tuple[str, str]]) -> None:
        """Release the rows of unpublished requests; if that fails too, they wait for the lost-message recovery."""
        try:
            await self._pages.release_requests(failed)
        except Exception as exc:  # the requests still get their publish error
            log.warning("release_failed", requests=len(failed), error=repr(exc))


def _cancel(batch: list[_Waiting]) -> None:
    for waiting in batch:
        waiting.answer.cancel()


def _fail(batch: list[_Waiting], exc: Exception, *, stage: str) -> None:
    """Fail every request of the batch, each with its own exception (one instance raised in many tasks would
    collect all their tracebacks): a ``KubecrawlError`` keeps its class and code, anything else is a bug (500)."""
    if isinstance(exc, KubecrawlError):
        log.warning("enqueue_batch_failed", stage=stage, requests=len(batch), code=exc.code, error=exc.detail)
    else:
        log.error("enqueue_batch_failed", stage=stage, requests=len(batch), exc_info=exc)
    for waiting in batch:
        if waiting.answer.done():
            continue
        error: Exception
        if isinstance(exc, KubecrawlError):
            error = type(exc)(exc.detail, code=exc.code)
        else:
            error = RuntimeError(f"enqueueing failed while {stage}: {exc!r}")
        error.__cause__ = exc
        waiting.answer.set_exception(error)
