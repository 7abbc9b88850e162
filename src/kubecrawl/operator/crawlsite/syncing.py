"""The kubecrawl API as the operator and the trigger pods use it: HTTP only (never ``kubecrawl.api`` imports).

Each call is retried in-process on connection errors, timeouts, 429 and 5xx with the given delays; what is left
is wrapped at this edge: :class:`ApiUnavailable` (transient, the caller retries later) or :class:`ApiRejected`
(the API refused the request: retrying the same input cannot help; carries the API's error ``code``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import httpx

from kubecrawl import __version__
from kubecrawl.core.errors import PermanentError, TransientError
from kubecrawl.core.logging import get_logger

log = get_logger(__name__)

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ApiUnavailable(TransientError):
    code = "api_unavailable"


class ApiRejected(PermanentError):
    code = "api_rejected"

    def __init__(self, detail: str, *, code: str | None = None, status: int = 400) -> None:
        super().__init__(detail, code=code)
        self.status = status


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from a projected ServiceAccount token file, read for every request (the kubelet
    replaces it before it expires), else from a fixed API key; nothing when neither is set."""

    def __init__(self, *, token_file: Path | None, api_key: str | None) -> None:
        self._token_file = token_file
        self._api_key = api_key

    def token(self) -> str | None:
        if self._token_file is not None:
            try:
                return self._token_file.read_text().strip()  # about 1 KiB, cached by the page cache
            except OSError as exc:  # no projected volume where KUBECRAWL_API_TOKEN_FILE says
                raise ApiUnavailable(f"cannot read the API token {self._token_file}: {exc}") from exc
        return self._api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if token := self.token():
            request.headers["authorization"] = f"Bearer {token}"
        yield request


class SiteApi:
    """``/sites/{namespace}/{name}`` and its crawls."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retry_delays: Sequence[float],
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        """Credentials (``BearerAuth``): the ServiceAccount token in ``token_file`` (``KUBECRAWL_API_TOKEN_FILE``),
        else ``api_key`` (``KUBECRAWL_API_KEY``)."""
        self._retry_delays = tuple(retry_delays)
        headers = {"user-agent": f"kubecrawl-operator/{__version__}"}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers=headers,
            auth=BearerAuth(token_file=token_file, api_key=api_key),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None, ok: Sequence[int] = ()) -> httpx.Response:
        """The response when its status is 2xx or in ``ok``; otherwise raise (after retrying what may pass)."""
        last: str = ""
        for attempt, delay in enumerate((*self._retry_delays, None)):
            try:
                response = await self._client.request(method, path, json=json)
            except httpx.HTTPError as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.is_success or response.status_code in ok:
                    return response
                if response.status_code not in _RETRYABLE_STATUS:
                    body = _error_body(response)
                    raise ApiRejected(
                        f"{method} {path}: HTTP {response.status_code}: {body.get('detail', response.text[:200])}",
                        code=body.get("code"),
                        status=response.status_code,
                    )
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            if delay is None:
                break
            log.info("api_call_retrying", method=method, path=path, attempt=attempt + 1, error=last, delay=delay)
            await asyncio.sleep(delay)
        raise ApiUnavailable(f"{method} {path} failed after {len(self._retry_delays) + 1} attempts: {last}")

    async def put_site(self, namespace: str, name: str, spec: dict[str, Any]) -> bool:
        """Store the site's spec; True when the API did not have the site before."""
        response = await self._request("PUT", f"/sites/{namespace}/{name}", json=spec)
        return response.status_code == 201

    async def has_site(self, namespace: str, name: str) -> bool:
        response = await self._request("GET", f"/sites/{namespace}/{name}", ok=(404,))
        return response.status_code != 404

    async def delete_site(self, namespace: str, name: str) -> bool:
        response = await self._request("DELETE", f"/sites/{namespace}/{name}", ok=(404,))
        return response.status_code != 404

    async def latest_crawl(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._request("GET", f"/sites/{namespace}/{name}/crawls?limit=1")
        items: list[dict[str, Any]] = response.json().get("items") or []
        return items[0] if items else None

    async def trigger_crawl(
        self, namespace: str, name: str, *, trigger: str, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Start a crawl (or find the one holding ``idempotency_key``); True when it is new."""
        response = await self._request(
            "POST",
            f"/sites/{namespace}/{name}/crawls",
            json={"trigger": trigger, "idempotency_key": idempotency_key},
        )
        crawl: dict[str, Any] = response.json()
        return crawl, response.status_code == 202


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
