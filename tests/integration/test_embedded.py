"""The embedded default: `kubecrawl crawl URL` and the standalone scheduler, on SQLite and the in-process broker."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubecrawl.core.models import CrawlState
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.embedded import embedded_runtime, sqlite_url
from kubecrawl.scheduling import Scheduler, SiteFile, load_sites
from tests.support.cli import kubecrawl
from tests.support.polling import eventually
from tests.support.sites import Site


async def run_crawl(url: str, db: Path) -> tuple[int, str, str]:
    run = await kubecrawl("crawl", url, "--json", "--db", str(db), env={"KUBECRAWL_ALLOW_PRIVATE_TARGETS": "true"})
    return run.code, run.out, run.err


def linked_site(site: Site, title: str = "v1") -> None:
    site.html("/", title="home", body="<a href='/a'>a</a><a href='/b'>b</a>")
    site.html("/a", title=title)
    site.html("/b", title="b")


async def test_crawl_command_crawls_in_process_and_reports_changes_on_the_next_run(site: Site, tmp_path: Path) -> None:
    linked_site(site)
    code, out, err = await run_crawl(site.url("/"), tmp_path / "k.db")
    assert code == 0, err
    first = json.loads(out)
    assert first["state"] == "COMPLETED"
    assert first["counters"]["fetched"] == 3
    linked_site(site, title="v2")
    code, out, err = await run_crawl(site.url("/"), tmp_path / "k.db")
    assert code == 0, err
    second = json.loads(out)
    assert second["counters"]["changed"] == 1
    assert second["counters"]["unchanged"] == 2


def embedded_settings(tmp_path: Path) -> Settings:
    return Settings(database_url=sqlite_url(tmp_path / "s.db"), allow_private_targets=True)  # type: ignore[arg-type]


def test_load_sites_reads_crawlsite_documents_from_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(
        "apiVersion: kubecrawl.io/v1alpha1\nkind: CrawlSite\nmetadata: {name: docs, namespace: web}\n"
        "spec: {url: 'https://example.com/', schedule: '*/5 * * * *'}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n"
    )
    files = load_sites(tmp_path)
    assert [(f.namespace, f.name, f.spec.schedule) for f in files] == [("web", "docs", "*/5 * * * *")]


async def test_scheduler_fires_at_the_scheduled_minute_once_per_minute_and_forbids_overlap(
    site: Site, tmp_path: Path
) -> None:
    site.delay = 0.5  # keep the first crawl running while the next minute fires
    linked_site(site)
    spec = CrawlSiteSpec(url=site.url("/"), schedule="* * * * *")
    files = [SiteFile("default", "cron", spec)]
    async with embedded_runtime(embedded_settings(tmp_path)) as runtime:
        sites, crawls = runtime.stores.sites, runtime.stores.crawls
        scheduler = Scheduler(sites, crawls, runtime.broker)
        await scheduler.register(files)
        start = datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)
        ticks = iter([start, start + timedelta(seconds=31)])
        last: dict[str, Any] = {"now": start}

        def clock() -> datetime:
            last["now"] = next(ticks, last["now"])
            return last["now"]

        runner = asyncio.create_task(scheduler.run(files, now=clock))
        try:
            fired = await eventually(lambda: crawls.list_for_site("default", "cron", limit=10), what="scheduled crawl")
        finally:
            runner.cancel()
        assert len(fired) == 1
        assert fired[0].trigger == "schedule"
        assert fired[0].idempotency_key == "site:default/cron:cron:2026-11-26T10:01:00+00:00"

        # The same scheduled minute again (a restart inside the minute): no second crawl.
        await scheduler.fire(files[0], datetime(2026, 11, 26, 10, 1, tzinfo=UTC))
        # The next minute while the first crawl still runs: Forbid skips it.
        await scheduler.fire(files[0], datetime(2026, 11, 26, 10, 2, tzinfo=UTC))
        assert len(await crawls.list_for_site("default", "cron", limit=10)) == 1

        async def finished() -> bool:
            crawl = await crawls.get(fired[0].id)
            return crawl is not None and crawl.state is CrawlState.COMPLETED

        await eventually(finished, timeout=60, what="scheduled crawl to complete")
        await scheduler.fire(files[0], datetime(2026, 11, 26, 10, 3, tzinfo=UTC))
        assert len(await crawls.list_for_site("default", "cron", limit=10)) == 2
