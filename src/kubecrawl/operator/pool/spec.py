"""A CrawlWorkerPool's spec as plain data, read from the custom resource's camelCase ``spec``.

The CRD (deploy/crds/crawlworkerpool.yaml) validates and defaults the same fields; :func:`pool_spec` applies the
same defaults and checks again, because an object written with validation off, or under an older CRD version,
must not crash the scaler: it raises :class:`InvalidPoolSpec` and the pool reports it in its conditions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubecrawl.core.errors import PermanentError

# Defaults, mirrored in the CRD (a unit test keeps them in step).
DEFAULT_MIN_REPLICAS = 1  # like an HPA: scale to zero is opted into with minReplicas: 0
DEFAULT_POLL_SECONDS = 2.0
# Kubernetes HPA defaults for the behaviour fields, so users meet familiar numbers.
DEFAULT_SCALE_UP_PERIOD_SECONDS = 15.0
DEFAULT_STABILIZATION_SECONDS = 300.0
DEFAULT_SCALE_DOWN_PERIOD_SECONDS = 60.0
# KEDA's default cooldownPeriod.
DEFAULT_COOLDOWN_TO_ZERO_SECONDS = 300.0
DEFAULT_FAILURE_THRESHOLD = 3


class InvalidPoolSpec(PermanentError):
    code = "invalid_pool_spec"


@dataclass(frozen=True, slots=True)
class ScaleUp:
    """At most ``max_pods`` more pods, or ``max_percent`` % more, per ``period_seconds`` (the larger of the two
    wins, as with an HPA's default ``selectPolicy: Max``); neither set: no limit, scale up at once."""

    max_pods: int | None = None
    max_percent: int | None = None
    period_seconds: float = DEFAULT_SCALE_UP_PERIOD_SECONDS


@dataclass(frozen=True, slots=True)
class ScaleDown:
    """Scale down to the highest recommendation of the last ``stabilization_seconds``, at most ``max_pods`` fewer
    per ``period_seconds``, and not at all while the drop is within ``tolerance`` (a fraction of current)."""

    stabilization_seconds: float = DEFAULT_STABILIZATION_SECONDS
    max_pods: int | None = None
    period_seconds: float = DEFAULT_SCALE_DOWN_PERIOD_SECONDS
    tolerance: float = 0.0


@dataclass(frozen=True, slots=True)
class Fallback:
    """After ``failure_threshold`` failed depth reads in a row, run at least ``replicas``."""

    replicas: int
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD


@dataclass(frozen=True, slots=True)
class PoolSpec:
    deployment_name: str
    queue: str
    target_per_replica: int
    max_replicas: int
    min_replicas: int = DEFAULT_MIN_REPLICAS
    activation: int = 0
    poll_seconds: float = DEFAULT_POLL_SECONDS
    scale_up: ScaleUp = field(default_factory=ScaleUp)
    scale_down: ScaleDown = field(default_factory=ScaleDown)
    cooldown_to_zero_seconds: float = DEFAULT_COOLDOWN_TO_ZERO_SECONDS
    fallback: Fallback | None = None
    paused: bool = False

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


class _Fields:
    """Typed reads of one object of the spec; errors name the field by its path (``spec.scaleDown.maxPods``)."""

    def __init__(self, values: Any, path: str) -> None:
        if not isinstance(values, Mapping):
            raise InvalidPoolSpec(f"{path} must be an object")
        self.values: Mapping[str, Any] = values
        self.path = path

    def section(self, key: str) -> _Fields:
        return _Fields(self.values.get(key) or {}, f"{self.path}.{key}")

    def integer(self, key: str, default: int | None, *, minimum: int) -> int | None:
        value = self.values.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidPoolSpec(f"{self.path}.{key} must be an integer ≥ {minimum}, not {value!r}")
        return value

    def required(self, key: str, *, minimum: int) -> int:
        value = self.integer(key, None, minimum=minimum)
        if value is None:
            raise InvalidPoolSpec(f"{self.path}.{key} is required")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0, below: float = math.inf) -> float:
        value = self.values.get(key, default)
        valid = isinstance(value, int | float) and not isinstance(value, bool) and minimum <= value < below
        if not valid:
            bounds = f"≥ {minimum:g}" + (f" and < {below:g}" if math.isfinite(below) else "")
            raise InvalidPoolSpec(f"{self.path}.{key} must be a number {bounds}, not {value!r}")
        return float(value)

    def name(self, key: str) -> str:
        value = self.values.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidPoolSpec(f"{self.path}.{key} is required")
        return value


def pool_spec(spec: Mapping[str, Any]) -> PoolSpec:
    """The typed spec, with the CRD's defaults; :class:`InvalidPoolSpec` names the first offending field."""
    top = _Fields(spec, "spec")
    up, down, fallback = top.section("scaleUp"), top.section("scaleDown"), top.section("fallback")
    result = PoolSpec(
        deployment_name=top.name("deploymentName"),
        queue=top.name("queue"),
        target_per_replica=top.required("targetPerReplica", minimum=1),
        max_replicas=top.required("maxReplicas", minimum=1),
        min_replicas=top.required("minReplicas", minimum=0) if "minReplicas" in spec else DEFAULT_MIN_REPLICAS,
        activation=top.integer("activation", 0, minimum=0) or 0,
        poll_seconds=top.number("pollSeconds", DEFAULT_POLL_SECONDS, minimum=0.5),
        scale_up=ScaleUp(
            max_pods=up.integer("maxPods", None, minimum=1),
            max_percent=up.integer("maxPercent", None, minimum=1),
            period_seconds=up.number("periodSeconds", DEFAULT_SCALE_UP_PERIOD_SECONDS, minimum=1),
        ),
        scale_down=ScaleDown(
            stabilization_seconds=down.number("stabilizationSeconds", DEFAULT_STABILIZATION_SECONDS),
            max_pods=down.integer("maxPods", None, minimum=1),
            period_seconds=down.number("periodSeconds", DEFAULT_SCALE_DOWN_PERIOD_SECONDS, minimum=1),
            tolerance=down.number("tolerance", 0.0, below=1.0),
        ),
        cooldown_to_zero_seconds=top.number("cooldownToZeroSeconds", DEFAULT_COOLDOWN_TO_ZERO_SECONDS),
        fallback=(
            Fallback(
                replicas=fallback.required("replicas", minimum=1),
                failure_threshold=fallback.required("failureThreshold", minimum=1)
                if "failureThreshold" in fallback.values
                else DEFAULT_FAILURE_THRESHOLD,
            )
            if fallback.values
            else None
        ),
        paused=bool(spec.get("paused", False)),
    )
    if result.min_replicas > result.max_replicas:
        raise InvalidPoolSpec(
            f"spec.minReplicas ({result.min_replicas}) must not exceed spec.maxReplicas ({result.max_replicas})"
        )
    return result
