"""The RabbitMQ publisher: a state machine with confirms, backoff and a background reconnect loop (seed 004 §1).

    DISCONNECTED → CONNECTING → CONNECTED → CHANNEL_OPEN → CONFIRM_ENABLED → QUEUE_DECLARED → READY
    READY → RECONNECTING → CONNECTING → … → READY          (connection or channel lost)
    any → CLOSING → CLOSED                                  (graceful shutdown)

The lock guards state changes and channel swaps only. A publish takes the lock just long enough to read the
channel and count itself in flight, then awaits its confirm outside it, so concurrent publishes share the
channel and their confirms arrive together. A publish never waits for a reconnect: when the state is not
READY it fails at once with ``publisher_not_ready`` (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from kubecrawl.broker.backoff import backoff_delays
from kubecrawl.broker.base import PublisherState
from kubecrawl.broker.topology import declare_topology
from kubecrawl.core import metrics
from kubecrawl.core.errors import ConnectionLost, PublisherNotReady, PublishRejected, PublishTimeout
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import PublisherSettings

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
# A TCP connect plus AMQP handshake to a healthy broker takes milliseconds; 10 s means it is not answering.
_CONNECT_TIMEOUT_SECONDS = 10.0


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
        connection_name: str = "kubecrawl-publisher",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = url
        self._settings = settings
        self._queue_args = {"metadata_max_length": metadata_max_length, "pages_max_length": pages_max_length}
        self._connection_name = connection_name
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._state = S.DISCONNECTED
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._export_state()

    @property
    def state(self) -> PublisherState:
        return self._state

    def _set_state(self, new: PublisherState) -> None:
        check_transition(self._state, new)
        log.debug("publisher_state_changed", old=str(self._state), new=str(new))
        self._state = new
        self._export_state()

    def _export_state(self) -> None:
        for state in PublisherState:
            metrics.PUBLISHER_STATE.labels(state=state.value).set(1 if state is self._state else 0)

    async def start(self) -> None:
        """Connect with backoff; after ``max_connection_attempts`` failures raise ``ConnectionLost``."""
        delays = backoff_delays(
            self._settings.initial_backoff_seconds,
            self._settings.backoff_multiplier,
            self._settings.max_backoff_seconds,
        )
        for attempt in range(1, self._settings.max_connection_attempts + 1):
            delay = next(delays)
            log.info("rmq_connect_attempt", attempt=attempt, next_delay_s=delay)
            try:
                async with self._lock:
                    self._set_state(S.CONNECTING)
                    await self._open(failure_state=S.DISCONNECTED)
            except _CONNECT_ERRORS as exc:
                log.warning("rmq_connect_failed", attempt=attempt, error=repr(exc))
                if attempt == self._settings.max_connection_attempts:
                    break
                await self._sleep(delay)
            else:
                log.info("rmq_connected", attempt=attempt)
                return
        raise ConnectionLost(f"could not connect to RabbitMQ after {self._settings.max_connection_attempts} attempts")

    async def _open(self, *, failure_state: PublisherState) -> None:
        """Walk CONNECTING → READY; on failure close what was opened and move to ``failure_state``."""
        connection: aio_pika.abc.AbstractConnection | None = None
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=_CONNECT_TIMEOUT_SECONDS,
                client_properties={"connection_name": self._connection_name},
            )
            self._set_state(S.CONNECTED)
            # aio-pika enables confirms while opening the channel (confirm.select right after channel.open),
            # so the two states are entered back to back once the channel answers.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._set_state(S.CHANNEL_OPEN)
            self._set_state(S.CONFIRM_ENABLED)
            await declare_topology(channel, **self._queue_args)
            self._set_state(S.QUEUE_DECLARED)
        except BaseException:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            if self._state is not failure_state and failure_state in TRANSITIONS[self._state]:
                self._set_state(failure_state)
            raise
        connection.close_callbacks.add(self._on_closed)
        channel.close_callbacks.add(self._on_closed)
        self._connection, self._channel = connection, channel
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
        self._connection = self._channel = None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        delays = backoff_delays(
            self._settings.initial_backoff_seconds,
            self._settings.backoff_multiplier,
            self._settings.max_backoff_seconds,
        )
        attempt = 0
        while self._state is S.RECONNECTING:
            attempt += 1
            delay = next(delays)
            log.info("rmq_reconnect_attempt", attempt=attempt, next_delay_s=delay)
            try:
                async with self._lock:
                    if self._state is not S.RECONNECTING:
                        return
                    self._set_state(S.CONNECTING)
                    await self._open(failure_state=S.RECONNECTING)
            except _CONNECT_ERRORS as exc:
                log.warning("rmq_reconnect_failed", attempt=attempt, error=repr(exc))
                await self._sleep(delay)
            else:
                metrics.PUBLISHER_RECONNECTS.inc()
                log.info("rmq_reconnected", attempt=attempt)
                return

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        context = dict(log_context or {})
        if self._state is not S.READY:
            self._fail(routing_key, "publisher_not_ready", context)
            raise PublisherNotReady(f"publisher is {self._state}")
        async with self._lock:
            channel = self._channel
            if self._state is not S.READY or channel is None:
                self._fail(routing_key, "publisher_not_ready", context)
                raise PublisherNotReady(f"publisher is {self._state}")
            self._in_flight += 1
            self._idle.clear()
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            headers=dict(headers or {}),
        )
        started = time.perf_counter()
        try:
            # aiormq directly, as aio-pika's Exchange.publish does, but with wait=False: the frames go to the
            # connection's writer queue and only the confirm is awaited. With aio-pika's wait=True the channel
            # lock is held until the writer has drained the frames, two event-loop turns per publish, so every
            # publish of the process queues behind the one before: on the API's busy loop (bench/publish.py)
            # that capped publishing near 1 / (2 × loop latency), about 400/s, with the CPU partly idle.
            # aiormq's abstract channel does not declare wait=; the concrete one, which aio-pika opens, does.
            underlay = cast("aiormq.Channel", await channel.get_underlay_channel())
            await underlay.basic_publish(
                message.body,
                routing_key=routing_key,
                properties=message.properties,
                mandatory=True,
                timeout=self._settings.confirm_timeout_seconds,
                wait=False,
            )
        except TimeoutError as exc:
            self._fail(routing_key, "publish_timeout", context)
            raise PublishTimeout("broker did not confirm in time") from exc
        except aiormq.exceptions.DeliveryError as exc:
            self._fail(routing_key, "queue_rejected", context)
            raise PublishRejected(f"broker refused the message: {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            self._fail(routing_key, "connection_lost", context)
            self._lost()
            raise ConnectionLost(f"connection to RabbitMQ lost: {exc!r}") from exc
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        latency = time.perf_counter() - started
        metrics.PUBLISH_TOTAL.labels(queue=routing_key, outcome="success").inc()
        metrics.PUBLISH_LATENCY.labels(queue=routing_key).observe(latency)
        # DEBUG, not INFO: a line per confirmed message is an access log (a thousand lines a second at the API's
        # benchmark rate, each a write to stderr from the event loop). Rate and latency are in the two metrics
        # above, the request id reaches the client (202 body, X-Request-ID) and the worker's log lines, and
        # every failure is still logged at WARNING with its request id and URL.
        log.debug("publish_success", queue=routing_key, latency_ms=round(latency * 1000, 2), **context)

    def _fail(self, routing_key: str, reason: str, context: dict[str, Any]) -> None:
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
            if self._channel is not None:
                with contextlib.suppress(Exception):
                    await self._channel.close()
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.close()
            self._channel = self._connection = None
            self._set_state(S.CLOSED)
        log.info("publisher_shutdown", waited_for=in_flight)
