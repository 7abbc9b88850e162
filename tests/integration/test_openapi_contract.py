"""Schemathesis against a real `kubecrawl api` process on PostgreSQL and RabbitMQ, with authentication on: every
check (``--checks all``), every phase (examples, coverage, fuzzing, and the stateful phase that follows the
document's links: PUT a site, trigger its crawl, read and cancel it), zero failures (issue 18).

The document under test is the one the process serves (``/openapi.json``, fetched with the key), which
tests/unit/api/test_documenting.py holds equal to docs/openapi.json. A fixed seed makes a failure reproducible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubecrawl.core.settings import Settings
from kubecrawl.store.database import create_engine
from kubecrawl.store.keys import KeyStore
from tests.integration.conftest import env_for
from tests.support.apiprocess import ApiProcess

ST = Path(sys.executable).with_name("st")
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
async def served(settings: Settings, admin_key: str, tmp_path: Path) -> AsyncIterator[ApiProcess]:
    env = env_for(settings) | {"KUBECRAWL_AUTH": "api_keys", "KUBECRAWL_ALLOW_PRIVATE_TARGETS": "false"}
    process = ApiProcess(env, tmp_path / "api.log")
    await process.wait_ready()
    yield process
    process.close()


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_failure_in_any_check_or_phase(
    served: ApiProcess, admin_key: str, tmp_path: Path
) -> None:
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
        env=os.environ | {"SCHEMATHESIS_HOOKS": ""},
        check=False,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
