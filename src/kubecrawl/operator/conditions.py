"""Status conditions and Events as both custom resources (CrawlSite, CrawlWorkerPool) report them: pure.

Conditions follow the Kubernetes convention (``type``/``status``/``reason``/``message``/``lastTransitionTime``/
``observedGeneration``); ``lastTransitionTime`` moves only when ``status`` changes. Status is written with a JSON
merge patch, so :func:`status_patch` sends only what changed and ``None`` for what must disappear. Which
conditions each resource has, and what they mean, is in ``crawlsite.status`` and ``pool.reporting``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One condition's value as the operator found it."""

    status: ConditionStatus
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event the operator posts about one of its objects."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, second precision: what Kubernetes writes in its own timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, outcome: Outcome, previous: list[dict[str, Any]], *, generation: int | None, now: datetime
) -> dict[str, Any]:
    before = next((c for c in previous if c.get("type") == kind), None)
    moved = before is None or before.get("status") != outcome.status or not before.get("lastTransitionTime")
    result: dict[str, Any] = {
        "type": kind,
        "status": outcome.status,
        "reason": outcome.reason,
        "message": outcome.message,
        "lastTransitionTime": timestamp(now) if moved else before["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def _pruned(value: Any) -> Any:
    """Drop ``None`` entries: a missing key and a null one mean the same in a status."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    return value


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch taking ``current`` status to ``desired`` (``None`` values mean "absent")."""
    return {key: value for key, value in desired.items() if _pruned(current.get(key)) != _pruned(value)}
