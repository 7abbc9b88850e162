"""What the RabbitMQ publisher and consumer share about their connection: how long a connect may take, and
closing what was opened without letting a broker that is already gone fail the shutdown."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika.abc

# A TCP connect plus AMQP handshake to a healthy broker takes milliseconds; 10 s means it is not answering.
CONNECT_TIMEOUT_SECONDS = 10.0
# A broker that stopped reading from this connection (a memory or disk alarm blocks publishers) never answers
# Channel.Close: close() would hang until the pod is killed. The connection's close, which aiormq bounds itself,
# then ends the socket and fails every confirm still outstanding (tests/integration/test_publisher_shutdown.py).
CHANNEL_CLOSE_TIMEOUT_SECONDS = 5.0


async def close_quietly(
    channel: aio_pika.abc.AbstractChannel | None, connection: aio_pika.abc.AbstractConnection | None
) -> None:
    """Close the channel (within CHANNEL_CLOSE_TIMEOUT_SECONDS), then the connection; either may be gone already
    (a broker restart), which is fine."""
    if channel is not None:
        with contextlib.suppress(Exception):  # TimeoutError included: the connection's close follows
            async with asyncio.timeout(CHANNEL_CLOSE_TIMEOUT_SECONDS):
                await channel.close()
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.close()
