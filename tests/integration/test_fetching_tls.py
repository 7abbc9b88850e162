"""The fetcher verifies TLS certificates: a site whose certificate no trusted CA signed is not fetched.

The SSL context the HTTP transport is given is never used (the fetcher's own connector verifies with aiohttp's
default context; ``fetch/fetching.py``, ``Fetcher.__aenter__``); this keeps it that way on a real TLS server.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

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


async def test_a_site_with_a_certificate_no_trusted_ca_signed_is_not_fetched(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # The server does serve TLS: a client that trusts this certificate gets through the handshake.
        trusting = ssl.create_default_context(cafile=str(cert))
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting)
        writer.close()
        await writer.wait_closed()
        async with Fetcher(FetchSettings(timeout_seconds=30), OPEN) as fetcher:
            with pytest.raises(FetchTransient, match="Certificate") as refused:
                await fetcher.fetch(f"https://127.0.0.1:{port}/")
        assert refused.value.code == "connect_error"
    finally:
        await runner.cleanup()
