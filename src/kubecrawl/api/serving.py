"""Serving the API with uvicorn, and its SIGTERM (docs/api.md, "Shutdown").

Kubernetes sends SIGTERM while the Service's endpoints, kube-proxy and load balancers still route to the pod for a
few seconds. So the first SIGTERM does not stop the server:

1. ``draining``: ``/health/ready`` answers 503 ``shutting_down`` at once, and everything is still served for
   ``api_shutdown_delay_seconds``, so the pod leaves the endpoints before it stops listening;
2. ``stopping``: uvicorn stops accepting, event streams end at their next poll (clients resume on another replica
   with ``Last-Event-ID``), and requests in flight are answered; any still running after
   ``api_shutdown_timeout_seconds`` are cancelled;
3. the lifespan closes the publisher (waiting for its confirms) and the database; the process exits 0.

A second signal skips the rest of the delay, and so does SIGINT (Ctrl-C: a person at a terminal, not a load
balancer, is waiting). ``kubecrawl api`` and ``kubecrawl standalone`` both serve this way. uvicorn would raise the
signal again once it has stopped, so the process died "by SIGTERM" (exit code 143) after a clean shutdown; this
server does not.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI

from kubecrawl.core.logging import get_logger

log = get_logger(__name__)
# uvicorn's exit code for a server that never started (a failed lifespan start-up).
STARTUP_FAILURE = 3


@dataclass
class Lifecycle:
    """Where the API process is in its shutdown; ``app.state.lifecycle`` (read by readiness and event streams)."""

    draining: bool = False  # readiness fails; requests are still served
    stopping: bool = False  # the server stopped accepting; event streams end


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, *, delay: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._delay = delay
        self._stop_at: float | None = None
        self._told = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGTERM, signal.SIGINT)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:  # restored, and not raised again (the module docstring)
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only (logging here could interrupt a log call holding its lock).
        del frame
        if self._lifecycle.draining:  # a second signal: stop now
            self._stop_at = 0.0
            self.force_exit = self.force_exit or (self.should_exit and sig == signal.SIGINT)
            return
        self._lifecycle.draining = True
        self._stop_at = time.monotonic() + (0.0 if sig == signal.SIGINT else self._delay)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None:
            if not self._told:
                self._told = True
                log.info("api_draining", delay_s=self._delay)
            if time.monotonic() >= self._stop_at and not self.should_exit:
                self._lifecycle.stopping = True
                self.should_exit = True
                log.info("api_stopping", timeout_s=self.config.timeout_graceful_shutdown)
        return await super().on_tick(counter)


def draining_server(app: FastAPI, *, host: str, port: int, delay: float, timeout: float) -> DrainingServer:
    """A uvicorn server for ``app`` that drains on SIGTERM (module docstring); ``app.state.lifecycle`` is its state."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keeps our structlog bridge in charge of uvicorn's loggers
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(timeout),
    )
    return DrainingServer(config, app.state.lifecycle, delay=delay)


def serve(app: FastAPI, *, host: str, port: int, delay: float, timeout: float) -> None:
    """Run ``app`` until SIGTERM has drained it (module docstring); exit 3 if it never started."""
    server = draining_server(app, host=host, port=port, delay=delay, timeout=timeout)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
