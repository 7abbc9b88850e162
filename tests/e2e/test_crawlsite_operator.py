"""CrawlSite → CronJob on a real control plane: CRD validation by the API server, the operator (least-privilege
ServiceAccount from deploy/rbac) creating, patching and deleting CronJobs, garbage collection and the cronjob
controller of kube-controller-manager, the trigger's idempotency against the real API, status and Events.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubecrawl.core.schedules import schedule_key
from kubecrawl.operator.crawlsite.naming import cronjob_name
from tests.support.polling import eventually
from tests.support.sites import Site
from tests.support.stack import (
    EXAMPLES,
    Cluster,
    Kube,
    KubectlFailed,
    OperatorProcess,
    Services,
    http_json,
    http_status,
)

pytestmark = pytest.mark.e2e

# The operator reacts within about a second; 30 s leaves room for a loaded 2-core machine.
REACT = 30.0


@pytest.fixture
def kube(cluster: Cluster) -> Kube:
    return cluster.admin


@pytest.fixture(autouse=True)
def operator_has_enough_rights(operator: OperatorProcess) -> Iterator[None]:
    """Every test doubles as a least-privilege check: the operator's log must show no refused request."""
    start = len(operator.output())
    yield
    assert operator.problems(start) == []


def crawlsite(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlSite",
        "metadata": {"name": name},
        "spec": {"url": "https://example.com/", **spec},
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


async def cronjob_of(kube: Kube, namespace: str, site: str) -> dict[str, Any] | None:
    return await kube.aget("cronjob", cronjob_name(site), namespace)


async def wait_cronjob(kube: Kube, namespace: str, site: str, check: Any = bool) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        cj = await cronjob_of(kube, namespace, site)
        return cj if cj is not None and check(cj) else None

    found: dict[str, Any] = await eventually(probe, timeout=REACT, what=f"CronJob for {namespace}/{site}")
    return found


async def wait_status(kube: Kube, namespace: str, site: str, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        cs = await kube.aget("crawlsite", site, namespace)
        return cs if cs is not None and check(cs) else None

    found: dict[str, Any] = await eventually(probe, timeout=REACT, what=f"status of {namespace}/{site}")
    return found


async def wait_event(kube: Kube, namespace: str, site: str, reason: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((e for e in await kube.aevents(namespace, site) if e["reason"] == reason), None)

    found: dict[str, Any] = await eventually(probe, timeout=REACT, what=f"{reason} Event on {site}")
    return found


def ready(cs: dict[str, Any]) -> bool:
    """Ready, and for the current spec."""
    current = (cs.get("status") or {}).get("observedGeneration") == cs["metadata"].get("generation")
    return current and condition(cs, "Ready").get("status") == "True"


# -- examples and the CronJob's fields -------------------------------------------------------------------------------


async def test_examples_apply_and_become_cronjobs_with_the_specs_fields(
    kube: Kube, namespace: str, services: Services
) -> None:
    await kube.arun("apply", "-n", namespace, "-f", str(EXAMPLES))
    full = await wait_cronjob(kube, namespace, "example-blog")
    site = await wait_status(kube, namespace, "example-blog", ready)
    spec = full["spec"]
    assert spec["schedule"] == "30 6 * * MON-FRI"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 300
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 3)
    job = spec["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"], job["ttlSecondsAfterFinished"]) == (3, 600, 86400)
    (container,) = job["template"]["spec"]["containers"]
    assert container["image"] == "kubecrawl:e2e"
    assert container["command"] == ["kubecrawl", "trigger", "--site", f"{namespace}/example-blog"]
    (owner,) = full["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "CrawlSite",
        "example-blog",
        site["metadata"]["uid"],
        True,
    )
    assert full["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubecrawl-operator"

    daily = await wait_cronjob(kube, namespace, "example-docs")
    assert (daily["spec"]["schedule"], "timeZone" in daily["spec"]) == ("0 3 * * *", False)
    assert site["status"]["cronJobName"] == "example-blog"
    assert {condition(site, t)["status"] for t in ("Scheduled", "Synced", "Ready")} == {"True"}

    # No schedule: no CronJob, but the site is synced and ready (crawls on demand).
    on_demand = await wait_status(kube, namespace, "example-shop", ready)
    assert condition(on_demand, "Scheduled")["reason"] == "NoSchedule"
    assert await cronjob_of(kube, namespace, "example-shop") is None

    # The API has the spec with the CRD's defaults filled in by the API server.
    status, body = http_json(f"{services.api_url}/sites/{namespace}/example-blog")
    assert status == 200
    assert body["spec"]["scope"]["maxPages"] == 500
    assert body["spec"]["politeness"]["respectRobotsTxt"] is True
    status, body = http_json(f"{services.api_url}/sites/{namespace}/example-shop")
    assert (status, body["spec"]["overlapPolicy"], body["spec"]["scope"]["maxDepth"]) == (200, "Forbid", 5)

    await wait_event(kube, namespace, "example-blog", "CronJobCreated")


async def test_kubectl_get_shows_the_printer_columns_by_short_name_and_category(kube: Kube, namespace: str) -> None:
    await kube.aapply(crawlsite("columns", schedule="@hourly"), namespace)
    await wait_status(kube, namespace, "columns", ready)
    table = (await kube.arun("get", "csite", "-n", namespace)).stdout
    assert table.split("\n")[0].split() == ["NAME", "URL", "SCHEDULE", "SUSPEND", "LAST", "STATE", "PAGES", "AGE"]
    assert "columns" in (await kube.arun("get", "kubecrawl", "-n", namespace)).stdout
    wide = (await kube.arun("get", "crawlsites", "-n", namespace, "-o", "wide")).stdout
    assert wide.split("\n")[0].split()[-3:] == ["READY", "CRONJOB", "AGE"]
    assert wide.split("\n")[1].split()[-3:-1] == ["True", "columns"]
    # No `cs`: it is the built-in ComponentStatus's short name; declaring it too only made kubectl warn of a clash.
    plain = await kube.arun("get", "cs", "-n", namespace, check=False)
    assert "crawlsites.kubecrawl.io" not in plain.stderr
    assert "columns" not in plain.stdout


# -- the API server refuses invalid manifests, naming the field -----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        ({"url": "ftp://example.com/"}, "spec.url", "http:// or https://"),
        ({"url": "example.com"}, "spec.url", "http:// or https://"),
        ({"schedule": "bad cron"}, "spec.schedule", "5-field cron"),
        ({"schedule": "61 * * * *"}, "spec.schedule", "5-field cron"),
        ({"scope": {"maxPages": -1}}, "spec.scope.maxPages", "should be greater than or equal to 1"),
        ({"overlapPolicy": "Sometimes"}, "spec.overlapPolicy", "Unsupported value"),
        ({"politeness": {"maxConcurrency": 65}}, "spec.politeness.maxConcurrency", "less than or equal to 64"),
        ({"timeZone": "not a zone"}, "spec.timeZone", "should match"),
    ],
    ids=["ftp-url", "relative-url", "bad-cron", "minute-61", "negative-max-pages", "overlap", "concurrency", "tz"],
)
async def test_invalid_manifests_are_refused_naming_the_field(
    kube: Kube, namespace: str, spec: dict[str, Any], field: str, why: str
) -> None:
    manifest = crawlsite("invalid")
    manifest["spec"].update(spec)
    with pytest.raises(KubectlFailed) as refused:
        await kube.aapply(manifest, namespace)
    message = refused.value.result.stderr
    assert field in message
    assert why in message
    assert await kube.aget("crawlsite", "invalid", namespace) is None


