"""How a ``kubecrawl`` command ends: the one place errors map to exit codes.

Expected failures (a database or broker that cannot be reached, a refused URL, a bad option or setting) end the
command with ONE line and a documented exit code (``ExitCode``, docs/cli.md): ``error: <cause>; <what to do>`` on
stderr, or, for a command that logs JSON, one last JSON log event ``command_failed`` — never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import IntEnum
from typing import NoReturn

import typer

from kubecrawl.core.errors import BlockedTarget, ConnectionLost, InvalidUrl, PublisherNotReady, StoreUnavailable

LOGGER = "kubecrawl.cli"  # the ``logger`` field of the commands' own log lines


class ExitCode(IntEnum):
    """What ``kubecrawl`` exits with (docs/cli.md)."""

    OK = 0
    FAILED = 1  # the work failed: a crawl fetched no page or did not complete, a trigger was refused
    USAGE = 2  # a bad option, argument, setting or URL (click's own code for usage errors)
    DATABASE = 3  # the database cannot be opened or reached
    BROKER = 4  # RabbitMQ cannot be reached
    OUTPUT = 5  # the output file cannot be written


def fail(code: ExitCode, cause: str, todo: str, *, json_logs: bool = False) -> NoReturn:
    """End the command with one line: a JSON log event where the logs are JSON, else ``error: …`` on stderr."""
    cause = " ".join(cause.split())  # one line, whatever the underlying message held
    if json_logs:
        from kubecrawl.core.logging import get_logger

        get_logger(LOGGER).error("command_failed", error=cause, hint=todo, exit_code=int(code))
    else:
        typer.echo(f"error: {cause}; {todo}", err=True)
    raise typer.Exit(int(code))


def _database_cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError: the driver's own message, without SQL or links
    if orig is not None:
        return f"{type(orig).__name__}: {orig}"
    detail = getattr(exc, "detail", None)
    return str(detail) if detail else f"{type(exc).__name__}: {exc}"


def _expected(exc: Exception, *, os_errors: ExitCode | None) -> tuple[ExitCode, str, str] | None:
    """The exit code, cause and what to do for a failure a user can fix; ``None`` for a bug."""
    from sqlalchemy.exc import SQLAlchemyError  # only once something failed: a MongoDB worker never needs it

    if isinstance(exc, StoreUnavailable | SQLAlchemyError) or (
        os_errors is ExitCode.DATABASE and isinstance(exc, OSError)
    ):
        cause = f"cannot use the database: {_database_cause(exc)}"
        return (
            ExitCode.DATABASE,
            cause,
            "check KUBECRAWL_DATABASE_URL (or --db) and that the database is up and reachable",
        )
    if isinstance(exc, ConnectionLost | PublisherNotReady):
        cause = f"cannot reach RabbitMQ: {exc.detail}"
        return ExitCode.BROKER, cause, "check KUBECRAWL_RABBITMQ_URL and that the broker is up and reachable"
    if isinstance(exc, InvalidUrl):
        return ExitCode.USAGE, f"{exc.code}: {exc.detail}", "give an http(s) URL"
    if isinstance(exc, BlockedTarget):
        todo = "to crawl a private address set KUBECRAWL_ALLOWED_PRIVATE_NETWORKS (or KUBECRAWL_ALLOW_PRIVATE_TARGETS)"
        return ExitCode.USAGE, f"{exc.code}: {exc.detail}", todo
    return None


@contextlib.contextmanager
def expected_failures(*, json_logs: bool, os_errors: ExitCode | None = None) -> Iterator[None]:
    """Turn the failures a user can fix into ``fail``; ``os_errors`` names the service an ``OSError`` came from
    (a refused connection to the database during ``migrate``). Anything else is a bug: its traceback stays."""
    try:
        yield
    except Exception as exc:
        failure = _expected(exc, os_errors=os_errors)
        if failure is None:
            raise
        fail(*failure, json_logs=json_logs)
