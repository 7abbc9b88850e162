"""The fetcher verifies TLS certificates: a site whose certificate no trusted CA signed is not fetched.

The SSL context the HTTP transport is given is never used (the fetcher's own connector verifies with aiohttp's
default context; ``fetch/fetching.py``, ``Fetcher.__aenter__``); this keeps it that way on a real TLS server. That
default context loads its CA certificates at its first TLS connection (``core/deferred_trust.py``): a fresh
process shows that nothing is loaded before, the default paths (``SSL_CERT_FILE``) are after, and verification
still refuses what they do not sign.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubecrawl.core.errors import FetchTransient
from kubecrawl.core.settings import FetchSettings
from kubecrawl.fetch.fetching import Fetcher
from tests.support.guarded import OPEN


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that only itself signed, and its key (openssl, as on any Debian machine)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text="<title>tls</title>", content_type="text/html")


@pytest.fixture
async def tls_site(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A one-page site on 127.0.0.1 served over TLS with a self-signed certificate: its port and the certificate."""
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    try:
        yield runner.addresses[0][1], cert
    finally:
        await runner.cleanup()


async def test_a_site_with_a_certificate_no_trusted_ca_signed_is_not_fetched(tls_site: tuple[int, Path]) -> None:
    port, cert = tls_site
    # The server does serve TLS: a client that trusts this certificate gets through the handshake.
    trusting = ssl.create_default_context(cafile=str(cert))
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting)
    writer.close()
    await writer.wait_closed()
    async with Fetcher(FetchSettings(timeout_seconds=30), OPEN) as fetcher:
        with pytest.raises(FetchTransient, match="Certificate") as refused:
            await fetcher.fetch(f"https://127.0.0.1:{port}/")
    assert refused.value.code == "connect_error"


# Run in a fresh interpreter: aiohttp's default contexts are made when kubecrawl first imports it (pytest's own
# plugins may import aiohttp before kubecrawl in this process). Prints what the contexts held before and after.
_FETCH_IN_A_NEW_PROCESS = """
import asyncio, json, sys
from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.settings import FetchSettings
from kubecrawl.core.urls import TargetPolicy
from kubecrawl.fetch.fetching import Fetcher
import aiohttp.connector as connector

def cas():
    contexts = (connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED)
    return [context.cert_store_stats()["x509_ca"] for context in contexts]

async def main():
    before = cas()
    async with Fetcher(FetchSettings(timeout_seconds=30), TargetPolicy(allow_private=True)) as fetcher:
        try:
            outcome = (await fetcher.fetch(sys.argv[1])).status_code
        except KubecrawlError as exc:
            outcome = f"{exc.code}: {exc}"
    print(json.dumps({"before": before, "outcome": outcome, "after": cas()}))

if sys.argv[2] == "uvloop":  # the loop kubecrawl's processes run on
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


async def _fetch_in_a_new_process(url: str, loop: str, **env: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FETCH_IN_A_NEW_PROCESS,
        url,
        loop,
        env={key: value for key, value in os.environ.items() if not key.startswith("SSL_CERT_")} | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_the_ca_bundle_is_loaded_at_the_first_tls_connection_from_the_default_paths(
    tls_site: tuple[int, Path], loop: str
) -> None:
    """core/deferred_trust.py: importing the fetcher loads no CA certificate; the first TLS connection (uvloop's and
    asyncio's TLS transports alike) loads the default paths (here SSL_CERT_FILE, the one certificate the site's is)
    into the verifying context only, and a site signed by none of the default CAs is still refused."""
    port, cert = tls_site
    url = f"https://127.0.0.1:{port}/"
    trusted = await _fetch_in_a_new_process(url, loop, SSL_CERT_FILE=str(cert))
    assert trusted == {"before": [0, 0], "outcome": 200, "after": [1, 0]}
    system = await _fetch_in_a_new_process(url, loop)  # the machine's CA bundle: no CA of it signed this site
    assert system["before"] == [0, 0]
    assert str(system["outcome"]).startswith("connect_error: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(system["outcome"])
    assert system["after"][0] > 1  # the machine's CAs, in the verifying context
    assert system["after"][1] == 0
