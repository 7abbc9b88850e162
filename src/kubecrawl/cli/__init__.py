"""The ``kubecrawl`` command: one image, one entry point per role.

One module per command group, each importing at its top only what typer needs to build the options (``typer``,
``pathlib``, ``typing``); a command imports its role's modules in its body, so ``kubecrawl trigger`` (a CronJob's
pod, every schedule) never loads the API server, the SQL store or the broker client, and ``kubecrawl crawl`` never
loads RabbitMQ's client, Alembic on an up-to-date database, uvicorn or FastAPI (docs/crawls.md, "Start-up";
tests/integration/test_startup.py keeps them out):

    roles.py       api, openapi, worker, migrate, standalone, operator: the processes of a deployment
    crawling.py    crawl: one site in-process, its progress bar, stats and page file
    triggering.py  trigger: what a CrawlSite's CronJob runs
    keys.py        keys create|list|revoke
    exiting.py     exit codes: the one place a failure becomes one line and a documented code (docs/cli.md)
    starting.py    what every command does first: settings, logging, the event loop

Each command builds ``Settings`` from the environment, configures logging once, and passes both down.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import Annotated, NoReturn

import typer

from kubecrawl.cli import crawling, keys, roles, triggering

HELP = """\
kubecrawl fetches web page metadata and crawls whole sites.

\b
Crawl one site, no servers needed:
  kubecrawl crawl https://example.com/ -o pages.jsonl
Run the whole product (API, worker, schedules) on this machine:
  kubecrawl standalone --sites examples/

On Kubernetes the same image runs the api, worker, operator, migrate and trigger commands. Settings come from
KUBECRAWL_* environment variables; `kubecrawl COMMAND --help` shows a command's options.

\b
Exit codes: 0 done; 1 the crawl or trigger failed; 2 a bad option, setting or URL;
3 the database cannot be reached; 4 RabbitMQ cannot be reached;
5 the output file cannot be written. An expected failure prints one line.
"""

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode=None)
app.add_typer(keys.app, name="keys")
for command in (
    roles.api,
    roles.openapi,
    roles.worker,
    roles.migrate,
    roles.standalone,
    crawling.crawl,
    roles.operator,
    triggering.trigger,
):
    app.command()(command)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"kubecrawl {version('kubecrawl')}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    del version


def main() -> NoReturn:
    """The console script: run the command, then end the process once its output is out.

    Python's own finalisation (clearing some 1,000 modules and collecting their objects) took 0.2 s after a worker's
    last log line, and as long after a crawl's table or a trigger's POST (bench/startup.py). Nothing in it is ours:
    each command closes what it opened before it returns, the exit handlers still run (logging's flush, a
    library's clean-up), and the standard streams are flushed; then the process ends with the command's status.
    While another thread that Python would wait for still runs, the exit is Python's own.

    The garbage collector is off until the command has built its settings (``starting.settings``, by which time
    it has imported its role): importing allocates hundreds of thousands of objects that live as long as the
    process, and the collections they set off (a full one scans all of them) took tens of milliseconds of a
    start-up (docs/crawls.md, "Start-up"). ``starting.settings`` then freezes what exists and turns it back on.
    The commands that never build them are short and bounded: ``--help``, ``--version``, a usage error, ``keys``
    (one database call); they end with the collector off, as a process would after ``gc.disable()``."""
    gc.disable()
    try:
        app()
    except SystemExit as exc:
        status = _exit_status(exc.code)
    else:  # pragma: no cover - typer ends every command with SystemExit
        status = 0
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter would run first; there is no public name for it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``kubecrawl crawl … | head``): Python exits 120 for it
            status = status or 120
    os._exit(status)


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as ``sys.exit`` turns it into a status: None is 0, a message is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # noqa: T201 - what the interpreter prints for sys.exit("message")
    return 1
