"""Dependencies: everything a route needs comes from ``app.state``, set once by ``create_app``.

Every dependency is ``async def`` although none awaits anything: FastAPI runs a plain ``def`` dependency in
its thread pool, and four thread hops cost about 1 ms of CPU per request, a sixth of the whole request on the
benchmark machine (bench/publish.py). ``POST /metadata``, the hot path, uses none: see ``routes/metadata.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubecrawl.broker.base import Publisher
from kubecrawl.core.settings import Settings
from kubecrawl.store.contract import CrawlStore, PageMetadataStore, SiteStore


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def get_pages(request: Request) -> PageMetadataStore:
    pages: PageMetadataStore = request.app.state.pages
    return pages


async def get_request_id(request: Request) -> str:
    request_id: str = request.scope["state"]["request_id"]
    return request_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
PagesDep = Annotated[PageMetadataStore, Depends(get_pages)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


async def get_sites(request: Request) -> SiteStore:
    sites: SiteStore = request.app.state.sites
    return sites


async def get_crawls(request: Request) -> CrawlStore:
    crawls: CrawlStore = request.app.state.crawls
    return crawls


SitesDep = Annotated[SiteStore, Depends(get_sites)]
CrawlsDep = Annotated[CrawlStore, Depends(get_crawls)]
