from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from kubecrawl.core.logging import configure_logging, get_logger


@pytest.fixture
def json_logging() -> Iterator[None]:
    """Undo ``configure_logging`` after the test: structlog's configuration and the stdlib loggers it set.

    The test calls ``configure()`` itself: ``configure_logging`` holds on to the stderr of the moment, and
    pytest swaps its capture stream between a fixture's setup and the test.
    """
    loggers = [logging.getLogger(name) for name in ("", "aiormq", "aio_pika", "uvicorn.access", "httpx", "httpcore")]
    saved = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    yield
    structlog.reset_defaults()
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def configure() -> None:
    configure_logging("kubecrawl-test", log_format="json", level="INFO")


def lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines()]


def test_own_and_stdlib_lines_carry_timestamp_service_level_logger_and_event(
    json_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    configure()
    get_logger("kubecrawl.demo").info("thing_done", count=1)
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    own, foreign = lines(capfd)
    for line in (own, foreign):
        assert {"timestamp", "service_name", "level", "logger", "event"} <= line.keys()
        assert line["service_name"] == "kubecrawl-test"
    assert (own["event"], own["level"], own["logger"], own["count"]) == ("thing_done", "info", "kubecrawl.demo", 1)
    assert (foreign["event"], foreign["level"], foreign["logger"]) == (
        "Started server process [42]",
        "warning",
        "uvicorn.error",
    )


def test_lines_below_the_configured_level_are_dropped(json_logging: None, capfd: pytest.CaptureFixture[str]) -> None:
    configure()
    get_logger("kubecrawl.demo").debug("hidden")
    logging.getLogger("kopf.objects").debug("hidden too")
    assert lines(capfd) == []


def test_request_context_and_tracebacks_reach_the_line(json_logging: None, capfd: pytest.CaptureFixture[str]) -> None:
    configure()
    with structlog.contextvars.bound_contextvars(request_id="r1"):
        try:
            int("boom")
        except ValueError:
            get_logger("kubecrawl.demo").exception("unhandled_error")
    (line,) = lines(capfd)
    assert line["request_id"] == "r1"
    assert line["level"] == "error"
    assert "ValueError: invalid literal for int()" in line["exception"]


def test_values_json_cannot_encode_are_logged_instead_of_raising(
    json_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    configure()
    get_logger("kubecrawl.demo").warning("odd_input", url="https://a.example/\ud800", big=2**70, keyed={1: object()})
    (line,) = lines(capfd)
    assert line["big"] == 2**70
    assert line["url"] == "https://a.example/\ud800"


def test_capture_logs_sees_events_of_a_configured_process(json_logging: None) -> None:
    configure()
    with capture_logs() as captured:
        get_logger("kubecrawl.demo").info("thing_done", count=1)
    assert captured == [{"event": "thing_done", "count": 1, "log_level": "info"}]
