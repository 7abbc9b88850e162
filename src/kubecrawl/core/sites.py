"""The CrawlSite spec as the API and the worker see it: the same fields, names and defaults as the CRD
(``deploy/crds/crawlsite.yaml`` is the source of truth for validation in the cluster; this model mirrors it so
the API refuses the same things when called directly)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

# Bounds on every string and list (the CRD carries the same ones): a spec is a few KiB, never megabytes.
MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 1024
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATTERN_LENGTH)]
HostName = Annotated[str, StringConstraints(min_length=1, max_length=253)]


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is answered with its error; RE2 need not print it on stderr
    options.never_capture = True  # scope checks only ask "does it match"
    return options


_RE2_OPTIONS = _re2_options()


def compile_pattern(pattern: str) -> Any:
    """A scope pattern compiled by RE2: matching takes time linear in the URL, whatever the pattern (Python's
    ``re`` took 4.8 s of a worker's event loop for ``(a+)+$`` on a 25-character link, issue 12). RE2 has no
    backreferences or lookaround; such patterns are refused with ``ValueError``."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regex {pattern!r} (RE2 syntax): {detail}") from exc


class _Spec(BaseModel):
    # strict: a spec is refused unless each value has its field's type (no "1" for 1, no false for 0.0), as the
    # CRD's schema refuses it; the API's OpenAPI document says the same (issue 18).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True)


class ScopeSpec(_Spec):
    max_pages: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int = Field(default=5, ge=0, le=50)
    include: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    exclude: list[Pattern] = Field(default_factory=list, max_length=MAX_PATTERNS)
    same_host: bool = True
    allowed_hosts: list[HostName] = Field(default_factory=list, max_length=100)
    sitemap: bool = False

    @field_validator("include", "exclude")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_pattern(pattern)
        return patterns


class PolitenessSpec(_Spec):
    respect_robots_txt: bool = True
    max_concurrency: int = Field(default=4, ge=1, le=64)
    delay_seconds: float = Field(default=0.0, ge=0, le=60)


class FetchSpec(_Spec):
    timeout_seconds: float = Field(default=15.0, ge=1, le=300)
    user_agent: Annotated[str, StringConstraints(max_length=512)] | None = None
    max_body_bytes: int | None = Field(default=None, ge=1024, le=64 * 1024 * 1024)


class CrawlSiteSpec(_Spec):
    url: Annotated[str, StringConstraints(max_length=2048)]
    schedule: Annotated[str, StringConstraints(max_length=128)] | None = None
    time_zone: Annotated[str, StringConstraints(max_length=64)] | None = None
    suspend: bool = False
    overlap_policy: Literal["Forbid", "Replace", "Allow"] = "Forbid"
    scope: ScopeSpec = Field(default_factory=ScopeSpec)
    politeness: PolitenessSpec = Field(default_factory=PolitenessSpec)
    fetch: FetchSpec = Field(default_factory=FetchSpec)
