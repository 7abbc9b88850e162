"""The CrawlSite spec as the API and the worker see it: the same fields, names and defaults as the CRD
(``deploy/crds/crawlsite.yaml`` is the source of truth for validation in the cluster; this model mirrors it so
the API refuses the same things when called directly)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ScopeSpec(_Spec):
    max_pages: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int = Field(default=5, ge=0, le=50)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    same_host: bool = True
    allowed_hosts: list[str] = Field(default_factory=list)
    sitemap: bool = False

    @field_validator("include", "exclude")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return patterns


class PolitenessSpec(_Spec):
    respect_robots_txt: bool = True
    max_concurrency: int = Field(default=4, ge=1, le=64)
    delay_seconds: float = Field(default=0.0, ge=0, le=60)


class FetchSpec(_Spec):
    timeout_seconds: float = Field(default=15.0, ge=1, le=300)
    user_agent: str | None = None
    max_body_bytes: int | None = Field(default=None, ge=1024, le=64 * 1024 * 1024)


class CrawlSiteSpec(_Spec):
    url: str
    schedule: str | None = None
    time_zone: str | None = None
    suspend: bool = False
    overlap_policy: Literal["Forbid", "Replace", "Allow"] = "Forbid"
    scope: ScopeSpec = Field(default_factory=ScopeSpec)
    politeness: PolitenessSpec = Field(default_factory=PolitenessSpec)
    fetch: FetchSpec = Field(default_factory=FetchSpec)


def schedule_key(namespace: str, name: str, scheduled: datetime) -> str:
    """Idempotency key of a scheduled crawl: ``site:{ns}/{name}:cron:{scheduled minute, ISO-8601 UTC}``.

    The operator's trigger pods and the embedded scheduler both use it, so two triggers for one scheduled
    minute (a retried Job, two schedulers) start one crawl.
    """
    moment = scheduled.astimezone(UTC).replace(second=0, microsecond=0)
    return f"site:{namespace}/{name}:cron:{moment.isoformat()}"
