"""structlog configured once per process; stdlib logging rendered the same way.

Every line carries a timestamp, ``service_name``, ``level``, ``logger`` and ``event``. Two paths lead to stderr:

- kubecrawl's own calls (``get_logger``) take structlog's fast path: a level-filtering bound logger (a call
  below the level is a bare ``return``) whose processors render the line and write it directly, JSON through
  orjson as bytes: about 20 µs a line, against 90 µs through stdlib ``logging`` and 15 µs for a filtered-out
  DEBUG call (measured for bench/publish.py, where the API logs from its event loop).
- kopf, uvicorn, aio-pika and alembic log through stdlib ``logging``; a ``ProcessorFormatter`` on the root
  handler renders their records with the same processors and renderer.

``structlog.testing.capture_logs()`` works as with any structlog configuration: it swaps the processors that
both paths' loggers share.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any, Literal

import orjson


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it (once per process; nothing changes if structlog is imported).

    ``structlog.dev`` imports rich's console and traceback modules (and pygments) whenever rich is installed, for
    exception formatting this module never uses: tracebacks are plain text before any renderer, as rich's would
    print local variables, which may hold secrets. With httpx's command-line client (``kubecrawl/__init__.py``)
    that was some 55 ms of every command's start-up. What imports rich afterwards (``kubecrawl crawl``'s progress
    bar) gets it as usual."""
    if "structlog" in sys.modules:
        return
    rich = sys.modules.get("rich")  # the crawl's command imports rich's console before its logging is set up
    sys.modules["rich"] = None  # type: ignore[assignment]  # ``import rich`` raises ImportError meanwhile
    try:
        importlib.import_module("structlog")
    finally:
        if rich is None:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = rich


_import_structlog_without_rich()

import structlog  # noqa: E402 (imported by the call above, without rich)
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger  # noqa: E402


def _service_name_adder(service_name: str) -> Processor:
    def add(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service_name", service_name)
        return event_dict

    return add


def _json_bytes(obj: Any, **kwargs: Any) -> bytes:
    """orjson, falling back to the stdlib for what orjson refuses (lone surrogates, integers over 64 bits):
    a log call must never raise into the code that logs."""
    try:
        return orjson.dumps(obj, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, default=repr, separators=(",", ":")).encode()


def _json_str(obj: Any, **kwargs: Any) -> str:
    return _json_bytes(obj, **kwargs).decode()


def _utf8(_: WrappedLogger, __: str, rendered: Any) -> bytes:
    """The console renderer's text as the bytes BytesLogger writes."""
    return str(rendered).encode("utf-8", "backslashreplace")


def configure_logging(
    service_name: str, *, log_format: Literal["json", "console"] = "json", level: str = "INFO"
) -> None:
    """Configure structlog and the stdlib root logger for this process."""
    level_number = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _service_name_adder(service_name),
    ]
    # Tracebacks as plain text in both formats: the console renderer's own (rich) ones print local variables,
    # which may hold secrets such as the database URL.
    exceptions: list[Processor] = [structlog.processors.format_exc_info]
    if log_format == "console":
        console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        direct_rendering: list[Processor] = [console, _utf8]
        foreign_renderer: Processor = console
    else:
        direct_rendering = [structlog.processors.JSONRenderer(serializer=_json_bytes)]
        foreign_renderer = structlog.processors.JSONRenderer(serializer=_json_str)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            # The name given to get_logger(), kept by BytesLogger, the same field the stdlib records get.
            structlog.stdlib.add_logger_name,
            *shared,
            structlog.processors.StackInfoRenderer(),
            *exceptions,
            *direct_rendering,
        ],
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            *shared,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, foreign_renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)
    # aiormq logs every frame at DEBUG and its reconnect noise at WARNING; ours says the same with context.
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger; named after the module that logs (the ``logger`` field of each line)."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
