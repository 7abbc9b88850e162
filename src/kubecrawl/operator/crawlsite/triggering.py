"""``kubecrawl trigger --site NS/NAME``: what a CronJob's pod runs to start one crawl through the API.

The idempotency key comes from the Job running the pod (downward API: ``JOB_NAME``, ``JOB_UID``; the operator
sets ``KUBECRAWL_CRONJOB_NAME``): a Job the CronJob made for a scheduled minute maps to that minute's key, so pod
retries, a second run for the same minute and the embedded scheduler all start ONE crawl; a Job made by hand
(``kubectl create job --from=cronjob/…``) is a manual crawl keyed by the Job; no Job at all, a new crawl.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.schedules import schedule_key
from kubecrawl.operator.crawlsite import naming
from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi

log = get_logger(__name__)

# The trigger retries on its own for about 15 s (1 + 2 + 4 + 8) before failing the pod; the Job then retries
# with a fresh pod (backoffLimit), so an API restart or a rolling update never loses a scheduled crawl.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    namespace: str
    name: str
    trigger: str  # "schedule" | "manual"
    idempotency_key: str | None


def parse_site(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--site must be NAMESPACE/NAME, got {value!r}")
    return namespace, name


def trigger_request(
    site: str, *, job_name: str | None, cronjob: str | None, job_uid: str | None = None
) -> TriggerRequest:
    """Which crawl this run stands for (pure)."""
    namespace, name = parse_site(site)
    if job_name:
        scheduled = naming.scheduled_time(job_name, cronjob or naming.cronjob_name(name))
        if scheduled is not None:
            return TriggerRequest(namespace, name, "schedule", schedule_key(namespace, name, scheduled))
        return TriggerRequest(namespace, name, "manual", naming.manual_job_key(namespace, name, job_name, job_uid))
    return TriggerRequest(namespace, name, "manual", None)


async def run_trigger(api: SiteApi, request: TriggerRequest) -> int:
    """POST the crawl; the process exit code (0 started or already started, 1 failed so the Job retries)."""
    site = f"{request.namespace}/{request.name}"
    try:
        crawl, created = await api.trigger_crawl(
            request.namespace, request.name, trigger=request.trigger, idempotency_key=request.idempotency_key
        )
    except ApiRejected as exc:
        if exc.code != "crawl_overlap":
            log.error("crawl_trigger_failed", site=site, code=exc.code, error=exc.detail, key=request.idempotency_key)  # noqa: TRY400
            return 1
        # An API from before 200-with-the-active-crawl (a rolling upgrade) refused the skipped run with 409.
        log.info("crawl_trigger_skipped", site=site, reason=exc.detail, key=request.idempotency_key)
        return 0
    except KubecrawlError as exc:
        # An expected failure with its reason; a traceback would add nothing.
        log.error("crawl_trigger_failed", site=site, code=exc.code, error=exc.detail, key=request.idempotency_key)  # noqa: TRY400
        return 1
    finally:
        await api.aclose()
    if crawl.get("skipped"):
        # overlapPolicy Forbid and the previous crawl still runs: this run is skipped, which is not a failure.
        log.info(
            "crawl_trigger_skipped",
            site=site,
            reason=crawl["skipped"],
            crawl_id=crawl.get("id"),
            key=request.idempotency_key,
        )
        return 0
    log.info(
        "crawl_triggered" if created else "crawl_trigger_duplicate",
        site=site,
        crawl_id=crawl.get("id"),
        trigger=request.trigger,
        idempotency_key=request.idempotency_key,
    )
    return 0
