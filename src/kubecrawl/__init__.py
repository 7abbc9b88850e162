"""kubecrawl: Kubernetes-native web page metadata fetching and site crawling."""

import sys

__version__ = "0.1.0"

# httpx's package imports its command-line client (``httpx._main``: click, pygments, rich's console, syntax and
# progress modules) whenever those are installed, and here they are (typer's and the CLI's dependencies): with
# structlog's own import of rich (core/logging.py), some 55 ms of every command's start-up, for a client kubecrawl
# never runs. None in sys.modules makes that one import fail, which httpx handles (``httpx.main`` then says how to
# install its CLI); kubecrawl's own httpx use is untouched.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# aiohttp loads the CA bundle twice when it is imported, for TLS contexts most crawls never use: each context now
# loads it at its first TLS connection (core/deferred_trust.py).
from kubecrawl.core import deferred_trust  # noqa: E402

deferred_trust.install()
