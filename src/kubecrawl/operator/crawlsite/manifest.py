"""The CronJob a CrawlSite owns, built from its spec: pure, so every field is unit-tested without a cluster.

The manifest is sent with server-side apply (field manager ``kubecrawl-operator``): fields dropped from this
manifest (say ``timeZone``) are removed from the live object, fields other controllers own are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubecrawl.operator.crawlsite import naming
from kubecrawl.operator.group import API_VERSION
from kubecrawl.operator.settings import OperatorSettings

# The Job-name label every Job controller (Kubernetes ≥ 1.27) puts on its Pods, read through the downward API.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
CONTAINER = "trigger"


@dataclass(frozen=True, slots=True)
class SiteRef:
    """What a CronJob needs to know about its CrawlSite."""

    namespace: str
    name: str
    uid: str


def owner_reference(site: SiteRef) -> dict[str, Any]:
    """Controller reference: garbage collection deletes the CronJob (and its Jobs) with the CrawlSite."""
    return {
        "apiVersion": API_VERSION,
        "kind": naming.KIND,
        "name": site.name,
        "uid": site.uid,
        "controller": True,
        # Foreground deletion of the CrawlSite waits for the CronJob. Needs update on crawlsites/finalizers where
        # the OwnerReferencesPermissionEnforcement admission plugin is on (deploy/rbac grants it).
        "blockOwnerDeletion": True,
    }


def trigger_command(site: SiteRef) -> list[str]:
    return ["kubecrawl", "trigger", "--site", f"{site.namespace}/{site.name}"]


def cronjob_manifest(site: SiteRef, spec: dict[str, Any], settings: OperatorSettings, api_url: str) -> dict[str, Any]:
    """The CronJob for a CrawlSite whose spec has a schedule (``spec`` in the CRD's camelCase, defaults applied)."""
    schedule = spec.get("schedule")
    if not schedule:
        raise ValueError("a CrawlSite without a schedule has no CronJob")
    name = naming.cronjob_name(site.name)
    labels = naming.labels(site.name)
    cron_spec: dict[str, Any] = {
        "schedule": schedule,
        "suspend": bool(spec.get("suspend", False)),
        "concurrencyPolicy": spec.get("overlapPolicy") or "Forbid",
        "startingDeadlineSeconds": settings.starting_deadline_seconds,
        "successfulJobsHistoryLimit": settings.successful_jobs_history_limit,
        "failedJobsHistoryLimit": settings.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": labels},
            "spec": {
                "backoffLimit": settings.job_backoff_limit,
                "activeDeadlineSeconds": settings.job_active_deadline_seconds,
                "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_spec(site, name, settings, api_url),
                },
            },
        },
    }
    if spec.get("timeZone"):
        cron_spec["timeZone"] = spec["timeZone"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": site.namespace,
            "labels": labels,
            "annotations": {naming.ANNOTATION_SITE: f"{site.namespace}/{site.name}"},
            "ownerReferences": [owner_reference(site)],
        },
        "spec": cron_spec,
    }


TOKEN_VOLUME = "kubecrawl-api-token"  # noqa: S105 - a volume name
TOKEN_DIR = "/var/run/secrets/kubecrawl.io/api"  # noqa: S105 - where the kubelet writes it
# The shortest lifetime the API server issues (10 minutes): a trigger makes one call within its first minute.
TOKEN_SECONDS = 600


def _pod_spec(site: SiteRef, cronjob: str, settings: OperatorSettings, api_url: str) -> dict[str, Any]:
    env = [
        {"name": "KUBECRAWL_API_URL", "value": api_url},
        {"name": "KUBECRAWL_LOG_FORMAT", "value": "json"},
        {"name": "KUBECRAWL_CRONJOB_NAME", "value": cronjob},
        # The trigger derives its idempotency key from the Job that runs it (downward API).
        {"name": "JOB_NAME", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
        {"name": "JOB_UID", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_UID_LABEL}']"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",  # a failed trigger is retried by the Job (backoffLimit), with a fresh pod
        "automountServiceAccountToken": False,  # the trigger never calls the Kubernetes API
        # Any unprivileged uid works: the trigger only reads the installed package and makes one HTTP call.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": trigger_command(site),
                "env": env,
                # One HTTP call: small and bounded, so a namespace quota never blocks the schedule.
                "resources": {
                    "requests": {"cpu": "10m", "memory": "64Mi"},
                    "limits": {"memory": "128Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if settings.trigger_service_account is not None:
        pod["serviceAccountName"] = settings.trigger_service_account
    if settings.trigger_token_audience:
        # The pod's ServiceAccount token for the kubecrawl API alone (its audience), which the API checks with a
        # TokenReview; the Kubernetes API refuses it. The kubelet refreshes it before it expires.
        pod["volumes"] = [
            {
                "name": TOKEN_VOLUME,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": settings.trigger_token_audience,
                                "expirationSeconds": TOKEN_SECONDS,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        ]
        container = pod["containers"][0]
        container["volumeMounts"] = [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}]
        container["env"].append({"name": "KUBECRAWL_API_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"})
    return pod


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """True when ``obj``'s controller reference points at the object with ``uid``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)
