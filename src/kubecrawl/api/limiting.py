"""Request body limit: 413 ``body_too_large`` before a body larger than the setting is read whole.

A plain ASGI middleware, inside ``ObservingMiddleware`` (so the 413 is counted and carries its request id). A
``Content-Length`` over the limit is answered at once, nothing read; a body without one (chunked) is counted as
it arrives, and the first chunk past the limit ends it: the app's ``receive`` raises, and whatever the app then
answers (FastAPI turns a failed body read into its own 400) is replaced by the 413. Memory held for a body is
thus the limit plus one chunk (uvicorn reads 64 KiB at a time), whatever the client sends: a 300 MiB
``POST /metadata`` took the API to about 1 GB resident before (issue 12).
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubecrawl.core.errors import BodyTooLarge


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        exchange = _Exchange(receive, send, self.max_bytes)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BodyTooLarge:
            if exchange.answered:
                raise
            await exchange.refuse()


class _Exchange:
    """One request's body count, and whether its answer went out."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._received = 0
        self.exceeded = False
        self.answered = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise BodyTooLarge(f"request body larger than {self._max_bytes} bytes")
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._max_bytes:
                self.exceeded = True
                raise BodyTooLarge(f"request body larger than {self._max_bytes} bytes")
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded:  # the app's own answer to a body it could not read is replaced by the 413, once
            if not self.answered:
                await self.refuse()
            return
        self.answered = self.answered or message["type"] == "http.response.start"
        await self._send(message)

    async def refuse(self) -> None:
        self.answered = True
        await _refuse(self._send, self._max_bytes)


async def _refuse(send: Send, max_bytes: int) -> None:
    body = orjson.dumps({"code": BodyTooLarge.code, "detail": f"request body larger than {max_bytes} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # The rest of the body is not read: the connection cannot carry another request.
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None
    return None
