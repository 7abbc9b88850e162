"""``kubecrawl keys create|list|revoke``: API keys in the database the API reads (``KUBECRAWL_DATABASE_URL``).

``create`` prints the new key alone on one line, so a script can capture it; it is shown only then. Errors go
to stderr with their code, and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from kubecrawl.core.errors import KubecrawlError

if TYPE_CHECKING:
    from kubecrawl.store.apikeys import ApiKeyStore

app = typer.Typer(no_args_is_help=True, help="API keys (docs/security.md).")
T = TypeVar("T")
_NAME = r"^[a-z0-9]([-a-z0-9._]{0,62}[a-z0-9])?$"


def _with_store(work: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    from kubecrawl.core.settings import Settings
    from kubecrawl.store.opening import open_database

    async def main() -> T:
        database = open_database(Settings().database_url.get_secret_value())
        try:
            return await work(database.keys)
        finally:
            await database.close()

    try:
        return asyncio.run(main())
    except KubecrawlError as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="who or what the key is for (1-64 of a-z 0-9 - . _)")],
    scope: Annotated[list[str], typer.Option(help="read, write (metadata and crawls) or admin (sites, keys)")],
    namespace: Annotated[
        list[str] | None, typer.Option(help="limit the key to this namespace (repeat for several)")
    ] = None,
    max_concurrent_crawls: Annotated[
        int | None,
        typer.Option(min=0, help="crawls not yet finished this key may have started (0: no limit; default: the API's)"),
    ] = None,
    max_pages: Annotated[
        int | None,
        typer.Option(min=0, help="pages of a crawl this key starts (0: no limit; default: the API's)"),
    ] = None,
) -> None:
    """Make a key and print it (only now: it is stored hashed)."""
    from kubecrawl.store.apikeys import SCOPES, KeyQuotas

    if not re.match(_NAME, name):
        raise typer.BadParameter("1-64 characters of a-z, 0-9, '-', '.', '_'", param_hint="NAME")
    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        raise typer.BadParameter(f"unknown scope(s) {unknown}; use {', '.join(SCOPES)}", param_hint="--scope")
    quotas = KeyQuotas(max_concurrent_crawls=max_concurrent_crawls, max_pages=max_pages)
    typer.echo(_with_store(lambda keys: keys.create(name, scope, namespace or None, quotas)))


@app.command("list")
def list_keys() -> None:
    """The keys (never the keys themselves): name, scopes, namespaces, created, revoked; one JSON object a line."""
    for key in _with_store(lambda keys: keys.list()):
        typer.echo(json.dumps(key.as_dict()))


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key; the API refuses it within KUBECRAWL_AUTH_CACHE_SECONDS."""
    _with_store(lambda keys: keys.revoke(name))
