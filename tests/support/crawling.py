"""Driving a site crawl through the API, as a client would: put the site, trigger a crawl, wait for it to finish,
read its pages (every page, following the cursor two at a time so pagination is exercised too)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.polling import eventually
from tests.support.sites import Site


def links(*paths: str) -> str:
    return "".join(f"<a href='{p}'>{p}</a>" for p in paths)


async def put_site(client: httpx.AsyncClient, name: str, spec: dict[str, Any]) -> None:
    response = await client.put(f"/sites/default/{name}", json=spec)
    assert response.status_code in (200, 201), response.text


async def trigger(client: httpx.AsyncClient, name: str, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"trigger": "manual"}
    if key is not None:
        body["idempotency_key"] = key
    response = await client.post(f"/sites/default/{name}/crawls", json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_crawl(client: httpx.AsyncClient, crawl_id: str, timeout: float = 60) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        crawl = (await client.get(f"/crawls/{crawl_id}")).json()
        return crawl if crawl["state"] in ("COMPLETED", "FAILED", "CANCELLED") else None

    return await eventually(finished, timeout=timeout, what=f"crawl {crawl_id} to finish")


async def all_pages(client: httpx.AsyncClient, crawl_id: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get(f"/crawls/{crawl_id}/pages", params=query)).json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def crawl_site(client: httpx.AsyncClient, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    await put_site(client, name, spec)
    crawl = await trigger(client, name)
    done = await wait_crawl(client, crawl["id"])
    return done, await all_pages(client, crawl["id"])


def paths(site: Site, pages: list[dict[str, Any]], state: str = "DONE") -> set[str]:
    return {p["url"].removeprefix(site.base) for p in pages if p["state"] == state}