@pytest.mark.parametrize("validate", [None, "--validate=strict"], ids=["kubectl-default", "strict"])
async def test_unknown_spec_fields_are_refused_with_strict_field_validation(
    kube: Kube, namespace: str, validate: str | None
) -> None:
    manifest = crawlsite("unknown-field", maxPages=10)
    with pytest.raises(KubectlFailed) as refused:
        await kube.aapply(manifest, namespace, *([validate] if validate else []))
    assert 'unknown field "spec.maxPages"' in refused.value.result.stderr
    assert await kube.aget("crawlsite", "unknown-field", namespace) is None


async def test_without_strict_validation_unknown_spec_fields_are_pruned(kube: Kube, namespace: str) -> None:
    """What a structural schema does on its own: drop the field (documented in docs/operator.md)."""
    await kube.aapply(crawlsite("pruned", maxPages=10), namespace, "--validate=false")
    stored = await kube.aget("crawlsite", "pruned", namespace)
    assert stored is not None
    assert "maxPages" not in stored["spec"]
    assert stored["spec"]["scope"]["maxPages"] == 1000  # the default, not the misplaced 10


# -- spec changes ----------------------------------------------------------------------------------------------------


async def test_schedule_edit_patches_the_same_cronjob(kube: Kube, namespace: str) -> None:
    await kube.aapply(crawlsite("edit", schedule="0 3 * * *"), namespace)
    before = await wait_cronjob(kube, namespace, "edit")
    await kube.aapply(crawlsite("edit", schedule="15 4 * * *", overlapPolicy="Replace", timeZone="UTC"), namespace)
    after = await wait_cronjob(kube, namespace, "edit", lambda cj: cj["spec"]["schedule"] == "15 4 * * *")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert (after["spec"]["concurrencyPolicy"], after["spec"]["timeZone"]) == ("Replace", "UTC")
    await wait_event(kube, namespace, "edit", "CronJobUpdated")
    # Dropping timeZone from the spec removes it from the CronJob (server-side apply owns the field).
    await kube.aapply(crawlsite("edit", schedule="15 4 * * *"), namespace)
    await wait_cronjob(kube, namespace, "edit", lambda cj: "timeZone" not in cj["spec"])


