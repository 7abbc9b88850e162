"""Crawl quotas per caller (docs/security.md, "Crawl quotas"): concurrent crawls per API key (429
``too_many_crawls`` with ``Retry-After``), the ``maxPages`` ceiling (400 ``max_pages_over_limit`` for an explicit
``max_pages``, a larger site crawled up to it), a key's own quotas from ``kubecrawl keys create``, and scheduled runs
counted against their site. Real API, RabbitMQ, and PostgreSQL or MongoDB (FerretDB).

No worker runs: every crawl started here stays QUEUED, i.e. active, until the test cancels it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.store.apikeys import ApiKeyStore, KeyQuotas
from kubecrawl.store.opening import open_database
from tests.support.api import ApiHandle, running_api
from tests.support.environment import env_for
from tests.support.stores import ON_EVERY_DATABASE

pytestmark = ON_EVERY_DATABASE
SITE = "/sites/default/big"


@pytest.fixture
def quota_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"auth": "api_keys", "auth_cache_seconds": 0, "auth_max_concurrent_crawls": 2, "auth_max_pages": 50}
    )


@pytest.fixture
async def keys(quota_settings: Settings) -> AsyncIterator[ApiKeyStore]:
    database = open_database(quota_settings.database_url.get_secret_value())
    yield database.keys
    await database.close()


@pytest.fixture
async def quota_api(quota_settings: Settings, keys: ApiKeyStore) -> AsyncIterator[ApiHandle]:
    async with running_api(quota_settings) as handle:
        admin = await keys.create("admin", ["admin"], None)
        spec = {"url": "https://big.example/", "overlapPolicy": "Allow", "scope": {"maxPages": 1000}}
        put = await handle.client.put(SITE, json=spec, headers=_auth(admin))
        assert put.status_code == 201, put.text
        yield handle


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def trigger(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await client.post(f"{SITE}/crawls", json=body, headers=_auth(token))


async def test_a_key_with_its_concurrent_crawls_running_gets_429_and_others_do_not(
    quota_api: ApiHandle, keys: ApiKeyStore
) -> None:
    busy, other = await keys.create("busy", ["write"], None), await keys.create("other", ["write"], None)
    client = quota_api.client
    first = await trigger(client, busy, idempotency_key="one")
    second = await trigger(client, busy)
    assert (first.status_code, second.status_code) == (202, 202)

    refused = await trigger(client, busy)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_crawls"
    assert int(refused.headers["retry-after"]) >= 10
    # A retry of a trigger that worked still answers with its crawl; another key is not slowed.
    retried = await trigger(client, busy, idempotency_key="one")
    assert (retried.status_code, retried.json()["id"]) == (200, first.json()["id"])
    assert (await trigger(client, other)).status_code == 202

    cancelled = await client.post(f"/crawls/{first.json()['id']}/cancel", headers=_auth(busy))
    assert cancelled.json()["state"] == "CANCELLED"
    assert (await trigger(client, busy)).status_code == 202


async def test_max_pages_over_the_ceiling_is_400_and_a_larger_site_is_crawled_up_to_it(
    quota_api: ApiHandle, keys: ApiKeyStore
) -> None:
    writer = await keys.create("writer", ["write"], None)
    client = quota_api.client
    over = await trigger(client, writer, max_pages=51)
    assert over.status_code == 400, over.text
    assert over.json()["code"] == "max_pages_over_limit"
    asked = await trigger(client, writer, max_pages=20)
    assert (asked.status_code, asked.json()["max_pages"]) == (202, 20)
    implicit = await trigger(client, writer)  # the site says 1000, the caller's ceiling 50
    assert (implicit.status_code, implicit.json()["max_pages"]) == (202, 50)
    assert (await client.get(f"/crawls/{implicit.json()['id']}", headers=_auth(writer))).json()["max_pages"] == 50


async def test_a_keys_own_quotas_override_the_settings(quota_api: ApiHandle, keys: ApiKeyStore) -> None:
    client = quota_api.client
    roomy = await keys.create("roomy", ["write"], None, KeyQuotas(max_concurrent_crawls=3, max_pages=0))
    tight = await keys.create("tight", ["write"], None, KeyQuotas(max_concurrent_crawls=1, max_pages=5))
    unbounded = await trigger(client, roomy, max_pages=500)
    assert (unbounded.status_code, unbounded.json()["max_pages"]) == (202, 500)
    assert [(await trigger(client, roomy)).status_code for _ in range(3)] == [202, 202, 429]
    assert (await trigger(client, tight)).json()["max_pages"] == 5
    assert (await trigger(client, tight)).status_code == 429


async def test_scheduled_runs_count_against_their_site_not_the_caller(quota_api: ApiHandle, keys: ApiKeyStore) -> None:
    trigger_key = await keys.create("cron", ["write"], None, KeyQuotas(max_concurrent_crawls=1))
    client = quota_api.client
    minute = "site:default/big:cron:2026-12-05T08:{:02d}:00+00:00"
    runs = [await trigger(client, trigger_key, trigger="schedule", idempotency_key=minute.format(m)) for m in range(3)]
    # Two at once per site (the setting), whatever the key's own limit of one; the site's maxPages is kept.
    assert [run.status_code for run in runs] == [202, 202, 429]
    assert runs[0].json()["max_pages"] == 1000
    assert runs[2].json()["code"] == "too_many_crawls"
    # The key's own manual crawl is not held up by the site's scheduled ones.
    assert (await trigger(client, trigger_key)).status_code == 202


def test_the_keys_cli_stores_a_keys_quotas(quota_settings: Settings) -> None:
    env = env_for(quota_settings)
    quotas = ["--max-concurrent-crawls", "4", "--max-pages", "200"]
    made = subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", "keys", "create", "bot", "--scope", "write", *quotas],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (key,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (key["max_concurrent_crawls"], key["max_pages"]) == (4, 200)
