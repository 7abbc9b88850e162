"""The ``kubecrawl`` command as a user meets it: run through its real entry point against local sites.

Exit codes and one-line errors (docs/cli.md), the crawl's stats, and its ``-o`` files parsed back.
"""

from __future__ import annotations

import csv
import json
import uuid
from importlib.metadata import version
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from tests.support.cli import kubecrawl, refused_port
from tests.support.servers import PostgresServer
from tests.support.sites import Page, Site

OPEN = {"KUBECRAWL_ALLOW_PRIVATE_TARGETS": "true"}  # the test sites live on loopback


def small_site(site: Site) -> None:
    site.html(
        "/",
        title="Home",
        head=(
            "<meta name='description' content='the home page'><link rel='canonical' href='/'>"
            "<meta property='og:title' content='OG home'><meta name='twitter:card' content='summary'>"
        ),
        body="<a href='/a'>a</a><a href='/missing'>gone</a>",
    )
    site.html("/a", title="A")


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


async def test_version_prints_the_installed_version() -> None:
    run = await kubecrawl("--version")
    assert run.code == 0
    assert run.out.strip() == f"kubecrawl {version('kubecrawl')}"


async def test_top_level_help_tells_a_user_how_to_start_and_what_exit_codes_mean() -> None:
    run = await kubecrawl("--help")
    assert run.code == 0
    assert "kubecrawl crawl https://example.com/ -o pages.jsonl" in run.out
    assert "Exit codes: 0 done; 1 the crawl or trigger failed; 2 a bad option" in run.out
    assert "one entry point per role" not in run.out  # the module docstring is for developers


