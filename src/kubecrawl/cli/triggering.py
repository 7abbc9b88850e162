"""``kubecrawl trigger --site NS/NAME``: what a CrawlSite's CronJob runs, every schedule: one POST to the API.

An HTTP client and nothing more: no store, no broker, no server (tests/integration/test_startup.py keeps them out).
"""

from __future__ import annotations

from typing import Annotated

import typer

from kubecrawl.cli import starting


def trigger(
    site: Annotated[str, typer.Option(help="the CrawlSite, NAMESPACE/NAME")],
    job_name: Annotated[
        str | None, typer.Option(envvar="JOB_NAME", help="the Job running this pod (downward API)")
    ] = None,
    cronjob: Annotated[
        str | None, typer.Option(envvar="KUBECRAWL_CRONJOB_NAME", help="the CronJob that makes those Jobs")
    ] = None,
    job_uid: Annotated[str | None, typer.Option(envvar="JOB_UID", help="the Job's uid (downward API)")] = None,
) -> None:
    """Start one crawl of a site through the API.

    What a CrawlSite's CronJob runs. Exits 1 on failure."""
    from kubecrawl.operator.crawlsite.syncing import SiteApi
    from kubecrawl.operator.crawlsite.triggering import (
        REQUEST_TIMEOUT_SECONDS,
        RETRY_DELAYS,
        run_trigger,
        trigger_request,
    )

    settings = starting.settings("trigger")
    try:
        request = trigger_request(site, job_name=job_name, cronjob=cronjob, job_uid=job_uid)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--site") from exc
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    api = SiteApi(
        settings.api_url,
        timeout=REQUEST_TIMEOUT_SECONDS,
        retry_delays=RETRY_DELAYS,
        api_key=api_key,
        token_file=settings.api_token_file,
    )
    raise typer.Exit(starting.run(run_trigger(api, request)))
