"""``/sites``: the CrawlSite specs (the operator PUTs each CR's spec here) and their crawl triggers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kubecrawl.api.auth import Identity
from kubecrawl.api.deps import CrawlsDep, PublisherDep, SitesDep
from kubecrawl.api.documenting import PUBLISH_CODES, URL_CODES, errors
from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import NotFound
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import Crawl
from kubecrawl.core.schedules import next_run_at
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.core.urls import normalise_url
from kubecrawl.triggers import Quota, start_crawl

router = APIRouter(tags=["sites"])
log = get_logger(__name__)
# Kubernetes object names: DNS-1123 labels/subdomains.
_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=_NAME, max_length=253)]
Name = Annotated[str, Path(pattern=_NAME, max_length=253)]
# Keys of scheduled triggers: site:{ns}/{name}:cron:{ISO-8601}; manual keys are free-form but bounded.
_KEY = r"^[\x21-\x7e]{1,512}$"


def _whole_number(value: object) -> object:
    """JSON Schema counts 4567.0 as an integer; the strict model then takes it as 4567 (never "4567" or 4567.5)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


PageCount = Annotated[int, Field(ge=1, le=100_000), BeforeValidator(_whole_number)]


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    trigger: Literal["manual", "schedule"] = "manual"
    idempotency_key: str | None = Field(
        default=None,
        pattern=_KEY,
        description="the same key again answers 200 with the same crawl; scheduled triggers use "
        "site:{namespace}/{name}:cron:{scheduled minute, ISO-8601 UTC}",
    )
    max_pages: PageCount | None = Field(
        default=None,
        description="crawl at most this many pages this time (never more than the site's scope.maxPages); over "
        "the caller's ceiling (KUBECRAWL_AUTH_MAX_PAGES, or the API key's own) is 400 max_pages_over_limit",
    )


class Site(BaseModel):
    namespace: str
    name: str
    spec: CrawlSiteSpec = Field(description="with every default filled in")
    next_run_at: datetime | None = Field(
        description="the next minute spec.schedule fires in spec.timeZone (UTC); null without a schedule or while "
        "suspended"
    )
    created_at: datetime
    updated_at: datetime


class Triggered(Crawl):
    skipped: Literal["crawl_overlap"] | None = Field(
        default=None,
        description="present when this scheduled run started nothing: overlapPolicy Forbid and this crawl, the "
        "site's active one, still runs",
    )


class Sites(BaseModel):
    items: list[Site]


class Crawls(BaseModel):
    items: list[Crawl] = Field(description="newest first")


_UNAVAILABLE = ("database_unavailable",)
_SITE_NOT_FOUND = errors(not_found=("site_not_found",), unavailable=_UNAVAILABLE)
_PATH_CODES = ("invalid_request",)
# OpenAPI links: what a client can do with the site it just PUT, and with the crawl it just triggered.
_SITE = {"namespace": "$request.path.namespace", "name": "$request.path.name"}
_SITE_LINKS = {
    "GetSite": {"operationId": "get_site", "parameters": _SITE},
    "TriggerCrawl": {"operationId": "trigger_crawl", "parameters": _SITE},
    "ListSiteCrawls": {"operationId": "site_crawls", "parameters": _SITE},
    "DeleteSite": {"operationId": "delete_site", "parameters": _SITE},
}
_CRAWL = {"crawl_id": "$response.body#/id"}
_CRAWL_LINKS = {
    "GetCrawl": {"operationId": "get_crawl", "parameters": _CRAWL},
    "GetCrawlPages": {"operationId": "crawl_pages", "parameters": _CRAWL},
    "CancelCrawl": {"operationId": "cancel_crawl", "parameters": _CRAWL},
}


_EXAMPLE = {"url": "https://docs.example.com/", "schedule": "0 3 * * *", "scope": {"maxPages": 100}}


def validated_spec(spec: CrawlSiteSpec) -> CrawlSiteSpec:
    """What the model cannot check itself: the URL (400 with its code, core/urls.py)."""
    normalise_url(spec.url)
    return spec


@router.put(
    "/sites/{namespace}/{name}",
    response_model=Site,
    responses={
        200: {"description": "Updated", "links": _SITE_LINKS},
        201: {"model": Site, "description": "Created", "links": _SITE_LINKS},
        **errors(
            bad_request=("invalid_spec", "invalid_request", "invalid_value", *URL_CODES),
            too_large=True,
            unavailable=_UNAVAILABLE,
        ),
    },
    summary="Create or replace a site (a CrawlSite spec)",
)
async def put_site(
    namespace: Namespace, name: Name, sites: SitesDep, spec: Annotated[CrawlSiteSpec, Body(examples=[_EXAMPLE])]
) -> JSONResponse:
    parsed = validated_spec(spec)
    site, created = await sites.put(namespace, name, parsed.model_dump(mode="json", by_alias=True))
    log.info("site_synced", site=f"{namespace}/{name}", created=created)
    return JSONResponse(_site_body(site), status_code=201 if created else 200)


