"""Probes: liveness says the process runs; readiness says it can take traffic (publisher READY and DB ping)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubecrawl.api.deps import PublisherDep
from kubecrawl.broker.base import PublisherState
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.logging import get_logger

router = APIRouter(tags=["health"])
log = get_logger(__name__)


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request, publisher: PublisherDep) -> JSONResponse:
    reasons: dict[str, str] = {}
    if publisher.state is not PublisherState.READY:
        reasons["publisher_not_ready"] = f"publisher is {publisher.state}"
    try:
        await request.app.state.database.ping()
    except StoreUnavailable as exc:
        reasons["database_unavailable"] = exc.detail
    if reasons:
        reason = ",".join(reasons)
        log.warning("readiness_failed", reason=reason, detail=reasons)
        return JSONResponse({"status": "unavailable", "reason": reason, "detail": reasons}, 503)
    return JSONResponse({"status": "ready", "publisher": publisher.state.value, "database": "ok"}, 200)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
