"""What every ``kubecrawl`` command does first: its settings and logging, the event loop it runs on, and the
checks that fail before anything starts."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kubecrawl.cli.exiting import ExitCode, fail

if TYPE_CHECKING:
    from kubecrawl.core.settings import Settings

T = TypeVar("T")


def settings(service: str, **overrides: object) -> Settings:
    """``Settings`` from the environment plus ``overrides``, named ``kubecrawl-SERVICE``, with logging configured;
    a bad setting is one line and exit 2."""
    from pydantic import ValidationError

    from kubecrawl.core.logging import configure_logging
    from kubecrawl.core.settings import Settings

    try:
        built = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "KUBECRAWL_" + "__".join(str(part) for part in error["loc"]).upper()
        fail(ExitCode.USAGE, f"invalid setting {name}: {error['msg']}", f"fix {name} in the environment")
    built = built.model_copy(update={"service_name": f"kubecrawl-{service}"})
    configure_logging(built.service_name, log_format=built.log_format, level=built.log_level)
    _collect_from_here()
    return built


def _collect_from_here() -> None:
    """Turn the garbage collector back on after the console script turned it off for the imports (``cli.main``),
    first freezing what start-up built: modules, classes, settings live as long as the process, and out of the
    collector's sight no full collection scans them again (as the API does once it is up, ``api/app.py``). A
    caller that left the collector on (a test calling a command in-process) keeps its heap as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop, as uvicorn already runs the API (``uvicorn[standard]``): its event
    loop, in C, took about 5 % off the embedded crawl's time (1-18 % over five paired runs of 2,000 pages; the
    raw loop gains as much, bench/crawl_vs_scrapy.py). Plain asyncio where uvloop does not exist (Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def check_db_path(db: Path) -> None:
    """SQLite creates the file but not its folder: say so before anything starts."""
    folder = db.expanduser().resolve().parent
    if not folder.is_dir():
        fail(
            ExitCode.DATABASE,
            f"cannot open the database {db}: there is no folder {folder}",
            "pass --db FILE in a folder that exists",
        )
