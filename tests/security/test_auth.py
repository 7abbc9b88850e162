"""API keys: every route of the OpenAPI document without a key, with a wrong one, with too small a scope and with
another namespace's key; the `kubecrawl keys` CLI; the operator's client with ``KUBECRAWL_API_KEY``; standalone
refusing to listen beyond loopback without authentication. Real API, PostgreSQL and RabbitMQ.

The routes come from the app's own OpenAPI document, so a route added without authentication fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi
from kubecrawl.store.database import create_engine
from kubecrawl.store.keys import KeyStore
from tests.support.api import ApiHandle, running_api
from tests.support.environment import env_for

# The scope each route needs, written out here rather than read from api/auth.py: a route missing from this table
# fails the tests until someone decides who may call it.
EXPECTED = {
    ("POST", "/metadata"): "write",
    ("GET", "/metadata"): "write",  # enqueues a fetch on a miss
    ("GET", "/health/live"): None,
    ("GET", "/health/ready"): None,
    ("GET", "/metrics"): None,  # unless KUBECRAWL_METRICS_REQUIRE_AUTH (test_metrics_need_a_key_when_told)
    ("PUT", "/sites/{namespace}/{name}"): "admin",
    ("GET", "/sites/{namespace}/{name}"): "read",
    ("DELETE", "/sites/{namespace}/{name}"): "admin",
    ("GET", "/sites"): "read",
    ("POST", "/sites/{namespace}/{name}/crawls"): "write",
    ("GET", "/sites/{namespace}/{name}/crawls"): "read",
    ("GET", "/crawls/{crawl_id}"): "read",
    ("GET", "/crawls/{crawl_id}/pages"): "read",
    ("POST", "/crawls/{crawl_id}/cancel"): "write",
    ("GET", "/crawls/{crawl_id}/events"): "read",
    ("GET", "/openapi.json"): "read",
    ("GET", "/docs"): "read",
}


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": "api_keys", "auth_cache_seconds": 0})


@pytest.fixture
async def authed(auth_settings: Settings) -> AsyncIterator[ApiHandle]:
    async with running_api(auth_settings) as handle:
        yield handle


@pytest.fixture
async def keys(auth_settings: Settings) -> AsyncIterator[KeyStore]:
    engine = create_engine(auth_settings.database_url.get_secret_value())
    yield KeyStore(engine)
    await engine.dispose()


def operations(api: ApiHandle) -> list[tuple[str, str, str | None]]:
    """Every (method, concrete path, scope needed) of the OpenAPI document (and its own pages)."""
    found = []
    documented = [(m.upper(), t) for t, item in api.app.openapi()["paths"].items() for m in item]
    for method, template in [*documented, ("GET", "/openapi.json"), ("GET", "/docs")]:
        assert (method, template) in EXPECTED, f"{method} {template}: decide its scope in EXPECTED and api/auth.py"
        path = re.sub(r"\{namespace\}", "default", template)
        path = re.sub(r"\{name\}", "s", path)
        path = re.sub(r"\{crawl_id\}", "0b8a4e0c-0000-4000-8000-000000000000", path)
        assert "{" not in path, f"unfilled path parameter in {template}"
        found.append((method, path, EXPECTED[method, template]))
    return found


async def call(client: httpx.AsyncClient, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body: Any = {"url": "https://example.org/"} if method in ("POST", "PUT") else None
    if path.endswith("/crawls") and method == "POST":
        body = {"trigger": "manual"}
    return await client.request(method, path, headers=headers, json=body)


async def test_every_route_but_health_and_metrics_answers_401_with_www_authenticate(authed: ApiHandle) -> None:
    for method, path, needed in operations(authed):
        for token in (None, "kc_not-a-key", "x" * 300):
            response = await call(authed.client, method, path, token)
            if needed is None:
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            assert response.json()["code"] == "unauthenticated"
    assert (await authed.client.get("/metrics")).status_code == 200  # public unless metrics_require_auth


async def test_metrics_need_a_key_when_told(auth_settings: Settings) -> None:
    async with running_api(auth_settings.model_copy(update={"metrics_require_auth": True})) as api:
        assert (await api.client.get("/metrics")).status_code == 401


@pytest.mark.parametrize(("scope", "rank"), [("read", 1), ("write", 2), ("admin", 3)])
async def test_each_scope_reaches_exactly_its_routes_and_gets_403_elsewhere(
    authed: ApiHandle, keys: KeyStore, scope: str, rank: int
) -> None:
    token = await keys.create(f"k-{scope}", [scope], None)
    ranks = {"read": 1, "write": 2, "admin": 3}
    for method, path, needed in operations(authed):
        if needed is None:
            continue
        response = await call(authed.client, method, path, token)
        if ranks[needed] > rank:
            assert response.status_code == 403, (scope, method, path, response.text)
            assert response.json()["code"] == "forbidden"
        else:
            assert response.status_code not in (401, 403), (scope, method, path, response.text)


async def test_a_revoked_key_is_refused(authed: ApiHandle, keys: KeyStore) -> None:
    token = await keys.create("gone", ["admin"], None)
    assert (await call(authed.client, "GET", "/sites", token)).status_code == 200
    await keys.revoke("gone")
    assert (await call(authed.client, "GET", "/sites", token)).status_code == 401


async def test_a_namespaced_key_sees_only_its_namespaces(authed: ApiHandle, keys: KeyStore) -> None:
    admin = await keys.create("root", ["admin"], None)
    team = await keys.create("team-a", ["admin"], ["team-a"])
    spec = {"url": "https://example.org/"}
    headers = {"authorization": f"Bearer {admin}"}
    assert (await authed.client.put("/sites/team-b/s", json=spec, headers=headers)).status_code == 201
    other = (await authed.client.post("/sites/team-b/s/crawls", json={}, headers=headers)).json()["id"]

    mine = {"authorization": f"Bearer {team}"}
    assert (await authed.client.put("/sites/team-a/s", json=spec, headers=mine)).status_code == 201
    assert (await authed.client.put("/sites/team-b/s", json=spec, headers=mine)).status_code == 403
    assert (await authed.client.get("/sites/team-b/s", headers=mine)).status_code == 403
    assert (await authed.client.get("/sites", headers=mine)).status_code == 403
    for method, path in (
        ("GET", f"/crawls/{other}"),
        ("POST", f"/crawls/{other}/cancel"),
        ("GET", f"/crawls/{other}/pages"),
    ):
        response = await authed.client.request(method, path, headers=mine)
        assert response.status_code == 404, (method, path)  # another namespace's crawl does not exist for it
    assert (await authed.client.get(f"/crawls/{other}", headers=headers)).json()["state"] != "CANCELLED"


def kubecrawl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_keys_cli_prints_the_key_alone_and_stores_only_its_hash(
    authed: ApiHandle, auth_settings: Settings, keys: KeyStore
) -> None:
    made = kubecrawl(auth_settings, "keys", "create", "ci-bot", "--scope", "write", "--namespace", "ci")
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"kc_[A-Za-z0-9_-]{43}\n", made.stdout)
    token = made.stdout.strip()
    listed = kubecrawl(auth_settings, "keys", "list")
    assert '"name": "ci-bot"' in listed.stdout
    assert '"scopes": ["write"]' in listed.stdout
    assert token not in listed.stdout
    dumped = await authed.client.get("/sites", headers={"authorization": f"Bearer {token}"})
    assert dumped.status_code == 403  # a namespaced key lists no sites
    assert (await call(authed.client, "POST", "/metadata", token)).status_code == 202

    again = kubecrawl(auth_settings, "keys", "create", "ci-bot", "--scope", "read")
    assert again.returncode == 1
    assert "key_exists" in again.stderr
    revoked = kubecrawl(auth_settings, "keys", "revoke", "ci-bot")
    assert revoked.returncode == 0, revoked.stderr
    assert (await call(authed.client, "POST", "/metadata", token)).status_code == 401
    assert (await keys.verify(token)) is None


async def test_the_operator_client_sends_kubecrawl_api_key(authed: ApiHandle, keys: KeyStore) -> None:
    token = await keys.create("operator", ["admin"], None)
    transport = httpx.ASGITransport(app=authed.app)
    keyed = SiteApi("http://api.test", timeout=10, retry_delays=(), transport=transport, api_key=token)
    keyless = SiteApi("http://api.test", timeout=10, retry_delays=(), transport=transport)
    try:
        assert await keyed.put_site("default", "synced", {"url": "https://example.org/"})
        with pytest.raises(ApiRejected) as refused:
            await keyless.put_site("default", "synced", {"url": "https://example.org/"})
        assert refused.value.status == 401
    finally:
        await keyed.aclose()
        await keyless.aclose()


def test_standalone_refuses_a_non_loopback_address_without_auth(tmp_path: Any) -> None:
    env = dict(os.environ, KUBECRAWL_AUTH="none")
    result = subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", "standalone", "--host", "0.0.0.0", "--db", str(tmp_path / "k.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--insecure-no-auth" in result.stderr
    assert not (tmp_path / "k.db").exists()


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(
    auth_settings: Settings, keys: KeyStore
) -> None:
    limited = auth_settings.model_copy(update={"auth_rate_limit_per_second": 0.01, "auth_rate_limit_burst": 3})
    busy = await keys.create("busy", ["read"], None)
    quiet = await keys.create("quiet", ["read"], None)
    async with running_api(limited) as api:
        answers = [(await call(api.client, "GET", "/sites", busy)) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["code"] == "rate_limited"
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert (await call(api.client, "GET", "/sites", quiet)).status_code == 200
        assert (await call(api.client, "GET", "/health/live", None)).status_code == 200
