"""What the RabbitMQ publisher and consumer share about their connection: how long a connect may take, and
closing what was opened without letting a broker that is already gone fail the shutdown."""

from __future__ import annotations

import contextlib

import aio_pika.abc

# A TCP connect plus AMQP handshake to a healthy broker takes milliseconds; 10 s means it is not answering.
CONNECT_TIMEOUT_SECONDS = 10.0


async def close_quietly(
    channel: aio_pika.abc.AbstractChannel | None, connection: aio_pika.abc.AbstractConnection | None
) -> None:
    """Close the channel, then the connection; either may be gone already (a broker restart), which is fine."""
    for closable in (channel, connection):
        if closable is not None:
            with contextlib.suppress(Exception):
                await closable.close()
