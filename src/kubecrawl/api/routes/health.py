"""Probes: liveness says the process runs; readiness says it can take traffic (publisher READY and the database
CONNECTED, as ``store/connection.py``'s watch last saw it)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from kubecrawl.api.deps import PublisherDep
from kubecrawl.broker.base import PublisherState
from kubecrawl.core.logging import get_logger
from kubecrawl.store.connection import DatabaseConnection

router = APIRouter(tags=["health"])
log = get_logger(__name__)


class Live(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    publisher: str
    database: Literal["ok"]


class NotReady(BaseModel):
    status: Literal["unavailable"]
    reason: str = Field(description="comma-separated: shutting_down, publisher_not_ready, database_unavailable")
    detail: dict[str, str] = Field(description="each reason's explanation")


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    return Live(status="ok")


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "Not ready: the publisher or the database"}},
)
async def ready(request: Request, publisher: PublisherDep) -> JSONResponse:
    reasons: dict[str, str] = {}
    if request.app.state.lifecycle.draining:  # SIGTERM: leave the endpoints while still serving (api/serving.py)
        reasons["shutting_down"] = "the process received SIGTERM and is draining"
    if publisher.state is not PublisherState.READY:
        reasons["publisher_not_ready"] = f"publisher is {publisher.state}"
    database: DatabaseConnection = request.app.state.connection
    if not database.connected:
        reasons["database_unavailable"] = f"database is {database.state}: {database.last_error}"
    if reasons:
        reason = ",".join(reasons)
        log.warning("readiness_failed", reason=reason, detail=reasons)
        return JSONResponse({"status": "unavailable", "reason": reason, "detail": reasons}, 503)
    return JSONResponse({"status": "ready", "publisher": publisher.state.value, "database": "ok"}, 200)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