async def test_suspend_suspends_the_cronjob_and_resume_unsuspends_it(kube: Kube, namespace: str) -> None:
    await kube.aapply(crawlsite("pause", schedule="*/5 * * * *"), namespace)
    await wait_cronjob(kube, namespace, "pause")
    site = await wait_status(kube, namespace, "pause", lambda cs: bool(cs["status"].get("nextScheduleTime")))
    upcoming = datetime.fromisoformat(site["status"]["nextScheduleTime"])
    # the next multiple of five minutes, within five minutes from now
    assert (upcoming.minute % 5, upcoming.second) == (0, 0)
    assert timedelta(0) < upcoming - datetime.now(UTC) <= timedelta(minutes=5)
    await kube.arun("patch", "crawlsite", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    await wait_cronjob(kube, namespace, "pause", lambda cj: cj["spec"]["suspend"] is True)
    site = await wait_status(
        kube, namespace, "pause", lambda cs: condition(cs, "Scheduled").get("reason") == "Suspended"
    )
    assert condition(site, "Ready")["status"] == "True"
    assert "nextScheduleTime" not in site["status"]  # a suspended schedule fires never
    await kube.arun("patch", "crawlsite", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    await wait_cronjob(kube, namespace, "pause", lambda cj: cj["spec"]["suspend"] is False)


async def test_removing_the_schedule_deletes_the_cronjob(kube: Kube, namespace: str) -> None:
    await kube.aapply(crawlsite("unschedule", schedule="@daily"), namespace)
    await wait_cronjob(kube, namespace, "unschedule")
    patch = '[{"op": "remove", "path": "/spec/schedule"}]'
    await kube.arun("patch", "crawlsite", "unschedule", "-n", namespace, "--type=json", "-p", patch)

    async def gone() -> bool:
        return await cronjob_of(kube, namespace, "unschedule") is None

    await eventually(gone, timeout=REACT, what="CronJob deleted")
    site = await wait_status(
        kube, namespace, "unschedule", lambda cs: condition(cs, "Scheduled").get("reason") == "NoSchedule"
    )
    assert "cronJobName" not in site["status"]
    await wait_event(kube, namespace, "unschedule", "CronJobDeleted")


async def test_deleting_the_crawlsite_garbage_collects_its_cronjob(
    kube: Kube, namespace: str, services: Services
) -> None:
    await kube.aapply(crawlsite("doomed", schedule="@hourly"), namespace)
    await wait_cronjob(kube, namespace, "doomed")
    await wait_status(kube, namespace, "doomed", ready)
    await kube.arun("delete", "crawlsite", "doomed", "-n", namespace, "--wait=true")

    async def collected() -> bool:  # by kube-controller-manager's garbage collector, not by the operator
        return await cronjob_of(kube, namespace, "doomed") is None

    await eventually(collected, timeout=REACT, what="CronJob garbage-collected")

    async def forgotten() -> bool:  # best effort: the operator saw the deletion and told the API
        return http_json(f"{services.api_url}/sites/{namespace}/doomed")[0] == 404

    await eventually(forgotten, timeout=REACT, what="site removed from the API")


async def test_a_long_name_gets_a_shortened_deterministic_cronjob_name(kube: Kube, namespace: str) -> None:
    name = "a-very-long-crawlsite-name-that-does-not-fit-in-a-cronjob-name-at-all"
    assert len(name) > 52
    await kube.aapply(crawlsite(name, schedule="@daily"), namespace)
    cj = await wait_cronjob(kube, namespace, name)
    assert len(cj["metadata"]["name"]) <= 52
    site = await wait_status(kube, namespace, name, ready)
    assert site["status"]["cronJobName"] == cj["metadata"]["name"] == cronjob_name(name)


async def test_a_time_zone_the_api_server_does_not_know_is_reported_in_the_scheduled_condition(
    kube: Kube, namespace: str
) -> None:
    await kube.aapply(crawlsite("mars", schedule="@daily", timeZone="Mars/Olympus_Mons"), namespace)
    site = await wait_status(kube, namespace, "mars", lambda cs: bool(condition(cs, "Scheduled")))
    scheduled = condition(site, "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "CronJobRejected")
    assert "Mars/Olympus_Mons" in scheduled["message"]
    assert condition(site, "Ready")["reason"] == "NotScheduled"
    await wait_event(kube, namespace, "mars", "CronJobRejected")
    assert await cronjob_of(kube, namespace, "mars") is None


async def test_a_spec_the_api_refuses_is_surfaced_in_the_synced_condition(kube: Kube, namespace: str) -> None:
    # The CRD cannot compile regexes; the API can, and refuses: Synced=False, a Warning Event, no retry storm.
    await kube.aapply(crawlsite("badregex", scope={"include": ["(unclosed"]}), namespace)
    site = await wait_status(kube, namespace, "badregex", lambda cs: bool(condition(cs, "Synced")))
    synced = condition(site, "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "SpecRejected")
    assert "include" in synced["message"]
    assert condition(site, "Ready")["status"] == "False"
    await wait_event(kube, namespace, "badregex", "SpecRejected")


# -- operator restarts and outages -----------------------------------------------------------------------------------


async def test_operator_killed_and_restarted_keeps_exactly_one_cronjob_and_converges(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    await kube.aapply(crawlsite("survivor", schedule="0 1 * * *"), namespace)
    first = await wait_cronjob(kube, namespace, "survivor")
    operator.kill()
    # While the operator is down: one site changes, one appears.
    await kube.aapply(crawlsite("survivor", schedule="0 2 * * *"), namespace)
    await kube.aapply(crawlsite("newcomer", schedule="0 5 * * *"), namespace)
    await asyncio.to_thread(operator.start)

    after = await wait_cronjob(kube, namespace, "survivor", lambda cj: cj["spec"]["schedule"] == "0 2 * * *")
    await wait_cronjob(kube, namespace, "newcomer")
    assert after["metadata"]["uid"] == first["metadata"]["uid"]
    for site in ("survivor", "newcomer"):
        owned = await kube.alist("cronjobs", namespace, f"kubecrawl.io/crawlsite={site}")
        assert len(owned) == 1
        await wait_status(kube, namespace, site, ready)


async def test_crawlsites_carry_no_finalizer_so_deleting_one_needs_no_operator(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    await kube.aapply(crawlsite("orphan", schedule="@daily"), namespace)
    await wait_cronjob(kube, namespace, "orphan")
    site = await wait_status(kube, namespace, "orphan", ready)
    assert site["metadata"].get("finalizers", []) == []
    operator.kill()
    try:
        await kube.arun("delete", "crawlsite", "orphan", "-n", namespace, "--wait=true", "--timeout=30s")

        async def collected() -> bool:
            return await cronjob_of(kube, namespace, "orphan") is None

        await eventually(collected, timeout=REACT, what="CronJob garbage-collected without the operator")
    finally:
        await asyncio.to_thread(operator.start)


async def test_a_cronjob_deleted_by_hand_is_recreated(kube: Kube, namespace: str) -> None:
    await kube.aapply(crawlsite("stubborn", schedule="@daily"), namespace)
    first = await wait_cronjob(kube, namespace, "stubborn")
    await wait_status(kube, namespace, "stubborn", ready)
    await kube.arun("delete", "cronjob", "stubborn", "-n", namespace)
    # The status refresher (every 2 s here) notices and asks for a resync; the handler recreates it.
    again = await wait_cronjob(
        kube, namespace, "stubborn", lambda cj: cj["metadata"]["uid"] != first["metadata"]["uid"]
    )
    assert again["spec"]["schedule"] == "@daily"
    site = await kube.aget("crawlsite", "stubborn", namespace)
    assert site is not None
    assert "resync.kubecrawl.io/requested" in site["metadata"]["annotations"]


def site_series(operator: OperatorProcess, labels: dict[str, str]) -> dict[str, float]:
    """The operator's ``kubecrawl_site_*`` samples with exactly ``labels``, by metric name."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("kubecrawl_site_")
        for sample in family.samples
        if sample.labels == labels
    }


def reconcile_errors(operator: OperatorProcess) -> dict[tuple[str, str], float]:
    """``kubecrawl_operator_reconcile_errors_total`` from the operator's /metrics, by (kind, reason)."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.labels["kind"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "kubecrawl_operator_reconcile_errors"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_api_outage_is_surfaced_as_not_synced_counted_as_reconcile_errors_and_heals_on_return(
    kube: Kube, namespace: str, operator: OperatorProcess, services: Services
) -> None:
    await asyncio.to_thread(operator.restart, KUBECRAWL_API_URL="http://127.0.0.1:9")  # nothing listens on 9
    try:
        assert reconcile_errors(operator).get(("CrawlSite", "SyncFailed"), 0) == 0  # a fresh process
        await kube.aapply(crawlsite("outage", schedule="@weekly"), namespace)
        await wait_cronjob(kube, namespace, "outage")  # the schedule does not wait for the API
        site = await wait_status(
            kube, namespace, "outage", lambda cs: condition(cs, "Synced").get("reason") == "SyncFailed"
        )
        assert condition(site, "Synced")["status"] == "False"
        assert condition(site, "Ready")["status"] == "False"
        await wait_event(kube, namespace, "outage", "SyncFailed")

        async def counted() -> dict[tuple[str, str], float] | None:
            errors = await asyncio.to_thread(reconcile_errors, operator)
            # The failed sync, and the status refresher's failed reads of the API (every 2 s here).
            wanted = ("CrawlSite", "SyncFailed"), ("CrawlSite", "StatusRefreshFailed")
            return errors if all(errors.get(key, 0) >= 1 for key in wanted) else None

        errors = await eventually(counted, timeout=REACT, what="reconcile errors on the operator's /metrics")
        # The CronJob half worked: it is not counted.
        assert ("CrawlSite", "CronJobError") not in errors
    finally:
        await asyncio.to_thread(operator.restart, KUBECRAWL_API_URL=services.api_url)
    await wait_status(kube, namespace, "outage", ready)
    assert http_json(f"{services.api_url}/sites/{namespace}/outage")[0] == 200


# -- the schedule fires: Job, trigger idempotency, live status -------------------------------------------------------


@pytest.fixture
async def local_site() -> AsyncIterator[Site]:
    site = Site()
    site.html("/", title="home", body="<a href='/a'>a</a> <a href='/b'>b</a>")
    site.html("/a", title="a")
    site.html("/b", title="b")
    await site.start()
    yield site
    await site.stop()


async def next_job(kube: Kube, namespace: str, site: str, *, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The first Job of the site's CronJob not in ``seen``, made by kube-controller-manager's cronjob controller
    when the schedule fires (up to a minute for ``* * * * *``)."""

    async def job() -> dict[str, Any] | None:
        jobs = await kube.alist("jobs", namespace, f"kubecrawl.io/crawlsite={site}")
        return next((j for j in jobs if j["metadata"]["name"] not in seen), None)

    found: dict[str, Any] = await eventually(job, timeout=75, interval=1, what=f"a new Job of {namespace}/{site}")
    return found


def scheduled_for(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"])


async def trigger_env(kube: Kube, namespace: str, job: dict[str, Any], api_url: str, folder: Path) -> dict[str, str]:
    """The environment of the Job's trigger pod, as the kubelet would give it: the pod template's env, the downward
    API values filled in, and the projected token of its ServiceAccount for the kubecrawl audience in its file."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["kubecrawl", "trigger"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECRAWL_")}
    for item in container["env"]:
        env[item["name"]] = item.get("value", "")
    env.update(
        JOB_NAME=job["metadata"]["name"],
        JOB_UID=job["metadata"]["uid"],
        KUBECRAWL_API_URL=api_url,
        SITE=container["command"][3],
    )
    (source,) = job["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    token = await kube.arun("create", "token", "default", "-n", namespace, "--audience", "kubecrawl")
    token_file = folder / job["metadata"]["name"] / source["serviceAccountToken"]["path"]
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token.stdout)
    env["KUBECRAWL_API_TOKEN_FILE"] = str(token_file)
    return env


def run_trigger(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", "trigger", "--site", env.pop("SITE")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_every_minute_schedule_fires_a_job_and_two_triggers_start_one_crawl(
    kube: Kube,
    namespace: str,
    services: Services,
    local_site: Site,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    await kube.aapply(crawlsite("minutely", url=local_site.url("/"), schedule="* * * * *"), namespace)
    await wait_cronjob(kube, namespace, "minutely")
    found = await next_job(kube, namespace, "minutely")
    scheduled = scheduled_for(found)
    # Run the trigger as the Job's pod would (no node here to run the pod).
    env = await trigger_env(kube, namespace, found, services.api_url, tmp_path)
    first, second = [await asyncio.to_thread(run_trigger, dict(env)) for _ in range(2)]
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "crawl_triggered" in first.stderr
    assert "crawl_trigger_duplicate" in second.stderr

    status, body = http_json(f"{services.api_url}/sites/{namespace}/minutely/crawls")
    assert status == 200
    (crawl,) = body["items"]
    assert crawl["trigger"] == "schedule"
    assert crawl["idempotency_key"] == schedule_key(namespace, "minutely", scheduled.astimezone(UTC))

    # Status: when the CronJob fired, and the crawl's live progress through to completion (the worker runs).
    site = await wait_status(
        kube,
        namespace,
        "minutely",
        lambda cs: (cs["status"].get("lastCrawl") or {}).get("state") == "COMPLETED",
    )
    assert site["status"]["lastCrawl"]["id"] == crawl["id"]
    assert site["status"]["lastCrawl"]["pages"] == 3
    assert site["status"]["lastScheduleTime"]
    table = (await kube.arun("get", "crawlsite", "minutely", "-n", namespace)).stdout
    assert "COMPLETED" in table
    # The success is kept in status and exported, one series per site, by the operator (crawlsite/freshness.py).
    site = await wait_status(kube, namespace, "minutely", lambda cs: bool(cs["status"].get("lastSuccessTime")))
    assert site["status"]["lastSuccessTime"] == site["status"]["lastCrawl"]["finishedAt"]
    success = datetime.fromisoformat(site["status"]["lastSuccessTime"]).timestamp()
    labels = {"namespace": namespace, "site": "minutely"}

    async def exported() -> dict[str, float] | None:
        found = site_series(operator, labels)
        return found if "kubecrawl_site_last_success_timestamp_seconds" in found else None

    series = await eventually(exported, timeout=30, interval=0.5, what="the site's freshness series")
    assert series["kubecrawl_site_last_success_timestamp_seconds"] == success
    assert series["kubecrawl_site_schedule_period_seconds"] == 60
    # Stop it firing every minute for the rest of the session.
    await kube.arun("delete", "crawlsite", "minutely", "-n", namespace, "--wait=false")


@pytest.fixture
async def slow_site() -> AsyncIterator[Site]:
    """Four linked pages: with politeness.delaySeconds 60 and one page at a time a crawl lasts over three minutes."""
    site = Site()
    site.html("/", title="home", body="".join(f"<a href='/{p}'>{p}</a>" for p in "abc"))
    for page in "abc":
        site.html(f"/{page}", title=page)
    await site.start()
    yield site
    await site.stop()


async def test_forbid_skips_the_next_minutes_run_while_a_crawl_runs_and_posts_scheduled_run_skipped(
    kube: Kube,
    namespace: str,
    services: Services,
    slow_site: Site,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """overlapPolicy Forbid on the cluster path: the operator's CronJob fires every minute (kube-controller-manager),
    each Job's trigger command runs against the real API as its pod would, the first starts a crawl that lasts
    minutes, the next minute's starts nothing and answers skipped: crawl_overlap, and the operator posts
    ScheduledRunSkipped on the CrawlSite. Not covered here (no node): the kubelet running the trigger pod itself,
    which tests/e2e/test_pods.py covers for a scheduled crawl."""
    politeness = {"delaySeconds": 60, "maxConcurrency": 1, "respectRobotsTxt": False}
    spec = crawlsite(
        "forbid", url=slow_site.url("/"), schedule="* * * * *", overlapPolicy="Forbid", politeness=politeness
    )
    await kube.aapply(spec, namespace)
    await wait_cronjob(kube, namespace, "forbid", lambda cj: cj["spec"]["concurrencyPolicy"] == "Forbid")

    first_job = await next_job(kube, namespace, "forbid")
    first = await asyncio.to_thread(
        run_trigger, await trigger_env(kube, namespace, first_job, services.api_url, tmp_path)
    )
    assert first.returncode == 0, first.stderr
    assert "crawl_triggered" in first.stderr
    status, body = http_json(f"{services.api_url}/sites/{namespace}/forbid/crawls")
    (running,) = body["items"]
    assert running["state"] in ("QUEUED", "RUNNING")
    # The Job's pod would have ended in seconds; without a node the Job stays active, and the CronJob's own
    # concurrencyPolicy Forbid would hold back the next Job. Deleting it ends it as its completion would.
    await kube.arun("delete", "job", first_job["metadata"]["name"], "-n", namespace, "--wait=false")

    second_job = await next_job(kube, namespace, "forbid", seen=frozenset({first_job["metadata"]["name"]}))
    env = await trigger_env(kube, namespace, second_job, services.api_url, tmp_path)
    second = await asyncio.to_thread(run_trigger, dict(env))
    assert second.returncode == 0, second.stderr  # a skipped run is not a failed Job
    assert "crawl_trigger_skipped" in second.stderr
    assert "crawl_overlap" in second.stderr
    # The API's answer to that run's key, asked again directly: the running crawl, marked skipped; nothing new.
    key = schedule_key(namespace, "forbid", scheduled_for(second_job).astimezone(UTC))
    status, answer = http_json(
        f"{services.api_url}/sites/{namespace}/forbid/crawls",
        method="POST",
        body={"trigger": "schedule", "idempotency_key": key},
    )
    assert (status, answer["id"], answer["skipped"]) == (200, running["id"], "crawl_overlap")
    status, body = http_json(f"{services.api_url}/sites/{namespace}/forbid/crawls")
    assert [crawl["id"] for crawl in body["items"]] == [running["id"]]

    # No more runs; the operator judges the skipped run a minute after it fired (crawlsite/status.py).
    await kube.arun("patch", "crawlsite", "forbid", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')

    async def told() -> dict[str, Any] | None:
        events = await kube.aevents(namespace, "forbid")
        return next((e for e in events if e["reason"] == "ScheduledRunSkipped"), None)

    event: dict[str, Any] = await eventually(
        told, timeout=120, interval=1, what="a ScheduledRunSkipped Event on the CrawlSite"
    )
    assert event["type"] == "Normal"
    assert running["id"] in event["message"]
    assert "overlapPolicy Forbid" in event["message"]
    # Free the session's worker from the slow crawl.
    status, _ = http_json(f"{services.api_url}/crawls/{running['id']}/cancel", method="POST", body={})
    assert status == 200
    await kube.arun("delete", "crawlsite", "forbid", "-n", namespace, "--wait=false")


# -- least privilege --------------------------------------------------------------------------------------------------


def test_operator_identity_holds_only_the_clusterroles_rights(kube: Kube) -> None:
    account = "system:serviceaccount:kubecrawl:kubecrawl-operator"

    def can(verb: str, resource: str) -> bool:
        result = kube.run("auth", "can-i", verb, resource, "--all-namespaces", f"--as={account}", check=False)
        return result.stdout.strip() == "yes"

    allowed = [("watch", "crawlsites.kubecrawl.io"), ("patch", "crawlsites.kubecrawl.io/status")]
    allowed += [("create", "cronjobs.batch"), ("delete", "cronjobs.batch"), ("create", "events")]
    refused = [("delete", "crawlsites.kubecrawl.io"), ("create", "crawlsites.kubecrawl.io")]
    refused += [("get", "secrets"), ("create", "pods"), ("create", "jobs.batch"), ("list", "cronjobs.batch")]
    refused += [("update", "cronjobs.batch"), ("list", "namespaces"), ("list", "customresourcedefinitions")]
    assert [pair for pair in allowed if not can(*pair)] == []
    assert [pair for pair in refused if can(*pair)] == []


def test_operator_serves_its_liveness_endpoint(operator: OperatorProcess) -> None:
    assert http_status(operator.liveness) == 200
