"""Process settings, read once from the environment (prefix ``KUBECRAWL_``, nested with ``__``).

Built in ``main()`` and passed down; never a module-level singleton. The names of the top-level fields are a
public contract (Helm values and docs use them).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubecrawl.core.backoff import DEFAULT_JITTER, Backoff
from kubecrawl.core.urls import TargetPolicy


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


class RetrySettings(BaseModel):
    """Retry policy for transient failures of a message."""

    max_attempts: int = Field(default=5, ge=1, le=50)
    base_delay_seconds: float = Field(default=2.0, gt=0)
    max_delay_seconds: float = Field(default=300.0, gt=0)


class Settings(BaseSettings):
    """Everything a kubecrawl process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="KUBECRAWL_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "kubecrawl"
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///./kubecrawl.db")
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    allow_private_targets: bool = False
    # Private ranges a fetch may reach with the guard still on, e.g. '["10.20.0.0/16"]' for an intranet.
    allowed_private_networks: list[IPv4Network | IPv6Network] = []
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    metadata_queue_max_length: int = Field(default=1000, ge=1)
    pages_queue_max_length: int = Field(default=100_000, ge=1)
    prefetch_count: int = Field(default=16, ge=1, le=1000)
    # Database connection pool per process.
    db_pool_size: int = Field(default=10, ge=1)
    db_connect_attempts: int = Field(default=10, ge=1)
    # A crawl page QUEUED this long without news has lost its message and is re-published; longer than the
    # longest retry tier (300 s) plus a deep backlog's wait, so duplicates stay rare (they are harmless).
    lost_page_seconds: float = Field(default=900.0, gt=0)
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    # On SIGTERM a worker stops consuming and waits this long for its in-flight messages; the ones still running
    # then (a long politeness wait, a slow site) are given back to the queue unacked, so the process exits on its
    # own before Kubernetes' grace period ends in a SIGKILL. The chart sets it from that grace period.
    drain_timeout_seconds: float = Field(default=60.0, gt=0)

    publisher: PublisherSettings = PublisherSettings()
    fetch: FetchSettings = FetchSettings()
    retry: RetrySettings = RetrySettings()

    # API request bodies: a POST /metadata is about 100 bytes, a CrawlSite spec a few KiB; larger bodies are
    # answered 413 before they are read (api/limiting.py).
    max_request_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Open GET /crawls/{id}/events streams per API process (each polls the database twice a second): per crawl
    # (a dashboard or two and a CLI per crawl is the use) and in total.
    sse_max_subscribers_per_crawl: int = Field(default=16, ge=1)
    sse_max_subscribers: int = Field(default=256, ge=1)

    # API authentication (docs/security.md): "api_keys" makes every route but /health/* (and /metrics, unless
    # metrics_require_auth) need a key made with `kubecrawl keys create`. "none" is for the embedded default on
    # loopback and for installations that keep the API unreachable to anyone else.
    auth: Literal["none", "api_keys"] = "none"
    metrics_require_auth: bool = False
    # Verified keys are remembered this long: a revoked key stops working within it.
    auth_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    # The key the operator and `kubecrawl trigger` send (an admin-scope key) when the API requires one.
    api_key: SecretStr | None = None

    api_url: str = "http://127.0.0.1:8000"
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")

    def target_policy(self) -> TargetPolicy:
        return TargetPolicy(self.allow_private_targets, tuple(self.allowed_private_networks))

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://", "mongodb://", "mongodb+srv://")):
            raise ValueError(
                "database_url must be postgresql+asyncpg://…, sqlite+aiosqlite:///…, mongodb://…/DB or mongodb+srv://…/DB"
            )
        return value

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("rabbitmq_url must be amqp://… or amqps://…")
        return value
