"""Publishing contract messages: the routing key follows from the message kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from kubecrawl.broker.base import Publisher
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.contracts import MetadataTask, PageTask
from kubecrawl.core.errors import TransientError


def queue_for(task: MetadataTask | PageTask) -> str:
    return METADATA_QUEUE if isinstance(task, MetadataTask) else PAGES_QUEUE


async def publish_task(
    publisher: Publisher, task: MetadataTask | PageTask, *, headers: Mapping[str, Any] | None = None
) -> None:
    if isinstance(task, MetadataTask):
        message_id, context = task.request_id, {"request_id": task.request_id, "url": task.url}
    else:
        message_id = f"{task.crawl_id}:{task.page_id}"
        context = {"crawl_id": task.crawl_id, "url": task.url}
    await publisher.publish(
        queue_for(task),
        task.model_dump_json().encode(),
        message_id=message_id,
        headers=headers,
        log_context=context,
    )


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
