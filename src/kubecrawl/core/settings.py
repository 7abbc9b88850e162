"""Process settings, read once from the environment (prefix ``KUBECRAWL_``, nested with ``__``).

Built in ``main()`` and passed down; never a module-level singleton. The names of the top-level fields are a
public contract (Helm values and docs use them).
"""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubecrawl.core.backoff import DEFAULT_JITTER, Backoff
from kubecrawl.core.urls import TargetPolicy

# The longest a crawl's host is paused by a 429/503 Retry-After (a page waits for it while holding its lease).
MAX_HOST_PAUSE_SECONDS = 600.0
# A host's robots.txt claim, and a spaced host's turn (worker/turns.py), cover one fetch (the fetch timeout) and
# this margin for the database writes around it; a page waits for at most ROBOTS_CLAIMS_WAITED successive claims
# (claimers that die or hang) before its retry.
ROBOTS_CLAIM_MARGIN_SECONDS = 15.0
ROBOTS_CLAIMS_WAITED = 3
# A claim's margin beyond its fetches and waits: the database writes and the publishes around them.
_LEASE_MARGIN_SECONDS = 60.0


def derived_lease(fetch_timeout_seconds: float) -> timedelta:
    """The default lease (``Settings.lease``) for a fetch timeout: 765 s for the default 15 s."""
    robots = ROBOTS_CLAIMS_WAITED * (fetch_timeout_seconds + ROBOTS_CLAIM_MARGIN_SECONDS)
    return timedelta(seconds=robots + fetch_timeout_seconds + MAX_HOST_PAUSE_SECONDS + _LEASE_MARGIN_SECONDS)


class PublisherSettings(BaseModel):
    """Connection and confirm behaviour of the RabbitMQ publisher (seed 004 §1)."""

    # 1 s doubling to 30 s, 10 attempts: about 3 minutes before a process gives up at start-up, long enough
    # for a broker pod to be rescheduled, short enough for Kubernetes to see a crash loop.
    initial_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    max_connection_attempts: int = Field(default=10, ge=1)
    # Each wait is up to this much shorter (never longer), so processes that lost the broker together do not
    # all reconnect on the same second (core/backoff.py).
    backoff_jitter: float = Field(default=DEFAULT_JITTER, ge=0, lt=1)

    def connect_backoff(self) -> Backoff:
        """The schedule of (re)connect attempts to RabbitMQ."""
        return Backoff(
            initial=self.initial_backoff_seconds,
            multiplier=self.backoff_multiplier,
            maximum=self.max_backoff_seconds,
            attempts=self.max_connection_attempts,
            jitter=self.backoff_jitter,
        )

    # A confirm normally arrives in about a millisecond; 10 s means the broker is in trouble (disk alarm, flow).
    confirm_timeout_seconds: float = Field(default=10.0, gt=0)
    # Shutdown waits this long for in-flight publishes before closing the channel anyway.
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    # Dead letters expire after this long (a per-message TTL): kubecrawl.dead holds at most a day of them, so a
    # flood of failing requests cannot fill the broker's disk. Inspect or replay them within that day.
    dead_letter_ttl_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)


class FetchSettings(BaseModel):
    """How a worker fetches a page."""

    timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Page source beyond this is not stored (and not downloaded): the record is flagged truncated.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # What a CrawlSite's spec.fetch.maxBodyBytes may ask for at most: bodies in flight are prefetch × this (16 ×
    # 8 MiB = 128 MiB per worker at the defaults), inside the chart's 512Mi worker limit.
    max_body_bytes_ceiling: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_redirects: int = Field(default=10, ge=0, le=30)
    user_agent: str = "kubecrawl/0.1 (+https://kubecrawl.io/bot)"
    # Connections kept per process; 100 matches aiohttp's default connector limit.
    max_connections: int = Field(default=100, ge=1)
    # An egress proxy every fetch goes through (http://[user:password@]host:port; HTTPS targets through CONNECT).
    # Only from this setting: HTTP_PROXY/HTTPS_PROXY/NO_PROXY in the environment are never read (trust_env is off),
    # so a variable meant for something else cannot reroute crawls. The SSRF guard still judges each target
    # (fetch/fetching.py, "Through a proxy").
    proxy_url: SecretStr | None = None

    @field_validator("proxy_url")
    @classmethod
    def _http_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("http://"):
            raise ValueError("fetch.proxy_url must be http://[user:password@]host:port")
        return value


# The lease of the default fetch timeout (765 s), for stores built without settings.
DEFAULT_LEASE = derived_lease(FetchSettings().timeout_seconds)