@router.get(
    "/sites/{namespace}/{name}",
    response_model=Site,
    responses={**_SITE_NOT_FOUND, **errors(bad_request=_PATH_CODES)},
)
async def get_site(namespace: Namespace, name: Name, sites: SitesDep) -> JSONResponse:
    site = await sites.get(namespace, name)
    if site is None:
        raise NotFound(f"site {namespace}/{name} not found", code="site_not_found")
    return JSONResponse(_site_body(site))


@router.delete(
    "/sites/{namespace}/{name}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted"}, **_SITE_NOT_FOUND, **errors(bad_request=_PATH_CODES)},
)
async def delete_site(namespace: Namespace, name: Name, sites: SitesDep) -> Response:
    if not await sites.delete(namespace, name):
        raise NotFound(f"site {namespace}/{name} not found", code="site_not_found")
    return Response(status_code=204)


@router.get("/sites", response_model=Sites, responses=errors(unavailable=_UNAVAILABLE))
async def list_sites(sites: SitesDep) -> JSONResponse:
    return JSONResponse({"items": [_site_body(site) for site in await sites.list()]})


@router.post(
    "/sites/{namespace}/{name}/crawls",
    status_code=202,
    response_model=Crawl,
    responses={
        200: {
            "model": Triggered,
            "description": "The crawl this idempotency key started before, or (overlapPolicy Forbid, a scheduled "
            "trigger) the site's active crawl with skipped: crawl_overlap",
            "links": _CRAWL_LINKS,
        },
        202: {"description": "A new crawl, its first pages published", "links": _CRAWL_LINKS},
        **errors(
            bad_request=("invalid_request", "invalid_value", "max_pages_over_limit"),
            not_found=("site_not_found",),
            conflict=("idempotency_key_conflict",),
            too_many=("too_many_crawls",),
            too_large=True,
            unavailable=(*PUBLISH_CODES, *_UNAVAILABLE),
        ),
    },
    summary="Start a crawl of the site",
)
async def trigger_crawl(
    namespace: Namespace,
    name: Name,
    sites: SitesDep,
    crawls: CrawlsDep,
    publisher: PublisherDep,
    request: Request,
    body: TriggerRequest | None = None,
) -> JSONResponse:
    body = body or TriggerRequest()
    triggered = await start_crawl(
        sites,
        crawls,
        publisher,
        namespace,
        name,
        trigger=body.trigger,
        idempotency_key=body.idempotency_key,
        quota=crawl_quota(request, namespace, name, scheduled=body.trigger == "schedule"),
        max_pages=body.max_pages,
    )
    answer = triggered.crawl.model_dump(mode="json")
    if triggered.skipped is not None:
        # overlapPolicy Forbid: nothing started; the body is the crawl still running, and says so.
        answer["skipped"] = triggered.skipped
    return JSONResponse(answer, status_code=202 if triggered.created else 200)


@router.get(
    "/sites/{namespace}/{name}/crawls",
    response_model=Crawls,
    responses=errors(bad_request=_PATH_CODES, unavailable=_UNAVAILABLE),
)
async def site_crawls(
    namespace: Namespace,
    name: Name,
    crawls: CrawlsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    items = await crawls.list_for_site(namespace, name, limit=limit)
    return JSONResponse({"items": [crawl.model_dump(mode="json") for crawl in items]})


def crawl_quota(request: Request, namespace: str, name: str, *, scheduled: bool) -> Quota | None:
    """The caller's crawl quota (docs/security.md, "Crawl quotas"); None with authentication off. A scheduled run
    counts against its site, not against the trigger's identity (every CronJob of a namespace may share one
    ServiceAccount), and keeps the site's scope.maxPages: the CrawlSite's author chose it."""
    principal = request.scope.get("state", {}).get("identity")
    if principal is None:
        return None
    settings = request.app.state.settings
    concurrent: int = settings.auth_max_concurrent_crawls
    if scheduled:
        return Quota(f"site:{namespace}/{name}", max_concurrent=concurrent)
    pages: int = settings.auth_max_pages
    if isinstance(principal, Identity):
        concurrent = concurrent if principal.max_concurrent_crawls is None else principal.max_concurrent_crawls
        pages = pages if principal.max_pages is None else principal.max_pages
        return Quota(f"key:{principal.name}", concurrent, pages)
    return Quota(f"user:{principal.name}", concurrent, pages)


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
