"""The private-network (SSRF) guard at the connection: a resolver that refuses a host if any of its addresses is
refused, and a connector that checks the peer address of every connection a request is sent on (``fetching.py``
says why both, and how they fit with the per-hop URL check and a proxy).
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection
from aiohttp.resolver import DefaultResolver

from kubecrawl.core.errors import BlockedTarget
from kubecrawl.core.urls import TargetPolicy


class GuardedResolver(AbstractResolver):
    """Resolve with ``inner`` (the default resolver), then refuse hosts that have any address the policy refuses."""

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if self._policy.refuses(result["host"]):
                raise BlockedTarget(f"{host} resolves to {result['host']}, a private or reserved address")
        return results

    async def close(self) -> None:
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A connector that refuses to hand out a connection whose peer address the policy refuses.

    Checked on every request, pooled connections included (a dictionary look-up and an address parse): the
    resolver's check covers names, this one covers whatever reached a socket by another path.
    """

    def __init__(self, policy: TargetPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, overridden
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        transport = connection.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if not isinstance(address, str) or self._policy.refuses(address.split("%", 1)[0]):
            connection.close()  # never reused: the pool would hand it out again
            raise BlockedTarget(f"{req.url.host} connected to {address}, a private or reserved address")
        return connection
