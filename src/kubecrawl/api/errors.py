"""The one place errors become HTTP answers: ``{"code": "snake_case", "detail": "…"}``.

400 for bad input (never FastAPI's 422), 404/409 for missing or conflicting resources, 503 for a broker or
database that cannot take the request now (clients should retry), 500 for bugs (logged with the traceback).
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from kubecrawl.core.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    KubecrawlError,
    NotFound,
    PermanentError,
    TooManyRequests,
    TransientError,
)
from kubecrawl.core.logging import get_logger
from kubecrawl.store.database import refused_value

log = get_logger(__name__)


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"code": code, "detail": detail}


# Most specific first: TooManyRequests is a TransientError, BodyTooLarge and NotFound are PermanentErrors.
_STATUSES: tuple[tuple[type[KubecrawlError], int], ...] = (
    (BodyTooLarge, 413),
    (TooManyRequests, 429),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (PermanentError, 400),
    (TransientError, 503),
)


def status_for(exc: KubecrawlError) -> int:
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)), 500)


def _retry_headers(exc: KubecrawlError) -> dict[str, str]:
    # Tell clients and load balancers when to come back; a broker reconnect takes about a second.
    # A quota says longer (too_many_crawls: a crawl takes minutes).
    if not isinstance(exc, TransientError):
        return {}
    return {"Retry-After": str(math.ceil(exc.retry_after)) if exc.retry_after else "1"}


async def _kubecrawl_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KubecrawlError)
    return JSONResponse(error_body(exc.code, exc.detail), status_code=status_for(exc), headers=_retry_headers(exc))


# The code of a body that does not validate, by route name, where it is not ``invalid_request``: a site spec the
# CRD would refuse is ``invalid_spec`` (the operator reports it on the CrawlSite). Unknown fields are refused like
# any other invalid field (the request models forbid extras, and the OpenAPI document says
# ``additionalProperties: false``).
_INVALID_BODY_CODES = {"put_site": "invalid_spec"}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in exc.errors()
    )
    code = "invalid_request"
    if exc.errors() and all(tuple(err.get("loc", ()))[:1] == ("body",) for err in exc.errors()):
        code = _INVALID_BODY_CODES.get(getattr(request.scope.get("route"), "name", ""), code)
    return JSONResponse(error_body(code, problems or "invalid request"), status_code=400)


# Methods a 405 may name: those of RFC 9110 that routes can have (CONNECT and TRACE are never routed).
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405 (RFC 9110 §15.5.6): every method the app routes for this path.

    Starlette names only the first matching route's methods, and FastAPI has one route per method, so each
    method is matched against the app's routes, as the router itself would.
    """
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # 400: a body FastAPI could not parse (not JSON at all), answered like any other invalid request.
    code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if refused_value(exc):
        return await _data_error(request, exc)
    log.warning("database_error", error=repr(exc))
    return JSONResponse(
        error_body("database_unavailable", "the database did not answer"),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    # The database refused a value of this request (a NUL byte, a number out of range): the request is wrong, the
    # database is fine. Never 503: a client would retry the same bad value forever.
    log.info("database_refused_value", error=repr(exc)[:500])
    return JSONResponse(error_body("invalid_value", "the database refused a value of this request"), status_code=400)


def unexpected_error_response() -> JSONResponse:
    return JSONResponse(error_body("internal_error", "unexpected error; see the server log"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(KubecrawlError, _kubecrawl_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(DBAPIError, _database_error)
    # Every pooled connection busy for pool_timeout: the database is too slow to keep up, not a bug.
    app.add_exception_handler(PoolTimeout, _database_error)
