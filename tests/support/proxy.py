"""A TCP forwarder on 127.0.0.1 that a test can cut and restore, to make one client's server unreachable (say the
operator's RabbitMQ) while every other process keeps using the real server directly.

``cut()`` closes the listening socket and every forwarded connection: new connections are refused, existing ones
see a reset, exactly what a client sees when a broker host goes away. ``restore()`` listens on the same port again.
Runs its own event loop in a thread, so it outlives each test's loop (session or module fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from tests.support.servers import free_port


class TcpProxy:
    def __init__(self, target_port: int, *, host: str = "127.0.0.1", listen_host: str | None = None) -> None:
        """Forward ``listen_host`` (default: ``host``):``port`` to ``host``:``target_port``; e.g. a node's Pods reach
        a server on 127.0.0.1 through the bridge address (``listen_host=node.host_ip``)."""
        self.host = host
        self.listen_host = listen_host or host
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    @property
    def cut_off(self) -> bool:
        return self._server is None

    def restore(self) -> None:
        async def listen() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._handle, self.listen_host, self.port, reuse_address=True)

        self._run(listen())

    def cut(self) -> None:
        async def close() -> None:
            server, self._server = self._server, None
            if server is not None:
                server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            if server is not None:
                await server.wait_closed()

        self._run(close())

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update({client_writer, server_writer})

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        try:
            await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
        finally:
            self._writers.difference_update({client_writer, server_writer})
