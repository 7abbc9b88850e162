"""Publishing contract messages: the routing key follows from the message kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from kubecrawl.broker.base import Outgoing, Publisher
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.contracts import MetadataTask, PageTask
from kubecrawl.core.errors import TransientError


def queue_for(task: MetadataTask | PageTask) -> str:
    return METADATA_QUEUE if isinstance(task, MetadataTask) else PAGES_QUEUE


def outgoing(task: MetadataTask | PageTask, *, headers: Mapping[str, Any] | None = None) -> Outgoing:
    """The message for a task: its JSON, its message id, and the fields its log lines carry."""
    if isinstance(task, MetadataTask):
        message_id, context = task.request_id, {"request_id": task.request_id, "url": task.url}
    else:
        message_id = f"{task.crawl_id}:{task.page_id}"
        context = {"crawl_id": task.crawl_id, "url": task.url}
    return Outgoing(task.model_dump_json().encode(), message_id, headers, context)


async def publish_task(
    publisher: Publisher, task: MetadataTask | PageTask, *, headers: Mapping[str, Any] | None = None
) -> None:
    message = outgoing(task, headers=headers)
    await publisher.publish(
        queue_for(task), message.body, message_id=message.message_id, headers=headers, log_context=message.log_context
    )


@runtime_checkable
class BatchPublisher(Protocol):
    """A publisher that sends many messages at once (``RabbitPublisher``)."""

    async def publish_batch(
        self, routing_key: str, messages: Sequence[Outgoing], *, on_confirmed: Callable[[int], None] | None = None
    ) -> list[TransientError | None]: ...


async def publish_metadata_tasks(
    publisher: Publisher, tasks: Sequence[MetadataTask], *, on_confirmed: Callable[[int], None] | None = None
) -> list[TransientError | None]:
    """Publish the tasks together; each task's outcome in order: ``None`` (confirmed) or its ``TransientError``.

    One write and one wait for all confirms on RabbitMQ (``publish_batch``); one ``publish`` after the other on a
    publisher without batches (the embedded default's in-process broker). ``on_confirmed(index)`` is called as
    each task is confirmed, before the others are.
    """
    messages = [outgoing(task) for task in tasks]
    if isinstance(publisher, BatchPublisher):
        return await publisher.publish_batch(METADATA_QUEUE, messages, on_confirmed=on_confirmed)
    outcomes: list[TransientError | None] = []
    for index, message in enumerate(messages):
        try:
            await publisher.publish(
                METADATA_QUEUE, message.body, message_id=message.message_id, log_context=message.log_context
            )
        except TransientError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
            if on_confirmed is not None:
                on_confirmed(index)
    return outcomes


class PageLike(Protocol):
    @property
    def page_id(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def depth(self) -> int: ...


T = TypeVar("T", bound=PageLike)


async def publish_pages(
    publisher: Publisher,
    crawl_id: str,
    refs: Sequence[T],
    *,
    release: Callable[[str, Sequence[T]], Awaitable[None]],
) -> None:
    """Publish the pages that entered a crawl's window; on failure give the unpublished ones back (release)."""
    for index, ref in enumerate(refs):
        try:
            await publish_task(
                publisher, PageTask(crawl_id=crawl_id, page_id=ref.page_id, url=ref.url, depth=ref.depth)
            )
        except TransientError:
            await release(crawl_id, refs[index:])
            raise