async def test_crawl_prints_stats_and_writes_every_page_to_jsonl(site: Site, tmp_path: Path) -> None:
    small_site(site)
    pages_file = tmp_path / "pages.jsonl"
    run = await kubecrawl("crawl", site.url("/"), "-o", str(pages_file), "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    pages = {page["url"]: page for page in map(json.loads, pages_file.read_text().splitlines())}
    assert set(pages) == {site.url("/"), site.url("/a"), site.url("/missing")}
    home = pages[site.url("/")]
    assert (home["status"], home["title"], home["description"]) == (200, "Home", "the home page")
    assert (home["canonical"], home["lang"], home["depth"], home["changed"]) == (site.url("/"), "en", 0, None)
    assert home["opengraph"] == {"og:title": "OG home"}
    assert home["twitter"] == {"twitter:card": "summary"}
    assert home["headers"]["content-type"] == "text/html; charset=utf-8"
    assert home["timings"]["total_ms"] >= 0
    assert home["bytes"] > 0
    missing = pages[site.url("/missing")]
    assert (missing["state"], missing["status"], missing["error_code"], missing["depth"]) == (
        "FAILED",
        404,
        "http_404",
        1,
    )
    # the stats, Scrapy-like, and the failed page with its reason
    for stat in ("pages fetched", "status 200", "status 404", "failed: http_404", "retries", "bytes", "pages/s"):
        assert stat in run.out, run.out
    assert "finished" in run.out
    assert f"failed {site.url('/missing')}: http_404" in run.out
    assert run.err == ""


async def test_a_second_crawl_writes_which_pages_changed(site: Site, tmp_path: Path) -> None:
    small_site(site)
    db = str(tmp_path / "k.db")
    assert (await kubecrawl("crawl", site.url("/"), "--db", db, env=OPEN)).code == 0
    site.html("/a", title="A, edited")
    run = await kubecrawl("crawl", site.url("/"), "-o", str(tmp_path / "second.jsonl"), "--db", db, env=OPEN)
    assert run.code == 0, run.err
    pages = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    changed = {page["url"]: page["changed"] for page in pages if page["state"] == "DONE"}
    assert changed == {site.url("/"): False, site.url("/a"): True}
    assert "1 / 1" in run.out  # changed / unchanged


@pytest.mark.parametrize(("name", "extra"), [("pages.csv", []), ("pages.json", []), ("pages.out", ["--format", "csv"])])
async def test_the_page_file_format_follows_the_suffix_or_format(
    site: Site, tmp_path: Path, name: str, extra: list[str]
) -> None:
    small_site(site)
    path = tmp_path / name
    run = await kubecrawl("crawl", site.url("/"), "-o", str(path), *extra, "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
        titles = {row["url"]: row["title"] for row in rows}
        assert rows[0]["opengraph"] in ({"og:title": "OG home"}, {})
    else:
        with path.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        titles = {row["url"]: row["title"] or None for row in rows}
        home = next(row for row in rows if row["url"] == site.url("/"))
        assert json.loads(home["opengraph"]) == {"og:title": "OG home"}  # nested fields are JSON in a CSV cell
    assert titles == {site.url("/"): "Home", site.url("/a"): "A", site.url("/missing"): None}


async def test_format_without_output_writes_the_pages_to_stdout_and_the_stats_to_stderr(
    site: Site, tmp_path: Path
) -> None:
    small_site(site)
    run = await kubecrawl("crawl", site.url("/"), "--format", "jsonl", "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    assert {json.loads(line)["url"] for line in run.out.splitlines()} == {
        site.url("/"),
        site.url("/a"),
        site.url("/missing"),
    }
    assert "status 200" in run.err


async def test_json_output_includes_the_stats(site: Site, tmp_path: Path) -> None:
    small_site(site)
    site.pages["/robots.txt"] = Page("User-agent: *\nDisallow: /*.pdf$\n", headers={"Content-Type": "text/plain"})
    site.html("/a", title="A", body="<a href='/doc.pdf'>pdf</a>")
    run = await kubecrawl("crawl", site.url("/"), "--json", "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    stats = json.loads(run.out)["stats"]
    assert stats["finish_reason"] == "finished"
    assert stats["pages"] == 2
    assert stats["status_codes"] == {"200": 2, "404": 1}
    assert stats["failures"] == {"http_404": 1}
    assert stats["skipped"] == {"robots_disallowed": 1}  # RFC 9309's '$' holds end to end
    assert site.hits["/doc.pdf"] == 0
    assert stats["retries"] == 0
    assert stats["bytes"] > 0
    assert stats["duration_seconds"] > 0
    assert stats["pages_per_second"] > 0


async def test_a_crawl_that_fetches_nothing_exits_1_and_shows_why_each_page_failed(tmp_path: Path) -> None:
    # 127.0.0.2 is opened as an intranet range; its start page redirects to 127.0.0.1, which stays refused
    site = Site(host="127.0.0.2")
    await site.start()
    try:

        async def away(_: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"http://127.0.0.1:{site.port}/")

        site.handlers["/"] = away
        env = {"KUBECRAWL_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.2/32"]'}
        run = await kubecrawl("crawl", site.url("/"), "--db", str(tmp_path / "k.db"), env=env)
    finally:
        await site.stop()
    assert run.code == 1
    assert "failed: blocked_target" in run.out
    assert f"failed {site.url('/')}: blocked_target: " in run.out
    assert run.err == ""


async def test_a_refused_start_url_is_one_line_and_exit_2_without_a_progress_bar(site: Site, tmp_path: Path) -> None:
    small_site(site)
    run = await kubecrawl("crawl", site.url("/"), "--db", str(tmp_path / "k.db"))  # the guard on, as by default
    assert run.code == 2
    assert_one_error_line(run.err, "blocked_target", "KUBECRAWL_ALLOWED_PRIVATE_NETWORKS")
    assert run.out == ""
    assert sum(site.hits.values()) == 0


@pytest.mark.parametrize(
    ("args", "env", "code", "fragments"),
    [
        (["crawl", "https://example.com/", "--db", "/nonexistent/x.db"], {}, 3, ["/nonexistent", "--db"]),
        (["crawl", "https://example.com/", "--max-pages", "0"], {}, 2, ["--max-pages", "greater than or equal to 1"]),
        (["crawl", "https://example.com/", "--concurrency", "1000"], {}, 2, ["--concurrency"]),
        (["crawl", "ftp://example.com/"], {}, 2, ["unsupported_scheme"]),
        (["crawl", "https://xn--zz.example/"], {}, 2, ["invalid host name"]),
        (["crawl", "https://example.com/", "-o", "/nonexistent/pages.jsonl"], {}, 5, ["/nonexistent/pages.jsonl"]),
        (["crawl", "https://example.com/", "-o", "pages.txt"], {}, 2, ["pages.txt", "--format"]),
        (["crawl", "https://example.com/", "-o", "p.jsonl", "--format", "xml"], {}, 2, ["--format"]),
        (["crawl", "https://example.com/", "-o", "-", "--json"], {}, 2, ["--json"]),
        (["migrate"], {"KUBECRAWL_LOG_FORMAT": "xml"}, 2, ["KUBECRAWL_LOG_FORMAT"]),
    ],
)
async def test_expected_failures_are_one_line_with_a_documented_exit_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, fragments: list[str]
) -> None:
    run = await kubecrawl(*args, env=env, cwd=tmp_path)
    assert run.code == code, run.err
    assert_one_error_line(run.err, *fragments)
    assert "Traceback" not in run.out + run.err


def json_lines(err: str) -> list[dict[str, object]]:
    """Every stderr line as JSON: a line that is not fails the test."""
    return [json.loads(line) for line in err.splitlines()]


async def test_migrate_against_an_unreachable_database_ends_with_one_json_event_and_exit_3() -> None:
    with refused_port() as port:
        run = await kubecrawl(
            "migrate", env={"KUBECRAWL_DATABASE_URL": f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db"}
        )
    assert run.code == 3
    events = json_lines(run.err)
    assert events[-1]["event"] == "command_failed"
    assert "cannot use the database: ConnectionRefusedError" in str(events[-1]["error"])
    assert "KUBECRAWL_DATABASE_URL" in str(events[-1]["hint"])


async def test_worker_without_a_broker_keeps_its_logs_json_to_the_last_line_and_exits_4(tmp_path: Path) -> None:
    with refused_port() as port:
        env = {
            "KUBECRAWL_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
            "KUBECRAWL_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
            "KUBECRAWL_LOG_FORMAT": "json",
            # the production backoff, shortened: two attempts 0.1 s apart
            "KUBECRAWL_PUBLISHER__MAX_CONNECTION_ATTEMPTS": "2",
            "KUBECRAWL_PUBLISHER__INITIAL_BACKOFF_SECONDS": "0.1",
        }
        run = await kubecrawl("worker", "--metrics-port", "0", env=env)
    assert run.code == 4
    events = json_lines(run.err)
    assert any(event["event"] == "rmq_connect_failed" for event in events)
    assert events[-1]["event"] == "command_failed"
    assert "KUBECRAWL_RABBITMQ_URL" in str(events[-1]["hint"])


async def test_worker_without_a_database_exits_3_with_one_json_event() -> None:
    with refused_port() as port:
        env = {
            "KUBECRAWL_DATABASE_URL": f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db",
            "KUBECRAWL_LOG_FORMAT": "json",
            "KUBECRAWL_DB_CONNECT_ATTEMPTS": "1",
        }
        run = await kubecrawl("worker", "--metrics-port", "0", env=env)
    assert run.code == 3
    events = json_lines(run.err)
    assert events[-1]["event"] == "command_failed"
    assert "cannot use the database" in str(events[-1]["error"])


async def test_migrate_accepts_the_libpq_url_a_database_operator_hands_out(postgres: PostgresServer) -> None:
    # CloudNativePG's <cluster>-app Secret (key `uri`) and most managed databases give `postgresql://…`.
    driver_url = postgres.create_database("libpq_" + uuid.uuid4().hex[:8])
    libpq_url = driver_url.replace("postgresql+asyncpg://", "postgresql://") + "?sslmode=disable"
    run = await kubecrawl("migrate", env={"KUBECRAWL_DATABASE_URL": libpq_url, "KUBECRAWL_LOG_FORMAT": "json"})
    assert run.code == 0, run.err
    connection = await asyncpg.connect(libpq_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM alembic_version") == 1
    finally:
        await connection.close()