class RetrySettings(BaseModel):
    """Retry policy for transient failures of a message."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    base_delay_seconds: float = Field(default=2.0, gt=0)
    max_delay_seconds: float = Field(default=300.0, gt=0)


# libpq's URL schemes (what CloudNativePG's `<cluster>-app` Secret, managed databases and most operators hand
# out) → SQLAlchemy's asyncpg driver; libpq's `sslmode` is asyncpg's `ssl` (same values: require, verify-full, …).
_LIBPQ_SCHEMES = ("postgresql://", "postgres://")


# SQLite runs on the standard library's sqlite3 whatever driver the URL names (store/sqlite_engine.py); the
# ``sqlite+aiosqlite://`` of earlier releases is still accepted, as the same file.
_SQLITE_DRIVER_SCHEMES = ("sqlite+aiosqlite://", "sqlite+pysqlite://")


def driver_url(url: str) -> str:
    """The URL the store opens for a configured one: libpq's ``postgresql://`` or ``postgres://`` as
    ``postgresql+asyncpg://``, a SQLite URL naming a driver as plain ``sqlite://``; any other URL unchanged."""
    if url.startswith(_SQLITE_DRIVER_SCHEMES):
        return "sqlite://" + url.split("://", 1)[1]
    if not url.startswith(_LIBPQ_SCHEMES):
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [("ssl" if key == "sslmode" else key, value) for key, value in pairs]
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", query=urlencode(query)))


