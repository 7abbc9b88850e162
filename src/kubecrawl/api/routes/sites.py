"""``/sites``: the CrawlSite specs (the operator PUTs each CR's spec here) and their crawl triggers."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from kubecrawl.api.deps import CrawlsDep, PublisherDep, SitesDep
from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import NotFound, PermanentError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.sites import CrawlSiteSpec, next_run_at
from kubecrawl.core.urls import normalise_url
from kubecrawl.triggers import start_crawl

router = APIRouter(tags=["sites"])
log = get_logger(__name__)
# Kubernetes object names: DNS-1123 labels/subdomains.
_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=_NAME, max_length=253)]
Name = Annotated[str, Path(pattern=_NAME, max_length=253)]
# Keys of scheduled triggers: site:{ns}/{name}:cron:{ISO-8601}; manual keys are free-form but bounded.
_KEY = re.compile(r"^[\x21-\x7e]{1,512}$")


class TriggerRequest(BaseModel):
    trigger: Literal["manual", "schedule"] = "manual"
    idempotency_key: str | None = None


def validated_spec(raw: Any) -> CrawlSiteSpec:
    try:
        spec = CrawlSiteSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PermanentError(problems, code="invalid_spec") from exc
    normalise_url(spec.url)
    return spec


@router.put("/sites/{namespace}/{name}")
async def put_site(
    namespace: Namespace, name: Name, sites: SitesDep, spec: Annotated[dict[str, Any], Body()]
) -> JSONResponse:
    parsed = validated_spec(spec)
    site, created = await sites.put(namespace, name, parsed.model_dump(mode="json", by_alias=True))
    log.info("site_synced", site=f"{namespace}/{name}", created=created)
    return JSONResponse(_site_body(site), status_code=201 if created else 200)


@router.get("/sites/{namespace}/{name}")
async def get_site(namespace: Namespace, name: Name, sites: SitesDep) -> JSONResponse:
    site = await sites.get(namespace, name)
    if site is None:
        raise NotFound(f"site {namespace}/{name} not found", code="site_not_found")
    return JSONResponse(_site_body(site))


@router.delete("/sites/{namespace}/{name}", status_code=204)
async def delete_site(namespace: Namespace, name: Name, sites: SitesDep) -> Response:
    if not await sites.delete(namespace, name):
        raise NotFound(f"site {namespace}/{name} not found", code="site_not_found")
    return Response(status_code=204)


@router.get("/sites")
async def list_sites(sites: SitesDep) -> dict[str, list[dict[str, Any]]]:
    return {"items": [_site_body(site) for site in await sites.list()]}


@router.post("/sites/{namespace}/{name}/crawls")
async def trigger_crawl(
    namespace: Namespace,
    name: Name,
    sites: SitesDep,
    crawls: CrawlsDep,
    publisher: PublisherDep,
    body: TriggerRequest | None = None,
) -> JSONResponse:
    body = body or TriggerRequest()
    if body.idempotency_key is not None and not _KEY.match(body.idempotency_key):
        raise PermanentError("idempotency_key must be 1-512 printable characters", code="invalid_idempotency_key")
    triggered = await start_crawl(
        sites,
        crawls,
        publisher,
        namespace,
        name,
        trigger=body.trigger,
        idempotency_key=body.idempotency_key,
    )
    answer = triggered.crawl.model_dump(mode="json")
    if triggered.skipped is not None:
        # overlapPolicy Forbid: nothing started; the body is the crawl still running, and says so.
        answer["skipped"] = triggered.skipped
    return JSONResponse(answer, status_code=202 if triggered.created else 200)


@router.get("/sites/{namespace}/{name}/crawls")
async def site_crawls(
    namespace: Namespace,
    name: Name,
    crawls: CrawlsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, list[dict[str, Any]]]:
    items = await crawls.list_for_site(namespace, name, limit=limit)
    return {"items": [crawl.model_dump(mode="json") for crawl in items]}


def _site_body(site: dict[str, Any]) -> dict[str, Any]:
    upcoming = next_run_at(site["spec"], utcnow())
    return {
        "namespace": site["namespace"],
        "name": site["name"],
        "spec": site["spec"],
        # the next scheduled minute (UTC) by the site's cron and timeZone; null without a schedule or suspended
        "next_run_at": None if upcoming is None else upcoming.isoformat(),
        "created_at": site["created_at"].isoformat(),
        "updated_at": site["updated_at"].isoformat(),
    }
