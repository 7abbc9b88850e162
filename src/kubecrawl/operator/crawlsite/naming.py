"""Names, labels and keys derived from a CrawlSite.

CronJob names: the CronJob controller names each Job ``<cronjob>-<minutes since the epoch>`` and Job names end up
in a 63-character label on the Pods, so a CronJob name may have at most 52 characters. A CrawlSite name (up to 253
characters) that fits is used as is; a longer one is shortened deterministically to its first 41 characters (minus
trailing ``-``/``.``), ``-`` and the first 10 hex digits of its SHA-256, so the same site always maps to the same
CronJob and an operator restart cannot create a second one.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from kubecrawl.operator.group import GROUP

KIND = "CrawlSite"
PLURAL = "crawlsites"

# batch/v1 validation: a CronJob name leaves room for "-" and the minute timestamp within 63 characters.
MAX_CRONJOB_NAME = 52
_HASH_CHARS = 10  # 40 bits: a collision between two long names in one namespace is not a practical concern
_PREFIX_CHARS = MAX_CRONJOB_NAME - 1 - _HASH_CHARS

MANAGED_BY = "kubecrawl-operator"
LABEL_SITE = f"{GROUP}/crawlsite"  # the CronJob's name, which is the site's name unless shortened
ANNOTATION_SITE = f"{GROUP}/crawlsite"  # always the full "namespace/name"
FIELD_MANAGER = "kubecrawl-operator"
# Set by the status refresher when the world drifted from the spec (CronJob or API site gone); a kopf update
# handler on this field reconciles. Not under "kubecrawl.io/": kopf ignores its own storage prefix in diffs.
RESYNC_ANNOTATION = "resync.kubecrawl.io/requested"

_SCHEDULED_JOB = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>[0-9]{1,12})$")


def cronjob_name(site_name: str) -> str:
    """The CronJob name for a CrawlSite (see the module docstring)."""
    if len(site_name) <= MAX_CRONJOB_NAME:
        return site_name
    digest = hashlib.sha256(site_name.encode()).hexdigest()[:_HASH_CHARS]
    prefix = site_name[:_PREFIX_CHARS].rstrip("-.")
    return f"{prefix}-{digest}"


def labels(site_name: str) -> dict[str, str]:
    """Labels on the CronJob, its Jobs and their Pods (label values are limited to 63 characters)."""
    return {
        "app.kubernetes.io/name": "kubecrawl",
        "app.kubernetes.io/component": "crawl-trigger",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_SITE: cronjob_name(site_name),
    }


def scheduled_time(job_name: str, cronjob: str) -> datetime | None:
    """The minute a CronJob-created Job was scheduled for, from its name; None for any other Job.

    A Job made by hand (``kubectl create job --from=cronjob/…``) has some other name, so it is a manual trigger.
    """
    match = _SCHEDULED_JOB.fullmatch(job_name)
    if match is None or match["cronjob"] != cronjob:
        return None
    return datetime.fromtimestamp(int(match["minutes"]) * 60, tz=UTC)


def manual_job_key(namespace: str, name: str, job_name: str, job_uid: str | None) -> str:
    """Idempotency key of a hand-made Job's trigger: its pod retries start one crawl; a new Job, a new crawl."""
    return f"site:{namespace}/{name}:job:{job_uid or job_name}"
