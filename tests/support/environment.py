"""Test settings as ``KUBECRAWL_*`` environment variables, for the ``kubecrawl`` subprocesses tests start."""

from __future__ import annotations

import os

from kubecrawl.core.settings import Settings


def env_for(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for subprocesses (`kubecrawl api|worker`)."""
    env = dict(os.environ)
    env.update(
        KUBECRAWL_DATABASE_URL=settings.database_url.get_secret_value(),
        KUBECRAWL_RABBITMQ_URL=settings.rabbitmq_url.get_secret_value(),
        KUBECRAWL_ALLOW_PRIVATE_TARGETS=str(settings.allow_private_targets).lower(),
        KUBECRAWL_LOG_FORMAT="json",
        KUBECRAWL_METADATA_QUEUE_MAX_LENGTH=str(settings.metadata_queue_max_length),
        KUBECRAWL_PREFETCH_COUNT=str(settings.prefetch_count),
        KUBECRAWL_DRAIN_TIMEOUT_SECONDS=str(settings.drain_timeout_seconds),
        KUBECRAWL_PUBLISHER__INITIAL_BACKOFF_SECONDS=str(settings.publisher.initial_backoff_seconds),
        KUBECRAWL_PUBLISHER__MAX_BACKOFF_SECONDS=str(settings.publisher.max_backoff_seconds),
        KUBECRAWL_RETRY__MAX_ATTEMPTS=str(settings.retry.max_attempts),
        KUBECRAWL_RETRY__BASE_DELAY_SECONDS=str(settings.retry.base_delay_seconds),
        KUBECRAWL_RETRY__MAX_DELAY_SECONDS=str(settings.retry.max_delay_seconds),
        KUBECRAWL_SWEEP_INTERVAL_SECONDS=str(settings.sweep_interval_seconds),
    )
    if settings.lease_seconds is not None:
        env["KUBECRAWL_LEASE_SECONDS"] = str(settings.lease_seconds)
    return env
