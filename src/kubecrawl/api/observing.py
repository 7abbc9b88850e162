"""Per-request middleware: request id, structlog context, Prometheus metrics, and the last-resort 500.

A plain ASGI middleware (not ``BaseHTTPMiddleware``) so streaming responses (SSE) pass through untouched.
"""

from __future__ import annotations

import random
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubecrawl.api.errors import unexpected_error_response
from kubecrawl.core import metrics
from kubecrawl.core.logging import get_logger

log = get_logger(__name__)
_REQUEST_ID_HEADER = b"x-request-id"
# A client-supplied request id is echoed only if it is short and printable; it ends up in logs.
_MAX_REQUEST_ID = 64


class ObservingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Labelled metric children by (method, route, status): ``labels()`` costs several times the increment it
        # precedes, on every request. Bounded like the labels themselves (route templates, status codes).
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", []).append((_REQUEST_ID_HEADER, request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled_error", path=scope.get("path"))
            status = 500
            if not response_started:
                await unexpected_error_response()(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (scope.get("method", "GET"), template, status)
            requests, latency = self._children.get(key) or self._add_children(key)
            requests.inc()
            latency.observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")

    def _add_children(self, key: tuple[str, str, int]) -> tuple[Counter, Histogram]:
        method, template, status = key
        children = (
            metrics.API_REQUESTS.labels(method=method, route=template, status=str(status)),
            metrics.API_LATENCY.labels(method=method, route=template),
        )
        self._children[key] = children
        return children


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            candidate = str(value.decode("latin-1"))
            if 0 < len(candidate) <= _MAX_REQUEST_ID and candidate.isprintable():
                return candidate
    # 128 random bits as 32 hex digits, like uuid4().hex but without a getrandom() system call per request. The
    # id names a request in logs and messages; it is no secret (a client may choose its own), so the seeded
    # Mersenne Twister is enough.
    return f"{random.getrandbits(128):032x}"