class Settings(BaseSettings):
    """Everything a kubecrawl process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="KUBECRAWL_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "kubecrawl"
    database_url: SecretStr = SecretStr("sqlite:///./kubecrawl.db")
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    allow_private_targets: bool = False
    # Private ranges a fetch may reach with the guard still on, e.g. '["10.20.0.0/16"]' for an intranet.
    allowed_private_networks: list[IPv4Network | IPv6Network] = []
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    metadata_queue_max_length: int = Field(default=1000, ge=1)
    pages_queue_max_length: int = Field(default=100_000, ge=1)
    # The work queues' and retry tiers' type (docs/queues.md, "Queue type"): classic, or quorum (replicated, with a
    # delivery limit and at-least-once dead-lettering). A queue's type is fixed when it is first declared:
    # changing it for an existing broker needs new queues (drain, delete, restart every process).
    queue_type: Literal["classic", "quorum"] = "classic"
    prefetch_count: int = Field(default=16, ge=1, le=1000)
    # Database connection pool per process.
    db_pool_size: int = Field(default=10, ge=1)
    db_connect_attempts: int = Field(default=10, ge=1)
    # A connected process pings its database this often; readiness reads the result (store/connection.py). The
    # chart probes readiness every 10 s, so an outage shows within one probe; a SELECT 1 per 5 s costs nothing.
    db_check_interval_seconds: float = Field(default=5.0, gt=0)
    # A crawl page QUEUED (or a metadata record QUEUED or FAILED_RETRYABLE) this long without news has lost its
    # message and is re-published; longer than the longest retry tier (300 s) plus a deep backlog's wait, so
    # duplicates stay rare (they are harmless).
    lost_page_seconds: float = Field(default=900.0, gt=0)
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    # How long a worker's claim of a crawl page (FETCHING) or a metadata record (begin_attempt) holds; after it
    # the sweep gives the work to another worker with ``lease_expired`` recorded (docs/crawls.md, "Leases").
    # Unset: derived from the fetch settings (``lease()``).
    lease_seconds: float | None = Field(default=None, gt=0)
    # On SIGTERM a worker stops consuming and waits this long for its in-flight messages; the ones still running
    # then (a long politeness wait, a slow site) are given back to the queue unacked, so the process exits on its
    # own before Kubernetes' grace period ends in a SIGKILL. The chart sets it from that grace period.
    drain_timeout_seconds: float = Field(default=60.0, gt=0)

    publisher: PublisherSettings = PublisherSettings()
    fetch: FetchSettings = FetchSettings()
    retry: RetrySettings = RetrySettings()

    # SIGTERM of `kubecrawl api` (docs/api.md, "Shutdown"): readiness answers 503 shutting_down and requests are
    # still served for the delay (endpoints and load balancers take seconds to stop routing to the pod), then the
    # server stops accepting, ends event streams, and waits at most the timeout for requests in flight. The chart's
    # grace period (30 s, Kubernetes' default) covers both with room for closing the publisher and the database.
    api_shutdown_delay_seconds: float = Field(default=5.0, ge=0, le=300)
    api_shutdown_timeout_seconds: float = Field(default=15.0, ge=0, le=3600)

    # API request bodies: a POST /metadata is about 100 bytes, a CrawlSite spec a few KiB; larger bodies are
    # answered 413 before they are read (api/limiting.py).
    max_request_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Open GET /crawls/{id}/events streams per API process (each polls the database twice a second): per crawl
    # (a dashboard or two and a CLI per crawl is the use) and in total.
    sse_max_subscribers_per_crawl: int = Field(default=16, ge=1)
    sse_max_subscribers: int = Field(default=256, ge=1)

    # API authentication (docs/security.md): every route but /health/* (and /metrics, unless metrics_require_auth)
    # needs a bearer token: "api_keys" a key made with `kubecrawl keys create`, "kubernetes" a ServiceAccount token
    # issued for auth_audience (TokenReview, then RBAC through SubjectAccessReview), "api_keys+kubernetes" either.
    # "none" is for the embedded default on loopback and for installations that keep the API unreachable.
    auth: Literal["none", "api_keys", "kubernetes", "api_keys+kubernetes"] = "none"
    auth_audience: str = Field(default="kubecrawl", min_length=1)
    metrics_require_auth: bool = False
    # Verified keys, tokens and RBAC decisions are remembered this long: a revoked key, an expired token or a
    # removed RoleBinding stops working within it.
    auth_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    # Requests per second per caller (API key or ServiceAccount) on average, with bursts of auth_rate_limit_burst;
    # 0: no limit. Off by default: the operator refreshes each CrawlSite's status every 30 s with one identity
    # (1,000 sites ≈ 100 requests/s), so a limit must be sized for the installation.
    auth_rate_limit_per_second: float = Field(default=0.0, ge=0)
    auth_rate_limit_burst: int = Field(default=100, ge=1)
    # Crawl quotas per caller, with authentication on (docs/security.md, "Crawl quotas"); a key may carry its own
    # (`kubecrawl keys create --max-concurrent-crawls/--max-pages`); 0: no limit. Crawls not yet finished that one
    # caller started (a scheduled run counts against its site, not the trigger's ServiceAccount): past it, 429
    # too_many_crawls. Pages of a crawl a caller starts by hand: a larger explicit max_pages is 400
    # max_pages_over_limit, a larger site scope.maxPages is lowered to it (scheduled runs keep the site's).
    auth_max_concurrent_crawls: int = Field(default=10, ge=0)
    auth_max_pages: int = Field(default=10_000, ge=0)
    # What the operator and `kubecrawl trigger` send: the projected ServiceAccount token in this file (re-read
    # for every request, since the kubelet rotates it), else the key (an admin-scope key) outside a cluster.
    api_token_file: Path | None = None
    api_key: SecretStr | None = None

    api_url: str = "http://127.0.0.1:8000"
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")

    def db_backoff(self) -> Backoff:
        """The database's (re)connect schedule: the broker's waits and jitter, ``db_connect_attempts`` tries at
        start-up (reconnects later are not limited)."""
        return Backoff(
            initial=self.publisher.initial_backoff_seconds,
            multiplier=self.publisher.backoff_multiplier,
            maximum=self.publisher.max_backoff_seconds,
            attempts=self.db_connect_attempts,
            jitter=self.publisher.backoff_jitter,
        )

    def lease(self) -> timedelta:
        """How long a claim holds. By default everything a worker may do while holding one page: wait for (or
        take over) up to three claims of its host's robots.txt, fetch the page (bounded by the fetch timeout, every
        redirect included), wait out the longest Retry-After pause of the host, and write and publish. A retry is
        a new claim (through a retry tier), so retries never lengthen one."""
        if self.lease_seconds is not None:
            return timedelta(seconds=self.lease_seconds)
        return derived_lease(self.fetch.timeout_seconds)

    def target_policy(self) -> TargetPolicy:
        return TargetPolicy(self.allow_private_targets, tuple(self.allowed_private_networks))

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: SecretStr) -> SecretStr:
        url = driver_url(value.get_secret_value())
        if not url.startswith(("postgresql+asyncpg://", "sqlite://", "mongodb://", "mongodb+srv://")):
            raise ValueError(
                "database_url must be postgresql://… (postgres://…, postgresql+asyncpg://…), sqlite:///FILE,"
                " mongodb://…/DB or mongodb+srv://…/DB"
            )
        return SecretStr(url)

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("rabbitmq_url must be amqp://… or amqps://…")
        return value
