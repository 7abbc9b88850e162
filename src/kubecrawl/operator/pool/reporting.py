"""A CrawlWorkerPool's status and the Events about its own state, from what the scaler saw and decided.

Conditions (Kubernetes convention, ``lastTransitionTime`` moves only when ``status`` does):

    Active            True while the pool scales its Deployment; False when paused, when the Deployment is missing,
                      when the spec is invalid, or when an HPA or KEDA ScaledObject targets the same Deployment
    MetricsAvailable  the last depth read worked
    ScalingLimited    the recommendation was held back (min/max, rate limits, window, busy pods, cooldown)
    FallbackActive    fallback.replicas applies because the depth could not be read failureThreshold times
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubecrawl.operator.conditions import Event, Outcome, condition, timestamp
from kubecrawl.operator.pool.deciding import Decision, Observation
from kubecrawl.operator.pool.spec import PoolSpec

ACTIVE = "Active"
METRICS_AVAILABLE = "MetricsAvailable"
SCALING_LIMITED = "ScalingLimited"
FALLBACK_ACTIVE = "FallbackActive"

# Active=False reasons that deserve a Warning Event when the pool enters them.
_WARNINGS = {"AutoscalerConflict", "DeploymentNotFound", "InvalidSpec"}


def active(
    spec: PoolSpec | None,
    *,
    deployment_found: bool = True,
    autoscalers: list[str] | None = None,
    spec_error: str = "",
) -> Outcome:
    """Whether the scaler may write the Deployment's replicas, and if not, why."""
    if spec is None:
        return Outcome("False", "InvalidSpec", spec_error or "the spec is invalid")
    if not deployment_found:
        return Outcome("False", "DeploymentNotFound", f"Deployment {spec.deployment_name} does not exist")
    if autoscalers:
        return Outcome(
            "False",
            "AutoscalerConflict",
            f"{', '.join(autoscalers)} already scales Deployment {spec.deployment_name}: "
            "refusing to fight it; delete it or this pool",
        )
    if spec.paused:
        return Outcome("False", "Paused", "spec.paused is true: replicas are left alone")
    return Outcome(
        "True",
        "Scaling",
        f"scaling Deployment {spec.deployment_name} on queue {spec.queue} every {spec.poll_seconds:g}s",
    )


def activity_events(before: Outcome | None, after: Outcome) -> list[Event]:
    """An Event when the pool stops (or starts) scaling; nothing while the reason stays the same."""
    if before is not None and before.reason == after.reason:
        return []
    if after.reason in _WARNINGS:
        return [Event("Warning", after.reason, after.message)]
    if after.reason == "Paused":
        return [Event("Normal", "Paused", after.message)]
    if before is not None and not before.ok and after.ok:
        return [Event("Normal", "Resumed", after.message)]
    return []


@dataclass(frozen=True, slots=True)
class LastScale:
    time: datetime
    reason: str


def desired_status(
    previous: dict[str, Any],
    *,
    generation: int | None,
    activity: Outcome,
    current: int | None,
    observation: Observation | None,
    decision: Decision | None,
    last_scale: LastScale | None,
    now: datetime,
) -> dict[str, Any]:
    """The status fields this poll sets; fields it knows nothing about (say ``observed`` after a failed read) are
    left out, so the previous values stay (the MetricsAvailable condition says they are stale)."""
    conditions = previous.get("conditions") or []

    def cond(kind: str, outcome: Outcome) -> dict[str, Any]:
        return condition(kind, outcome, conditions, generation=generation, now=now)

    status: dict[str, Any] = {"observedGeneration": generation}
    ours = [cond(ACTIVE, activity)]
    if current is not None:
        status["currentReplicas"] = current
    if observation is not None:
        status["observed"] = {
            "ready": observation.ready,
            "unacked": observation.unacked,
            "consumers": observation.consumers,
            "busyPods": observation.busy_pods if observation.unacked is not None else None,
        }
    if decision is not None:
        status["desiredReplicas"] = decision.replicas
        ours += [
            cond(METRICS_AVAILABLE, decision.metrics),
            cond(SCALING_LIMITED, decision.limited),
            cond(FALLBACK_ACTIVE, decision.fallback),
        ]
    if last_scale is not None:
        status["lastScaleTime"] = timestamp(last_scale.time)
        status["lastScaleReason"] = last_scale.reason
    kinds = {c["type"] for c in ours}
    status["conditions"] = ours + [c for c in conditions if c.get("type") not in kinds]
    return status
