"""The API's SIGTERM drain (api/serving.py): the first signal only fails readiness, the server stops once the delay
has passed or on a second signal, and the signal is not raised again after a clean stop."""

from __future__ import annotations

import signal

import uvicorn
from fastapi import FastAPI

from kubecrawl.api.serving import DrainingServer, Lifecycle


def _server(delay: float) -> tuple[DrainingServer, Lifecycle]:
    lifecycle = Lifecycle()
    return DrainingServer(uvicorn.Config(FastAPI(), log_config=None), lifecycle, delay=delay), lifecycle


async def test_the_first_sigterm_fails_readiness_and_keeps_serving_until_the_delay_has_passed() -> None:
    server, lifecycle = _server(delay=3600)
    server.handle_exit(signal.SIGTERM, None)
    assert (lifecycle.draining, lifecycle.stopping) == (True, False)
    assert await server.on_tick(1) is False
    assert not server.should_exit


async def test_the_server_stops_once_the_delay_has_passed() -> None:
    server, lifecycle = _server(delay=0)
    server.handle_exit(signal.SIGTERM, None)
    assert await server.on_tick(1) is True
    assert lifecycle.stopping


async def test_a_second_signal_stops_at_once() -> None:
    server, lifecycle = _server(delay=3600)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGTERM, None)
    assert await server.on_tick(1) is True
    assert lifecycle.stopping


def test_no_signal_is_raised_again_after_a_clean_stop() -> None:
    server, _ = _server(delay=0)
    before = signal.getsignal(signal.SIGTERM)
    with server.capture_signals():
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit
        server.handle_exit(signal.SIGTERM, None)
    # uvicorn's own capture_signals would raise SIGTERM here and end this process with it.
    assert signal.getsignal(signal.SIGTERM) == before
