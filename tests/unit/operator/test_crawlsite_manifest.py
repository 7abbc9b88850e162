from __future__ import annotations

from typing import Any

import pytest

from kubecrawl.operator.crawlsite.manifest import SiteRef, controlled_by, cronjob_manifest
from kubecrawl.operator.settings import OperatorSettings

SITE = SiteRef("team-a", "docs", "uid-123")
SETTINGS = OperatorSettings(image="registry.local/kubecrawl:1.2.3")
API = "http://kubecrawl-api.kubecrawl.svc:8000"


def manifest(**spec: Any) -> dict[str, Any]:
    return cronjob_manifest(SITE, {"url": "https://example.com/", "schedule": "0 3 * * *", **spec}, SETTINGS, API)


def test_cronjob_is_named_namespaced_labelled_and_controlled_by_the_site() -> None:
    cj = manifest()
    meta = cj["metadata"]
    assert (cj["apiVersion"], cj["kind"], meta["name"], meta["namespace"]) == ("batch/v1", "CronJob", "docs", "team-a")
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubecrawl-operator"
    assert meta["labels"]["kubecrawl.io/crawlsite"] == "docs"
    assert meta["annotations"]["kubecrawl.io/crawlsite"] == "team-a/docs"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlSite",
        "name": "docs",
        "uid": "uid-123",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_cronjob_spec_carries_schedule_and_safety_limits() -> None:
    spec = manifest()["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == SETTINGS.starting_deadline_seconds
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 3
    assert "timeZone" not in spec


@pytest.mark.parametrize("policy", ["Forbid", "Replace", "Allow"])
def test_overlap_policy_becomes_concurrency_policy(policy: str) -> None:
    assert manifest(overlapPolicy=policy)["spec"]["concurrencyPolicy"] == policy


def test_time_zone_and_suspend_are_passed_through() -> None:
    spec = manifest(timeZone="Europe/Berlin", suspend=True)["spec"]
    assert (spec["timeZone"], spec["suspend"]) == ("Europe/Berlin", True)


def test_job_template_bounds_retries_runtime_and_lifetime() -> None:
    job = manifest()["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == SETTINGS.job_backoff_limit
    assert job["activeDeadlineSeconds"] == SETTINGS.job_active_deadline_seconds
    assert job["ttlSecondsAfterFinished"] == SETTINGS.job_ttl_seconds_after_finished
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_trigger_container_runs_the_same_image_with_the_trigger_command() -> None:
    pod = manifest()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/kubecrawl:1.2.3"
    assert container["command"] == ["kubecrawl", "trigger", "--site", "team-a/docs"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBECRAWL_API_URL"]["value"] == API
    assert env["KUBECRAWL_CRONJOB_NAME"]["value"] == "docs"
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert "controller-uid" in env["JOB_UID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_a_service_account_for_triggers_is_used_when_configured() -> None:
    settings = OperatorSettings(trigger_service_account="kubecrawl-trigger")
    pod = cronjob_manifest(SITE, {"url": "https://e.com/", "schedule": "@daily"}, settings, API)["spec"]["jobTemplate"]
    pod_spec = pod["spec"]["template"]["spec"]
    assert (pod_spec["serviceAccountName"], pod_spec["automountServiceAccountToken"]) == ("kubecrawl-trigger", False)


def test_trigger_pods_send_a_projected_token_for_the_kubecrawl_audience() -> None:
    cj = cronjob_manifest(SITE, {"url": "https://e.com/", "schedule": "@daily"}, SETTINGS, API)
    pod_spec = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (volume,) = pod_spec["volumes"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "kubecrawl"
    container = pod_spec["containers"][0]
    (mount,) = container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBECRAWL_API_TOKEN_FILE"] == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    no_token = OperatorSettings(trigger_token_audience="")
    without = cronjob_manifest(SITE, {"url": "https://e.com/", "schedule": "@daily"}, no_token, API)
    assert "volumes" not in without["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_long_site_names_get_the_shortened_cronjob_name_everywhere() -> None:
    site = SiteRef("ns", "s" * 80, "uid")
    cj = cronjob_manifest(site, {"url": "https://e.com/", "schedule": "@daily"}, SETTINGS, API)
    name = cj["metadata"]["name"]
    assert len(name) <= 52
    env = {e["name"]: e for e in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBECRAWL_CRONJOB_NAME"]["value"] == name
    assert cj["metadata"]["ownerReferences"][0]["name"] == "s" * 80


def test_a_site_without_schedule_has_no_cronjob() -> None:
    with pytest.raises(ValueError, match="schedule"):
        cronjob_manifest(SITE, {"url": "https://example.com/"}, SETTINGS, API)


def test_controlled_by_checks_the_controller_uid() -> None:
    cj = manifest()
    assert controlled_by(cj, "uid-123")
    assert not controlled_by(cj, "other")
    assert not controlled_by({"metadata": {}}, "uid-123")
    cj["metadata"]["ownerReferences"][0]["controller"] = False
    assert not controlled_by(cj, "uid-123")
