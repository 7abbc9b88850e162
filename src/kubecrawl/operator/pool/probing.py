"""Reading a pool's queue: how many messages wait and which workers hold unacked ones.

- Ready messages and consumers: an AMQP passive ``queue.declare`` (exact and current, unlike the management API's
  statistics, which lag by ``collect_statistics_interval``, 5 s by default).
- Unacked messages, per queue and per worker: the RabbitMQ management API, when configured. RabbitMQ counts unacked
  messages per channel; a worker's consumer connection is named after its pod (``POD_NAME``), so summing its
  channels gives the messages each pod holds. These lag by the statistics interval, which only delays the busy
  floor on scale-down, never a scale-up.

Any failure (broker unreachable, timeout, queue missing, management API refusing) raises
:class:`MetricsUnavailable`: the scaler then keeps the replicas as they are (see ``deciding.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import httpx

from kubecrawl.core.errors import TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator.pool.deciding import Observation

log = get_logger(__name__)


class MetricsUnavailable(TransientError):
    code = "metrics_unavailable"


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (``amqp://host/`` and ``amqp://host`` both mean ``/``)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


@dataclass(frozen=True, slots=True)
class Depth:
    ready: int
    consumers: int


class AmqpDepth:
    """Ready messages and consumers of a queue, by passive declare.

    One connection for the whole operator, (re)opened on demand; one short-lived channel per read, because a
    passive declare of a missing queue closes its channel and must not disturb other pools' reads.
    """

    def __init__(self, url: str, *, timeout: float, connection_name: str = "kubecrawl-operator") -> None:
        self._url = url
        self._timeout = timeout
        self._connection_name = connection_name
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aio_pika.abc.AbstractConnection:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                # Not connect_robust: a lost broker must surface as a failed read, not as a silent wait.
                self._connection = await aio_pika.connect(
                    self._url,
                    timeout=self._timeout,
                    client_properties={"connection_name": self._connection_name},
                )
            return self._connection

    async def read(self, queue: str) -> Depth:
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connected()
                channel = await connection.channel(publisher_confirms=False)
                try:
                    declared = await channel.declare_queue(queue, passive=True)
                finally:
                    if not channel.is_closed:
                        await channel.close()
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise MetricsUnavailable(f"queue {queue} does not exist", code="queue_not_found") from exc
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
            await self._drop()
            raise MetricsUnavailable(f"RabbitMQ: {exc.__class__.__name__}: {exc}", code="broker_unavailable") from exc
        result = declared.declaration_result
        return Depth(ready=int(result.message_count or 0), consumers=int(result.consumer_count or 0))

    async def _drop(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        await self._drop()


@dataclass(frozen=True, slots=True)
class Unacked:
    queue: int
    # Connection name as the client gave it (a worker's pod name) → unacked messages on its channels.
    by_connection: dict[str, int] = field(default_factory=dict)


class ManagementApi:
    """The few RabbitMQ management API reads the scaler needs, for one virtual host."""

    def __init__(self, url: str, *, vhost: str, default_credentials: tuple[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("the RabbitMQ management URL must be http(s)://[user:password@]host[:port][/prefix]")
        credentials = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._vhost = quote(vhost, safe="")
        self._client = httpx.AsyncClient(
            base_url=base, auth=credentials or default_credentials, timeout=timeout, follow_redirects=False
        )

    async def _get(self, path: str, columns: str) -> Any:
        try:
            response = await self._client.get(f"/api/{path}", params={"columns": columns})
        except httpx.HTTPError as exc:
            detail = f"management API: {exc.__class__.__name__}: {exc}"
            raise MetricsUnavailable(detail, code="management_unavailable") from exc
        if response.status_code == 404:
            raise MetricsUnavailable(f"management API: {path} not found", code="queue_not_found")
        if response.status_code != 200:
            detail = f"management API answered {response.status_code} for {path}"
            raise MetricsUnavailable(detail, code="management_unavailable")
        return response.json()

    async def unacked(self, queue: str) -> Unacked:
        queue_info, connections, channels = await _all(
            self._get(f"queues/{self._vhost}/{quote(queue, safe='')}", "messages_unacknowledged"),
            self._get(f"vhosts/{self._vhost}/connections", "name,user_provided_name"),
            self._get(f"vhosts/{self._vhost}/channels", "connection_details.name,messages_unacknowledged"),
        )
        return Unacked(queue_unacked(queue_info), unacked_by_connection(connections, channels))

    async def aclose(self) -> None:
        await self._client.aclose()


def queue_unacked(info: Any) -> int:
    """Unacked messages from ``GET /api/queues/{vhost}/{name}?columns=messages_unacknowledged``.

    A queue whose statistics have not been emitted yet (the first ``collect_statistics_interval`` after it was
    declared) has no such field, and the ``columns`` filter then answers ``[]``: nothing has been counted as
    delivered yet, so 0 (its channels, read separately, still show any pod holding messages).
    """
    if isinstance(info, dict):
        return int(info.get("messages_unacknowledged") or 0)
    return 0


async def _all(*reads: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run reads concurrently; every one finishes (no orphaned failures), then the first error is raised."""
    results = await asyncio.gather(*reads, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def unacked_by_connection(connections: list[dict[str, Any]], channels: list[dict[str, Any]]) -> dict[str, int]:
    """Join the management API's channels (unacked counts) to their connections' client-given names."""
    names = {c.get("name"): c.get("user_provided_name") for c in connections if c.get("user_provided_name")}
    held: dict[str, int] = {}
    for channel in channels:
        name = names.get((channel.get("connection_details") or {}).get("name"))
        count = int(channel.get("messages_unacknowledged") or 0)
        if name and count:
            held[name] = held.get(name, 0) + count
    return held


class BrokerProbe:
    """Everything one poll reads from RabbitMQ about a queue."""

    def __init__(self, amqp: AmqpDepth, management: ManagementApi | None) -> None:
        self._amqp = amqp
        self._management = management

    @property
    def knows_unacked(self) -> bool:
        return self._management is not None

    async def depth(self, queue: str) -> Depth:
        """Ready messages and consumers of ``queue`` (AMQP passive declare)."""
        return await self._amqp.read(queue)

    async def observe(self, queue: str, pods: set[str]) -> Observation:
        """The queue's depth; ``busy`` lists those of ``pods`` (the Deployment's) holding unacked messages."""
        if self._management is None:
            depth = await self._amqp.read(queue)
            return Observation(ready=depth.ready, consumers=depth.consumers)
        depth, unacked = await _all(self._amqp.read(queue), self._management.unacked(queue))
        busy = {pod: count for pod, count in unacked.by_connection.items() if pod in pods}
        return Observation(ready=depth.ready, consumers=depth.consumers, unacked=unacked.queue, busy=busy)

    async def close(self) -> None:
        await self._amqp.close()
        if self._management is not None:
            await self._management.aclose()
