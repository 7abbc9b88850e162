"""Importing a module on a background thread while start-up waits for something else (docs/crawls.md, "Start-up").

The worker imports the fetcher (aiohttp and httpx's transport for it: some 80-90 ms here) only once it has reached
the database and RabbitMQ, and starts importing it on a thread before it connects: the imports use the time the
main thread spends waiting for the servers' answers. Python's import machinery makes this safe: a module being
imported by one thread is locked, and another thread importing it waits for it to finish, then gets the finished
module (a failed import raises again in the thread that needs the module). The modules preloaded are libraries and
our own modules that import no module the main thread is importing at the time (what would make the two threads
wait for each other). Imports hold the GIL, so the gain is the main thread's idle time, not a second core.
"""

from __future__ import annotations

import contextlib
import importlib
import threading


def preload(*modules: str) -> threading.Thread:
    """Start importing ``modules`` in turn on a daemon thread (the process never waits for it at exit); the caller
    imports them as usual where it needs them. A module that fails to import is left to that import to report."""

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):  # raised again, with its traceback, by the caller's own import
                importlib.import_module(name)

    thread = threading.Thread(target=load, name=f"preload-{'+'.join(modules)}", daemon=True)
    thread.start()
    return thread
