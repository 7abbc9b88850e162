"""The OpenAPI document against a real `kubecrawl api` process on PostgreSQL and RabbitMQ, authentication on
(issue 18):

- schemathesis: every check (``--checks all``), every phase (examples, coverage, fuzzing, and the stateful phase
  that follows the document's links: PUT a site, trigger its crawl, read and cancel it), zero failures;
- a client generated from the document by openapi-python-client (into a temporary directory: generated code is
  never committed, the document is) builds, type-checks, and creates a site, triggers a crawl, pages through its
  results and reads metadata, with a real worker fetching a local site.

The document under test is the one the process serves (``/openapi.json``, fetched with the key), which
tests/unit/api/test_documenting.py holds equal to docs/openapi.json. A fixed seed makes a failure reproducible.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.store.database import create_engine
from kubecrawl.store.keys import KeyStore
from tests.support.apiprocess import ApiProcess
from tests.support.environment import env_for
from tests.support.polling import eventually
from tests.support.sites import Site

BIN = Path(sys.executable).parent
ST = BIN / "st"
# What schema-valid input the API may still refuse with 400, per operation, because JSON Schema cannot say it:
# a URL that is a string but not an http(s) URL kubecrawl can fetch (core/urls.py, the target guard), a spec whose
# regexes RE2 refuses or whose URL is refused, a cursor or event id past the database's BIGINT.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "429", "503"]

[[operations]]
include-operation-id = ["post_metadata", "get_metadata", "put_site", "crawl_pages", "crawl_events"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "503"]
"""


@pytest.fixture
async def admin_key(settings: Settings) -> str:
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        return await KeyStore(engine).create("schemathesis", ["admin"], None)
    finally:
        await engine.dispose()


@pytest.fixture
async def serve(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ApiProcess]]]:
    """Start `kubecrawl api` with API keys; the target guard on unless a test's local site needs it open."""
    processes: list[ApiProcess] = []

    async def start(*, private_targets: bool = False) -> ApiProcess:
        env = env_for(settings) | {
            "KUBECRAWL_AUTH": "api_keys",
            "KUBECRAWL_ALLOW_PRIVATE_TARGETS": str(private_targets).lower(),
            # The page ceiling depends on the caller, so the document cannot state it as a maximum: a schema-valid
            # max_pages above it is refused (400 max_pages_over_limit, tests/security/test_crawl_quotas.py), which
            # schemathesis's ST202 counts as "valid data rejected". No ceiling here.
            "KUBECRAWL_AUTH_MAX_PAGES": "0",
        }
        process = ApiProcess(env, tmp_path / f"api-{len(processes)}.log")
        processes.append(process)
        await process.wait_ready()
        return process

    yield start
    for process in processes:
        process.close()


@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_failure_in_any_check_or_phase(
    serve: Callable[..., Awaitable[ApiProcess]], admin_key: str, tmp_path: Path
) -> None:
    # The guard on, as deployed: what fuzzing gets accepted is what production accepts (no worker runs here).
    served = await serve()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(config),
            "run",
            f"{served.url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--header",
            f"Authorization: Bearer {admin_key}",
            "--max-examples",
            "30",
            "--seed",
            "18",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        cwd=tmp_path,  # schemathesis keeps a cache of crashes in the working directory: not in the repository
        env=os.environ | {"SCHEMATHESIS_HOOKS": ""},
        check=False,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


def generated_client(document: bytes, where: Path) -> Any:
    """The package openapi-python-client generates from ``document``, imported; fails if generation warns or what
    was generated from the document does not type-check."""
    (where / "openapi.json").write_bytes(document)
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hooks
    run = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(where / "openapi.json"),
            "--output-path",
            str(where / "kubecrawl_client"),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    checked = subprocess.run(
        [str(BIN / "mypy"), "--strict", "--no-incremental", "-p", "kubecrawl_client"],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=300,
        check=False,
    )
    # client.py is the generator's own template, the same for every document (its __exit__ forwarding does not
    # pass --strict); everything generated from our document (api/, models/) must.
    errors = [
        line for line in checked.stdout.splitlines() if ": error:" in line and "kubecrawl_client/client.py" not in line
    ]
    assert errors == [], checked.stdout
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("kubecrawl_client")
    finally:
        sys.path.remove(str(where))


@pytest.mark.timeout(300)
async def test_a_generated_client_creates_a_site_crawls_it_pages_its_results_and_reads_metadata(
    serve: Callable[..., Awaitable[ApiProcess]], admin_key: str, site: Site, worker: None, tmp_path: Path
) -> None:
    served = await serve(private_targets=True)  # the site lives on 127.0.0.1
    for number in range(5):
        site.html(f"/p{number}", title=f"page {number}")
    site.html("/", title="home", body="".join(f"<a href='/p{n}'>p{n}</a>" for n in range(5)))
    async with httpx.AsyncClient() as http:
        document = (
            await http.get(served.url + "/openapi.json", headers={"Authorization": f"Bearer {admin_key}"})
        ).content
    kc = generated_client(document, tmp_path)
    from_module = importlib.import_module
    models = from_module("kubecrawl_client.models")
    put_site = from_module("kubecrawl_client.api.sites.put_site")
    trigger_crawl = from_module("kubecrawl_client.api.sites.trigger_crawl")
    get_crawl = from_module("kubecrawl_client.api.crawls.get_crawl")
    crawl_pages = from_module("kubecrawl_client.api.crawls.crawl_pages")
    get_metadata = from_module("kubecrawl_client.api.metadata.get_metadata")

    async with kc.AuthenticatedClient(base_url=served.url, token=admin_key, raise_on_unexpected_status=True) as client:
        spec = models.CrawlSiteSpec(url=site.url("/"), scope=models.ScopeSpec(max_depth=1))
        created = await put_site.asyncio_detailed("default", "generated", client=client, body=spec)
        assert created.status_code == 201
        assert isinstance(created.parsed, models.Site)
        assert created.parsed.spec.url == site.url("/")

        started = await trigger_crawl.asyncio_detailed(
            "default", "generated", client=client, body=models.TriggerRequest(idempotency_key="generated-1")
        )
        assert started.status_code == 202
        crawl_id = started.parsed.id

        async def finished() -> Any:
            crawl = await get_crawl.asyncio(crawl_id, client=client)
            return crawl if crawl.state == models.CrawlState.COMPLETED else None

        crawl = await eventually(finished, timeout=60, what="the crawl completes")
        assert crawl.counters.fetched == 6

        urls, cursor = [], None
        while True:  # two results a page: three pages and an empty end, through next_cursor
            page = await crawl_pages.asyncio(crawl_id, client=client, limit=2, cursor=cursor or kc.types.UNSET)
            assert isinstance(page, models.CrawlPages)
            urls += [item.url for item in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(urls) == sorted([site.url("/"), *(site.url(f"/p{n}") for n in range(5))])

        first = await get_metadata.asyncio(client=client, url_query=site.url("/p3"))
        assert isinstance(first, models.Pending)

        async def fetched() -> Any:
            record = await get_metadata.asyncio(client=client, url_query=site.url("/p3"))
            return record if isinstance(record, models.Metadata) else None

        record = await eventually(fetched, timeout=60, what="the metadata is fetched")
        assert (record.status, record.title, record.http_status) == (models.PageStatus.COMPLETED, "page 3", 200)
