"""``kubecrawl_operator_reconcile_errors_total``: the operator's failed reconciliation steps, by kind and reason.

One increment per failed step, counted where the failure is caught and turned into a condition, an Event or a log
line (never also where it is re-raised), so a failure is counted once:

    CrawlSite        the handler's reconciliation (crawlsite/handlers.py): one per Warning Event it posts —
                     NameConflict, CronJobRejected, CronJobError (CronJob create/patch/delete), SpecRejected,
                     SyncFailed (the kubecrawl API); ForgetFailed (the API kept a deleted site);
                     StatusRefreshFailed (the status refresher: CronJob or API read, status patch)
    CrawlWorkerPool  PollFailed (a poll stopped by Kubernetes API trouble), ScaleFailed (the /scale write or the pod
                     annotations before it; a write lost to a concurrent scale is not a failure), EventFailed (an
                     Event the operator could not post). Queue depth reads have their own counter,
                     kubecrawl_pool_metric_errors_total.
    both             InternalError: an unexpected exception (a bug), logged with its traceback.
"""

from __future__ import annotations

from typing import Final, Literal

from kubecrawl.core import metrics

Kind = Literal["CrawlSite", "CrawlWorkerPool"]
CRAWLSITE: Final = "CrawlSite"
POOL: Final = "CrawlWorkerPool"

FORGET_FAILED = "ForgetFailed"
STATUS_REFRESH_FAILED = "StatusRefreshFailed"
POLL_FAILED = "PollFailed"
SCALE_FAILED = "ScaleFailed"
EVENT_FAILED = "EventFailed"
INTERNAL_ERROR = "InternalError"


def count(kind: Kind, reason: str) -> None:
    metrics.OPERATOR_RECONCILE_ERRORS.labels(kind, reason).inc()
