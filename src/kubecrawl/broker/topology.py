"""The one place kubecrawl's RabbitMQ queues are declared (API, worker and operator all call this).

    kubecrawl.metadata            work: one URL to fetch           x-max-length, reject-publish, DLX → dead
    kubecrawl.pages               work: one page of one crawl      same shape, larger bound
    kubecrawl.<work>.retry.<N>s   delay tiers: no consumers; x-message-ttl N s then dead-letter back to <work>
    kubecrawl.dead                dead letters, with x-kubecrawl-reason / x-kubecrawl-code headers

Delays use one queue per tier with a queue-level TTL rather than per-message TTLs on one queue: RabbitMQ only
expires messages at the head of a queue, so a 5-minute retry would hold back a 1-second one behind it.
Declarations are idempotent; changing arguments of an existing queue is refused by the broker
(PRECONDITION_FAILED), which is why every process declares from this module and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aio_pika.abc

METADATA_QUEUE = "kubecrawl.metadata"
PAGES_QUEUE = "kubecrawl.pages"
DEAD_LETTER_QUEUE = "kubecrawl.dead"
WORK_QUEUES = (METADATA_QUEUE, PAGES_QUEUE)
# Retry delay tiers in seconds; a wanted delay is rounded up to the next tier (the last one caps it).
RETRY_TIERS_SECONDS = (1, 5, 15, 60, 300)

ATTEMPT_HEADER = "x-kubecrawl-attempt"
REASON_HEADER = "x-kubecrawl-reason"
CODE_HEADER = "x-kubecrawl-code"
SOURCE_HEADER = "x-kubecrawl-source-queue"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def retry_queue_name(work_queue: str, tier_seconds: int) -> str:
    return f"{work_queue}.retry.{tier_seconds}s"


def retry_tier(delay_seconds: float) -> int:
    """The smallest tier that waits at least ``delay_seconds`` (capped at the largest)."""
    for tier in RETRY_TIERS_SECONDS:
        if delay_seconds <= tier:
            return tier
    return RETRY_TIERS_SECONDS[-1]


# Quorum work queues dead-letter a message redelivered this many times (a message that keeps killing workers);
# attempts are counted in the database first (KUBECRAWL_RETRY__MAX_ATTEMPTS), so this is only the broker's backstop.
QUORUM_DELIVERY_LIMIT = 20
# Quorum queues dead-letter at least once (the message stays in its queue until the target confirms it), which
# needs reject-publish on the source: a retry tier then keeps its message while the work queue is full.
_QUORUM = {"x-queue-type": "quorum", "x-overflow": "reject-publish", "x-dead-letter-strategy": "at-least-once"}


def queue_specs(*, metadata_max_length: int, pages_max_length: int, queue_type: str = "classic") -> list[QueueSpec]:
    """Every queue kubecrawl uses, in declaration order (the dead-letter target first). ``queue_type`` quorum makes
    the work queues and their retry tiers quorum queues; ``kubecrawl.dead`` stays classic (nothing consumes it,
    and its messages carry a per-message TTL)."""
    dead_letter = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD_LETTER_QUEUE}
    quorum = queue_type == "quorum"
    specs = [QueueSpec(DEAD_LETTER_QUEUE)]
    for name, max_length in ((METADATA_QUEUE, metadata_max_length), (PAGES_QUEUE, pages_max_length)):
        work = {"x-max-length": max_length, "x-overflow": "reject-publish", **dead_letter}
        if quorum:
            work |= {**_QUORUM, "x-delivery-limit": QUORUM_DELIVERY_LIMIT}
        specs.append(QueueSpec(name, work))
        specs.extend(
            QueueSpec(
                retry_queue_name(name, tier),
                {
                    "x-message-ttl": tier * 1000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": name,
                    **(_QUORUM if quorum else {}),
                },
            )
            for tier in RETRY_TIERS_SECONDS
        )
    return specs


async def declare_topology(
    channel: aio_pika.abc.AbstractChannel,
    *,
    metadata_max_length: int,
    pages_max_length: int,
    queue_type: str = "classic",
) -> dict[str, aio_pika.abc.AbstractQueue]:
    """Declare every queue (idempotent) and return them by name."""
    declared: dict[str, aio_pika.abc.AbstractQueue] = {}
    lengths = {"metadata_max_length": metadata_max_length, "pages_max_length": pages_max_length}
    for spec in queue_specs(**lengths, queue_type=queue_type):
        declared[spec.name] = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    return declared
