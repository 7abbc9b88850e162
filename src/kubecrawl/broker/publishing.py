"""The RabbitMQ publisher: a state machine with confirms, backoff and a background reconnect loop (seed 004 §1).

    DISCONNECTED → CONNECTING → CONNECTED → CHANNEL_OPEN → CONFIRM_ENABLED → QUEUE_DECLARED → READY
    READY → RECONNECTING → CONNECTING → … → READY          (connection or channel lost)
    any → CLOSING → CLOSED                                  (graceful shutdown)

The lock guards state changes and channel swaps only. A publish takes the lock just long enough to read the
channel and count itself in flight, then awaits its confirms outside it, so concurrent publishes share the
channel and their confirms arrive together. A publish never waits for a reconnect: when the state is not
READY it fails at once with ``publisher_not_ready`` (the API answers 503).

Every publish is a batch (``publish_batch``; ``publish`` is a batch of one): the frames of all its messages are
queued as one write, and each message's outcome is its own (confirmed, refused, returned, timed out, lost).
``POST /metadata`` publishes the requests of one database batch together (``api/enqueuing.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
from prometheus_client import Counter, Histogram

from kubecrawl.broker.base import Outgoing, Publisher, PublisherState
from kubecrawl.broker.connecting import CONNECT_TIMEOUT_SECONDS, close_quietly
from kubecrawl.broker.framing import BatchConfirms, FrameWriter, send_batch
from kubecrawl.broker.topology import DEAD_LETTER_QUEUE, declare_topology
from kubecrawl.core import metrics
from kubecrawl.core.backoff import retry_with_backoff
from kubecrawl.core.errors import ConnectionLost, PublisherNotReady, PublishRejected, PublishTimeout, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import PublisherSettings, Settings

log = get_logger(__name__)
S = PublisherState

# Every legal transition. Anything else is a bug and raises, so tests catch it.
TRANSITIONS: dict[PublisherState, frozenset[PublisherState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING, S.CLOSING}),
    S.CONNECTING: frozenset({S.CONNECTED, S.DISCONNECTED, S.RECONNECTING, S.CLOSING}),
    S.CONNECTED: frozenset({S.CHANNEL_OPEN, S.DISCONNECTED, S.RECONNECTING, S.CLOSING}),
    S.CHANNEL_OPEN: frozenset({S.CONFIRM_ENABLED, S.DISCONNECTED, S.RECONNECTING, S.CLOSING}),
    S.CONFIRM_ENABLED: frozenset({S.QUEUE_DECLARED, S.DISCONNECTED, S.RECONNECTING, S.CLOSING}),
    S.QUEUE_DECLARED: frozenset({S.READY, S.DISCONNECTED, S.RECONNECTING, S.CLOSING}),
    S.READY: frozenset({S.RECONNECTING, S.CLOSING}),
    S.RECONNECTING: frozenset({S.CONNECTING, S.CLOSING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}

# Errors that mean "the connection or channel is gone", as opposed to a refused message.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPChannelError,
    ConnectionError,
    OSError,
)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_ERRORS, TimeoutError)


class InvalidTransition(RuntimeError):
    pass


def check_transition(current: PublisherState, new: PublisherState) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"publisher cannot go from {current} to {new}")


class RabbitPublisher:
    """Publishes persistent messages with confirms; reconnects in the background."""

    def __init__(
        self,
        url: str,
        settings: PublisherSettings,
        *,
        metadata_max_length: int,
        pages_max_length: int,
        queue_type: str = "classic",
        connection_name: str = "kubecrawl-publisher",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = url
        self._settings = settings
        self._queue_args: dict[str, Any] = {
            "metadata_max_length": metadata_max_length,
            "pages_max_length": pages_max_length,
            "queue_type": queue_type,
        }
        self._dead_letter_expiration = str(int(settings.dead_letter_ttl_seconds * 1000))
        self._connection_name = connection_name
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._state = S.DISCONNECTED
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        # Writes to the aiormq channel under ``_channel``: publishes go to it directly (see ``_send``).
        self._writer: FrameWriter | None = None
        # Labelled metric children per queue: ``labels()`` costs more than the increment it precedes.
        self._success_metrics: dict[str, tuple[Counter, Histogram]] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._export_state()

    @classmethod
    def from_settings(cls, settings: Settings, *, connection_name: str) -> RabbitPublisher:
        """The publisher of a process: its broker, confirms and retries, and the queues' arguments it declares."""
        return cls(
            settings.rabbitmq_url.get_secret_value(),
            settings.publisher,
            metadata_max_length=settings.metadata_queue_max_length,
            pages_max_length=settings.pages_queue_max_length,
            queue_type=settings.queue_type,
            connection_name=connection_name,
        )

    @property
    def state(self) -> PublisherState:
        return self._state

    @property
    def in_flight(self) -> int:
        """Messages published and still awaiting their confirm (``close()`` waits for them)."""
        return self._in_flight

    def _set_state(self, new: PublisherState) -> None:
        check_transition(self._state, new)
        log.debug("publisher_state_changed", old=str(self._state), new=str(new))
        self._state = new
        self._export_state()

    def _export_state(self) -> None:
        metrics.set_state(metrics.PUBLISHER_STATE, PublisherState, self._state)

    async def start(self) -> None:
        """Connect with backoff; after ``max_connection_attempts`` failures raise ``ConnectionLost``."""

        async def connect() -> None:
            async with self._lock:
                self._set_state(S.CONNECTING)
                await self._open(failure_state=S.DISCONNECTED)

        def attempting(attempt: int, delay: float) -> None:
            log.info("rmq_connect_attempt", attempt=attempt, next_delay_s=delay)

        def failed(attempt: int, exc: BaseException, _delay: float) -> None:
            log.warning("rmq_connect_failed", attempt=attempt, error=repr(exc))

        try:
            connected = await retry_with_backoff(
                connect,
                self._settings.connect_backoff(),
                retry_on=_CONNECT_ERRORS,
                on_attempt=attempting,
                on_failure=failed,
                sleep=self._sleep,
            )
        except InvalidTransition as exc:
            if self._state not in (S.CLOSING, S.CLOSED):
                raise
            # close() moved the state on while this start() connected or backed off; _open closed what it opened.
            raise ConnectionLost("publisher closed while connecting") from exc
        except _CONNECT_ERRORS:
            connected = None
        if connected is None:
            attempts = self._settings.max_connection_attempts
            raise ConnectionLost(f"could not connect to RabbitMQ after {attempts} attempts")
        log.info("rmq_connected", attempt=connected[1])

    async def _open(self, *, failure_state: PublisherState) -> None:
        """Walk CONNECTING → READY; on failure close what was opened and move to ``failure_state``."""
        connection: aio_pika.abc.AbstractConnection | None = None
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=CONNECT_TIMEOUT_SECONDS,
                client_properties={"connection_name": self._connection_name},
            )
            self._set_state(S.CONNECTED)
            # aio-pika enables confirms while opening the channel (confirm.select right after channel.open),
            # so the two states are entered back to back once the channel answers.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            # aiormq's abstract channel does not declare the internals _send uses; the concrete one, which
            # aio-pika opens, has them.
            writer = FrameWriter(cast("aiormq.Channel", await channel.get_underlay_channel()))
            self._set_state(S.CHANNEL_OPEN)
            self._set_state(S.CONFIRM_ENABLED)
            await declare_topology(channel, **self._queue_args)
            self._set_state(S.QUEUE_DECLARED)
        except BaseException:
            await close_quietly(None, connection)
            if self._state is not failure_state and failure_state in TRANSITIONS[self._state]:
                self._set_state(failure_state)
            raise
        connection.close_callbacks.add(self._on_closed)
        channel.close_callbacks.add(self._on_closed)
        self._connection, self._channel, self._writer = connection, channel, writer
        self._set_state(S.READY)

    def _on_closed(self, _sender: object, exc: BaseException | None = None) -> None:
        if self._state is not S.READY:
            return  # closing on purpose, or already reconnecting
        log.warning("rmq_connection_lost", reason=repr(exc))
        self._lost()

    def _lost(self) -> None:
        if self._state is not S.READY:
            return
        self._set_state(S.RECONNECTING)
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        old = self._connection
        self._connection = self._channel = self._writer = None
        await close_quietly(None, old)

        async def reopen() -> bool:
            """True once READY again; False when the publisher is closing meanwhile (nothing to do)."""
            async with self._lock:
                if self._state is not S.RECONNECTING:
                    return False
                self._set_state(S.CONNECTING)
                await self._open(failure_state=S.RECONNECTING)
                return True

        def attempting(attempt: int, delay: float) -> None:
            log.info("rmq_reconnect_attempt", attempt=attempt, next_delay_s=delay)

        def failed(attempt: int, exc: BaseException, _delay: float) -> None:
            if isinstance(exc, _CONNECT_ERRORS):
                log.warning("rmq_reconnect_failed", attempt=attempt, error=repr(exc))
            else:  # unexpected: with its traceback
                log.warning("rmq_reconnect_failed", attempt=attempt, error=repr(exc), exc_info=exc)

        reopened = await retry_with_backoff(
            reopen,
            # No attempt limit, and anything else is retried too (aiormq's RuntimeError for a connection closed
            # while the channel opens, an unexpected frame): this task is the only way back to READY, and if it
            # ended the API would stay unready, while alive, until restarted.
            dataclasses.replace(self._settings.connect_backoff(), attempts=None),
            retry_on=Exception,
            on_attempt=attempting,
            on_failure=failed,
            keep_going=lambda: self._state is S.RECONNECTING,
            sleep=self._sleep,
        )
        if reopened is not None and reopened[0]:
            metrics.PUBLISHER_RECONNECTS.inc()
            log.info("rmq_reconnected", attempt=reopened[1])

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        # Dead letters expire: every one has the same TTL, so they leave kubecrawl.dead oldest first and the queue
        # holds at most that many seconds of them, whatever floods it (the queue's arguments cannot change on a
        # running broker; docs/security.md).
        expiration = self._dead_letter_expiration if routing_key == DEAD_LETTER_QUEUE else None
        outgoing = Outgoing(body, message_id, headers, log_context, expiration)
        [outcome] = await self.publish_batch(routing_key, [outgoing])
        if outcome is not None:
            raise outcome

    async def publish_batch(
        self,
        routing_key: str,
        messages: Sequence[Outgoing],
        *,
        on_confirmed: Callable[[int], None] | None = None,
    ) -> list[TransientError | None]:
        """Publish ``messages`` in one write to the socket and wait for every confirm.

        Returns each message's outcome, in order: ``None`` once the broker confirmed it, else the error
        ``publish`` raises for it (each its own instance). Every outcome is counted and logged per message.
        ``on_confirmed(index)`` is called as each message is confirmed, before the rest of the batch is.
        """
        if not messages:
            return []
        if self._state is not S.READY:
            return self._refuse(routing_key, messages)
        async with self._lock:
            writer = self._writer
            if self._state is not S.READY or writer is None:
                return self._refuse(routing_key, messages)
            self._in_flight += len(messages)
            self._idle.clear()
        # aiormq gives a message without an id a random one: a basic.return is matched to its publish by it.
        messages = [m if m.message_id else dataclasses.replace(m, message_id=uuid.uuid4().hex) for m in messages]
        try:
            counter, histogram = self._success_metrics.get(routing_key) or self._success_children(routing_key)

            def confirmed(index: int, latency: float) -> None:
                counter.inc()
                histogram.observe(latency)
                context = messages[index].log_context or {}
                log.info("publish_success", queue=routing_key, latency_ms=round(latency * 1000, 2), **context)
                if on_confirmed is not None:
                    on_confirmed(index)

            try:
                confirms = BatchConfirms(await send_batch(writer, routing_key, messages), confirmed)
            except _CONNECTION_ERRORS as exc:  # the channel closed before the frames were queued
                self._lost()
                return [
                    self._failed(routing_key, m, ConnectionLost(f"connection to RabbitMQ lost: {exc!r}"), exc)
                    for m in messages
                ]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.confirm_timeout_seconds):
                    await confirms.all_done
            return self._outcomes(routing_key, writer.channel, messages, confirms)
        finally:
            self._in_flight -= len(messages)
            if self._in_flight == 0:
                self._idle.set()

    def _outcomes(
        self, routing_key: str, channel: aiormq.Channel, messages: Sequence[Outgoing], confirms: BatchConfirms
    ) -> list[TransientError | None]:
        """Each message's outcome; the confirmed ones were counted and logged as their confirm arrived."""
        outcomes: list[TransientError | None] = []
        for message, (tag, confirmation) in zip(messages, confirms.sent, strict=True):
            # What basic_publish's done-callback does: the tag is only needed to match a basic.return.
            if channel.message_id_delivery_tag.get(message.message_id) == tag:
                del channel.message_id_delivery_tag[message.message_id]
            if not confirmation.done():
                confirmation.cancel()  # a late confirm is then ignored by aiormq
                outcomes.append(self._failed(routing_key, message, PublishTimeout("broker did not confirm in time")))
            elif confirmation.cancelled() or confirmation.exception() is not None:
                exc = None if confirmation.cancelled() else confirmation.exception()
                outcomes.append(self._failed_with(routing_key, message, exc))
            else:
                outcomes.append(None)
        return outcomes

    def _failed_with(self, routing_key: str, message: Outgoing, exc: BaseException | None) -> TransientError:
        if isinstance(exc, aiormq.exceptions.DeliveryError):  # basic.nack (reject-publish) or basic.return
            return self._failed(routing_key, message, PublishRejected(f"broker refused the message: {exc}"), exc)
        # The channel or connection closed with the confirm outstanding (aiormq rejects it with the reason).
        self._lost()
        return self._failed(routing_key, message, ConnectionLost(f"connection to RabbitMQ lost: {exc!r}"), exc)

    def _failed(
        self, routing_key: str, message: Outgoing, error: TransientError, cause: BaseException | None = None
    ) -> TransientError:
        error.__cause__ = cause
        self._fail(routing_key, error.code, message.log_context or {})
        return error

    def _refuse(self, routing_key: str, messages: Sequence[Outgoing]) -> list[TransientError | None]:
        return [self._failed(routing_key, m, PublisherNotReady(f"publisher is {self._state}")) for m in messages]

    def _success_children(self, routing_key: str) -> tuple[Counter, Histogram]:
        children = (
            metrics.PUBLISH_TOTAL.labels(queue=routing_key, outcome="success"),
            metrics.PUBLISH_LATENCY.labels(queue=routing_key),
        )
        self._success_metrics[routing_key] = children
        return children

    def _fail(self, routing_key: str, reason: str, context: Mapping[str, Any]) -> None:
        metrics.PUBLISH_TOTAL.labels(queue=routing_key, outcome=reason).inc()
        event = "publish_rejected" if reason == "publisher_not_ready" else "publish_failed"
        log.warning(event, queue=routing_key, reason=reason, **context)

    async def close(self) -> None:
        """CLOSING → wait for in-flight confirms → close channel → close connection → CLOSED."""
        if self._state in (S.CLOSING, S.CLOSED):
            return
        self._set_state(S.CLOSING)
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnect_task
        in_flight = self._in_flight
        try:
            await asyncio.wait_for(self._idle.wait(), self._settings.shutdown_timeout_seconds)
        except TimeoutError:
            log.warning("publisher_shutdown_timeout", in_flight=self._in_flight)
        async with self._lock:
            await close_quietly(self._channel, self._connection)
            self._channel = self._connection = self._writer = None
            self._set_state(S.CLOSED)
        log.info("publisher_shutdown", waited_for=in_flight)


if TYPE_CHECKING:  # mypy proves the RabbitMQ publisher implements broker/base.py's interface

    def _implements(publisher: RabbitPublisher) -> Publisher:
        return publisher
