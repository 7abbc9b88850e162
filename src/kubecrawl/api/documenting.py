"""The OpenAPI document: what every route answers, written once, so ``/openapi.json`` (and ``docs/openapi.json``,
regenerated with ``scripts/openapi``) describes the API a client talks to (issue 18).

Routes declare their error answers with ``errors(…)``: one ``Error`` schema (``{code, detail}``) and, per status,
the ``code`` values that status can carry. ``install`` then finishes the document FastAPI builds:

- FastAPI's ``422`` and its ``HTTPValidationError`` schema are dropped: the API answers bad input with 400
  (``api/errors.py``), never 422.
- With authentication on (``KUBECRAWL_AUTH`` other than ``none``) one ``bearer`` scheme is declared and required
  by every operation but ``/health/*`` and ``/metrics`` (unless ``KUBECRAWL_METRICS_REQUIRE_AUTH``); each of the
  others also documents 401 ``unauthenticated`` (with ``WWW-Authenticate``) and 403 ``forbidden``. The token is
  an API key or, in a cluster, a ServiceAccount token; both travel as ``Authorization: Bearer``. Without
  authentication the document declares none, because the API asks for none (a document that requires a token
  the API never checks is as wrong as the reverse).
- The event payloads of ``GET /crawls/{crawl_id}/events`` are added as components: its ``text/event-stream``
  schema describes one event (``event``, ``id``, ``data`` holding JSON of ``Progress`` or ``Crawl``).
- Every answer documents its ``X-Request-ID`` header.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from kubecrawl.core.settings import Settings

ERROR_SCHEMA = "#/components/schemas/Error"
# Answered by the publisher when a message cannot be confirmed now (docs/api.md, error codes).
# The codes core/urls.py refuses a URL with.
URL_CODES = ("empty_url", "invalid_url", "url_too_long", "url_userinfo", "unsupported_scheme")
PUBLISH_CODES = ("publisher_not_ready", "queue_rejected", "connection_lost", "publish_timeout")
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
_DESCRIPTIONS = {
    400: "Bad input: fix the request (never FastAPI's 422)",
    401: "No valid credentials",
    403: "The credentials do not allow this",
    404: "No such resource",
    409: "Conflicts with the current state",
    413: "Request body over KUBECRAWL_MAX_REQUEST_BODY_BYTES",
    429: "Too many event streams open; retry after Retry-After",
    503: "Cannot be done now (broker or database); retry after Retry-After",
}


class Error(BaseModel):
    """Every error answer: clients branch on ``code`` (stable, snake_case), never on ``detail``."""

    code: str = Field(description="stable, snake_case; the codes each status can carry are listed per route")
    detail: str = Field(description="human-readable explanation")


def error_answer(status: int, codes: Iterable[str]) -> dict[str, Any]:
    """The OpenAPI response of one error status, its ``code`` narrowed to ``codes``."""
    answer: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {
            "application/json": {
                "schema": {"allOf": [{"$ref": ERROR_SCHEMA}], "properties": {"code": {"enum": sorted(set(codes))}}}
            }
        },
    }
    if status in {429, 503}:
        answer["headers"] = _RETRY_AFTER
    return answer


def errors(
    *,
    bad_request: Iterable[str] = (),
    not_found: Iterable[str] = (),
    conflict: Iterable[str] = (),
    too_large: bool = False,
    too_many: Iterable[str] = (),
    unavailable: Iterable[str] = (),
) -> dict[int | str, dict[str, Any]]:
    """A route's error answers for ``responses=``; 401/403 are added by ``install`` when auth is on."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status, codes in ((400, bad_request), (404, not_found), (409, conflict), (429, too_many), (503, unavailable)):
        listed = tuple(codes)
        if listed:
            answers[status] = error_answer(status, listed)
    if too_large:
        answers[413] = error_answer(413, ("body_too_large",))
    return answers


def _auth_answers() -> dict[str, dict[str, Any]]:
    unauthenticated = error_answer(401, (UNAUTHENTICATED,))
    unauthenticated["headers"] = {
        "WWW-Authenticate": {"description": 'Bearer realm="kubecrawl"', "schema": {"type": "string"}}
    }
    return {"401": unauthenticated, "403": error_answer(403, (FORBIDDEN,))}


BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "`Authorization: Bearer <token>`. The token is an API key made with `kubecrawl keys create` (scoped "
        "read/write/admin, optionally to namespaces), or in a cluster a Kubernetes ServiceAccount token, checked "
        "with TokenReview. See docs/security.md."
    ),
}


def _models_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "serialization") for model in models], ref_template="#/components/schemas/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


# Every answer carries the request's id (api/observing.py): the client's own X-Request-ID, else one made here.
_REQUEST_ID = {
    "X-Request-ID": {
        "description": "the request's id, in the logs and in what it enqueued (the client's, 1-64 printable "
        "characters, or one the API made)",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _finish(
    document: dict[str, Any], *, auth: bool, metrics_public: bool, extra_models: Iterable[type[BaseModel]]
) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(_models_schemas([Error, *extra_models]))
    if auth:
        components["securitySchemes"] = {"bearer": BEARER}
        document["security"] = [{"bearer": []}]
    for path, item in document.get("paths", {}).items():
        for operation in item.values():
            answers = operation["responses"]
            answers.pop("422", None)
            if auth and (path.startswith("/health/") or (path == "/metrics" and metrics_public)):
                operation["security"] = []  # public: probes and (by default) Prometheus carry no token
            elif auth:
                answers.update(_auth_answers())
            for answer in answers.values():
                answer["headers"] = {**answer.get("headers", {}), **_REQUEST_ID}
    return document


def install(app: FastAPI, settings: Settings, *, extra_models: Iterable[type[BaseModel]] = ()) -> None:
    """Replace ``app.openapi`` with one that finishes FastAPI's document as the module docstring says."""
    models = tuple(extra_models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            app.openapi_schema = _finish(
                document,
                auth=settings.auth != "none",
                metrics_public=not settings.metrics_require_auth,
                extra_models=models,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def operation_id(route: Any) -> str:
    """Operation ids are the endpoints' names (``put_site``, ``trigger_crawl``): stable, and what a generated
    client names its functions."""
    name: str = route.name
    return name
