"""SSRF: every spelling of a private address, directly, by redirect, by DNS and at the socket, against real servers.

Sites listen on loopback; the guard is on (``GUARDED``, or ``INTRANET`` which opens exactly 127.0.0.2 so that an
"allowed" site can redirect). Each test asserts the private site saw no request at all, not only that an error
came back. aiohttp ≥ 3.14.1 happens to refuse some numeric hosts itself; these tests pass through kubecrawl's own
normalisation first, and the connector tests below leave the library no say at all.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from kubecrawl.core.errors import BlockedTarget, InvalidUrl
from kubecrawl.core.settings import FetchSettings, Settings
from kubecrawl.fetch.fetching import Fetcher, FetchResult
from kubecrawl.fetch.guarding import GuardedConnector
from tests.support.api import ApiHandle
from tests.support.guarded import GUARDED, INTRANET, final_record
from tests.support.sites import Page, Site

SETTINGS = FetchSettings(timeout_seconds=30)

# Every way of writing 127.0.0.1 (or a v6 address that reaches it) that some resolver or HTTP library accepts.
LOOPBACK_FORMS = [
    "2130706433",  # decimal
    "017700000001",  # octal
    "0x7f000001",  # hex
    "0x7f.0.0.1",
    "0177.0.0.1",
    "127.1",  # shortened
    "127.0.1",
    "0",  # 0.0.0.0: Linux connects it to the local host
    "0x0",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",  # NAT64
    "[2002:7f00:1::1]",  # 6to4
    "[::1]",
]


async def fetch(url: str, *, policy: Any = GUARDED, resolver: AbstractResolver | None = None) -> FetchResult:
    async with Fetcher(SETTINGS, policy, resolver=resolver) as fetcher:
        return await fetcher.fetch(url)


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_every_loopback_spelling_is_refused_before_anything_is_sent(site: Site, host: str) -> None:
    site.html("/", title="private")
    with pytest.raises(BlockedTarget):
        await fetch(f"http://{host}:{site.port}/")
    assert site.hits.total() == 0


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_a_redirect_to_every_loopback_spelling_is_refused(site: Site, allowed_site: Site, host: str) -> None:
    site.html("/secret", title="secret")
    allowed_site.pages["/go"] = Page(b"", status=302, headers={"Location": f"http://{host}:{site.port}/secret"})
    with pytest.raises(BlockedTarget):
        await fetch(allowed_site.url("/go"), policy=INTRANET)
    assert allowed_site.hits["/go"] == 1
    assert site.hits.total() == 0


async def test_credentials_in_a_redirect_are_never_sent(allowed_site: Site) -> None:
    allowed_site.html("/in", title="in")
    allowed_site.pages["/go"] = Page(
        b"", status=302, headers={"Location": allowed_site.url("/in").replace("//", "//u:p@")}
    )
    seen: list[str | None] = []

    async def record(request: Any) -> Any:
        seen.append(request.headers.get("Authorization"))
        return aiohttp.web.Response(text="no")

    allowed_site.handlers["/in"] = record
    with pytest.raises(InvalidUrl) as info:
        await fetch(allowed_site.url("/go"), policy=INTRANET)
    assert info.value.code == "url_userinfo"
    assert seen == []


class ScriptedResolver(AbstractResolver):
    """A DNS server under the test's control: each lookup gets the next answer of the script."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.questions.append(host)
        addresses = self.answers.pop(0)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_dns_answer_that_changes_to_a_private_address_is_refused(site: Site, allowed_site: Site) -> None:
    # rebinding: the first answer is the allowed intranet address, the next one loopback
    allowed_site.html("/", title="intranet")
    site.html("/", title="private")
    resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
    url = f"http://rebind.kubecrawl.test:{allowed_site.port}/"
    assert (await fetch(url, policy=INTRANET, resolver=resolver)).status_code == 200
    with pytest.raises(BlockedTarget):
        await fetch(url.replace(str(allowed_site.port), str(site.port)), policy=INTRANET, resolver=resolver)
    assert resolver.questions == ["rebind.kubecrawl.test", "rebind.kubecrawl.test"]
    assert allowed_site.hits.total() == 1
    assert site.hits.total() == 0


async def test_one_private_address_among_several_answers_refuses_the_host(site: Site) -> None:
    site.html("/", title="private")
    resolver = ScriptedResolver(["93.184.216.34", "127.0.0.1"])
    with pytest.raises(BlockedTarget):
        await fetch(f"http://mixed.kubecrawl.test:{site.port}/", resolver=resolver)
    assert site.hits.total() == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"])
async def test_the_connected_peer_is_checked_even_when_nothing_else_is(site: Site, host: str) -> None:
    # The connector alone, with an unguarded resolver and no URL check: what stands between any host the HTTP
    # library accepts and a private socket.
    site.html("/", title="private")
    connector = GuardedConnector(GUARDED, resolver=DefaultResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(BlockedTarget):
            await session.get(f"http://{host}:{site.port}/")
    assert site.hits.total() == 0


async def test_the_peer_check_lets_allowed_networks_through(allowed_site: Site) -> None:
    allowed_site.html("/", title="intranet")
    connector = GuardedConnector(INTRANET, resolver=DefaultResolver())
    async with aiohttp.ClientSession(connector=connector) as session, session.get(allowed_site.url("/")) as response:
        assert response.status == 200


@pytest.mark.parametrize("host", [*LOOPBACK_FORMS, "u:p@example.com", "169.254.169.254", "2852039166"])
async def test_the_api_refuses_every_private_spelling_with_400(api: ApiHandle, settings: Settings, host: str) -> None:
    api.app.state.settings = settings.model_copy(update={"allow_private_targets": False})
    response = await api.client.post("/metadata", json={"url": f"http://{host}/x"})
    assert response.status_code == 400
    assert response.json()["code"] in {"blocked_target", "url_userinfo"}
    missing = await api.client.get("/metadata", params={"url": f"http://{host}/x"})
    assert missing.status_code == 400


async def test_a_worker_fails_permanently_on_a_redirect_to_a_decimal_loopback_host(
    api: ApiHandle,
    site: Site,
    allowed_site: Site,
    guarded_settings: Settings,
    guarded_worker: asyncio.Task[None],
) -> None:
    api.app.state.settings = guarded_settings
    site.html("/secret", title="secret")
    allowed_site.pages["/go"] = Page(b"", status=302, headers={"Location": f"http://2130706433:{site.port}/secret"})
    url = allowed_site.url("/go")
    assert (await api.client.post("/metadata", json={"url": url})).status_code == 202
    record = await final_record(api.client, url, guarded_worker)
    assert record["status"] == "FAILED_PERMANENT"
    assert record["last_error_code"] == "blocked_target"
    assert site.hits.total() == 0
