"""Operator-only settings (prefix ``KUBECRAWL_OPERATOR_``): what the CronJobs it writes look like and how often it
refreshes status. The shared ones (``KUBECRAWL_API_URL``, ``KUBECRAWL_RABBITMQ_URL``, logging) stay in
``kubecrawl.core.settings.Settings``. Built in ``kubecrawl operator``'s main and handed to kopf through ``memo``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubecrawl import __version__


class ChartPool(BaseModel):
    """The Helm chart's CrawlWorkerPool (its ``worker.pool`` values), which the operator keeps in place at start-up
    (``pool/provisioning.py``; docs/deploy.md says why helm cannot create it itself)."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    labels: dict[str, str] = {}
    # The CrawlWorkerPool spec (``deploymentName`` names the worker Deployment, which owns the pool). None: the
    # chart's pool is off, and a pool of that name the operator made earlier is deleted.
    spec: dict[str, Any] | None = None


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBECRAWL_OPERATOR_", extra="ignore", frozen=True)

    # The trigger pods run the operator's own image (one image, several entry points).
    image: str = f"ghcr.io/kubecrawl/kubecrawl:{__version__}"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # The API as seen from trigger pods; the operator's own KUBECRAWL_API_URL when unset (the usual case: both
    # run in the cluster and use the API Service's DNS name).
    trigger_api_url: str | None = None
    # The trigger only calls the kubecrawl API, never the Kubernetes API: no Kubernetes API token is mounted
    # (only the kubecrawl-audience token below). Unset: the namespace's `default` account; name one here
    # (e.g. one an image pull secret is attached to, or the one RBAC lets trigger).
    trigger_service_account: str | None = None
    # Trigger pods send a projected token of their ServiceAccount issued for this audience (the API's
    # KUBECRAWL_AUTH_AUDIENCE); RBAC must let that account `create` crawlsites/trigger (docs/security.md).
    # Empty: no token (an API without Kubernetes authentication).
    trigger_token_audience: str = "kubecrawl"  # noqa: S105 - an audience, not a secret

    # A run that could not start within 5 minutes of its time is skipped. This also bounds what un-suspending
    # or an outage of the controller-manager replays: at most one missed run, never a burst.
    starting_deadline_seconds: int = Field(default=300, ge=10)
    # Finished trigger Jobs kept for `kubectl get jobs`/logs: a few of each, like the Kubernetes defaults.
    successful_jobs_history_limit: int = Field(default=3, ge=0)
    failed_jobs_history_limit: int = Field(default=3, ge=0)
    # The trigger exits non-zero when the API is unreachable; 3 retries with the Job controller's exponential
    # pod back-off (10 s, 20 s, 40 s) ride out an API restart.
    job_backoff_limit: int = Field(default=3, ge=0)
    # A trigger makes one HTTP call (with its own retries, about 15 s); 10 minutes means something is stuck.
    job_active_deadline_seconds: int = Field(default=600, ge=30)
    # Finished Jobs go after a day even if the history limits would keep them (e.g. the CronJob was suspended).
    job_ttl_seconds_after_finished: int = Field(default=86_400, ge=0)

    # How often each CrawlSite's status (lastScheduleTime, lastCrawl) is refreshed from the CronJob and the API:
    # often enough that `kubectl get crawlsites` shows live progress; each refresh is one CronJob read and two API
    # reads (latest crawl, site still there), so 1,000 sites cost about 100 small requests/s at 30 s.
    status_interval_seconds: float = Field(default=30.0, gt=0)
    # Calls to the kubecrawl API: per-request timeout and quick in-call retries (delays between attempts);
    # after those the kopf handler is retried with a growing delay (see crawlsite/handlers.py).
    api_timeout_seconds: float = Field(default=10.0, gt=0)
    api_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0)

    # CrawlWorkerPool scaling (operator/pool). The RabbitMQ management API, http(s)://[user:password@]host:15672,
    # gives unacked messages per worker (busy pods); without it busy pods are unknown and pools never scale to
    # zero. Credentials default to KUBECRAWL_RABBITMQ_URL's (the user needs the `monitoring` tag). Named like the
    # shared broker setting, since it is the same broker: KUBECRAWL_RABBITMQ_MANAGEMENT_URL.
    rabbitmq_management_url: SecretStr | None = Field(
        default=None, validation_alias="KUBECRAWL_RABBITMQ_MANAGEMENT_URL"
    )
    # One depth read (AMQP and management calls together) gives up after this, so a hung broker is reported as
    # unavailable within a few polls instead of stalling the pool.
    pool_broker_timeout_seconds: float = Field(default=5.0, gt=0)
    # How often each pool lists KEDA ScaledObjects on its Deployment (HPAs are watched: pool/conflicts.py).
    pool_conflict_check_seconds: float = Field(default=10.0, gt=0)

    # The dead-letter queue whose depth the operator exports (kubecrawl_dead_letter_messages): broker/topology.py's
    # DEAD_LETTER_QUEUE (the operator imports no broker code), read every this many seconds.
    dead_letter_queue: str = "kubecrawl.dead"
    dead_letter_poll_seconds: float = Field(default=15.0, gt=0)

    # KUBECRAWL_OPERATOR_WORKER_POOL (JSON): set by the chart, absent elsewhere.
    worker_pool: ChartPool | None = None

    @field_validator("rabbitmq_management_url")
    @classmethod
    def _management_http(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("KUBECRAWL_RABBITMQ_MANAGEMENT_URL must be http(s)://[user:password@]host[:port]")
        return value
