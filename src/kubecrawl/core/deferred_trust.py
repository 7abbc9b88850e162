"""aiohttp's default TLS contexts load their CA certificates at their first TLS connection, not at import.

``aiohttp.connector`` builds two SSL contexts when it is imported (aiohttp 3.10+, so that no event loop blocks on
disk reads later): a verifying one (``ssl.create_default_context()``) and one that verifies nothing but loads the
default CA file all the same. Each parses the whole CA bundle; with OpenSSL 3 that costs 30-70 ms here, so
``import aiohttp`` spent some 60-140 ms of every ``kubecrawl crawl``'s and ``kubecrawl worker``'s start-up on
certificates a crawl of an ``http://`` site never uses, and an ``https://`` one uses from one context only.

While ``aiohttp.connector`` is first imported (``install`` puts an import hook in place; kubecrawl's package
``__init__`` calls it, before any module of kubecrawl imports aiohttp), ``SSLContext.set_default_verify_paths``
records the context instead of loading. Each recorded context loads the same default paths (``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` included) when it is first wrapped around a connection, once, under a lock: the first TLS
connection of the process waits for that one load (on the event loop's thread; aiohttp's reason to load at
import). Nothing else changes: the contexts are aiohttp's own, with its options; a context that is never
wrapped (the unverified one, which kubecrawl never asks for) never reads the bundle. Until its first
connection such a context's ``get_ca_certs()`` and ``cert_store_stats()`` show no CA, and a failure to load
surfaces at that connection, as an ``ssl.SSLError``, instead of at import.

Every other SSL context of the process (kubernetes_asyncio's, httpx's, a test's) is untouched: the hook is active
only while aiohttp.connector's module body runs, and is removed once it has (a context another thread happened to
make in that window would be deferred the same way, and load at its own first connection). If aiohttp was
imported before kubecrawl, aiohttp keeps its eager contexts. ``tests/integration/test_fetching_tls.py`` checks
both sides in a fresh process: nothing loaded before the first connection, a certificate signed by a CA of
``SSL_CERT_FILE`` accepted, one no trusted CA signed refused.
"""

from __future__ import annotations

import importlib.machinery
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ssl and threading are imported when aiohttp.connector is, which imports them anyway
    import ssl
    from collections.abc import Sequence
    from types import ModuleType

_MODULE = "aiohttp.connector"


class _Deferred:
    """One context's default CA load, run at its first ``wrap_bio`` / ``wrap_socket`` (asyncio's and uvloop's
    TLS transports call ``wrap_bio``; blocking sockets ``wrap_socket``)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        import threading

        self._context = context
        self._lock = threading.Lock()
        # Instance attributes shadow the class's methods for this context only, until the load.
        context.wrap_bio = self.wrap_bio  # type: ignore[method-assign]
        context.wrap_socket = self.wrap_socket  # type: ignore[method-assign]

    def _loaded(self) -> ssl.SSLContext:
        context = self._context
        with self._lock:
            if "wrap_bio" in vars(context):  # not loaded yet (a caller that looked the method up before the load
                type(context).set_default_verify_paths(context)  # of another thread finds it done)
                del context.wrap_bio, context.wrap_socket
        return context

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._loaded().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._loaded().wrap_socket(*args, **kwargs)


def _record(context: ssl.SSLContext) -> None:
    """Stands in for ``SSLContext.set_default_verify_paths`` while aiohttp.connector's body runs."""
    _Deferred(context)


class _Loader:
    """aiohttp.connector's own loader, its module body run with the CA loads recorded; anything else (source,
    code, resources: tracebacks and importlib.resources ask the module's ``__loader__``) answered by the loader."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        import ssl

        load = ssl.SSLContext.set_default_verify_paths
        ssl.SSLContext.set_default_verify_paths = _record  # type: ignore[method-assign,assignment]
        try:
            self._inner.exec_module(module)
        finally:
            ssl.SSLContext.set_default_verify_paths = load  # type: ignore[method-assign]


class _Finder:
    """A meta path finder for aiohttp.connector alone: the path finder's spec, with the loader wrapped."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != _MODULE:
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
        return spec


_FINDER = _Finder()


def install() -> None:
    """Defer aiohttp's default CA loads, unless aiohttp.connector is already imported (then nothing to do)."""
    if _MODULE not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
