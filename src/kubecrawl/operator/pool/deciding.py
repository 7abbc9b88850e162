"""One poll of one CrawlWorkerPool → a :class:`Decision`: how many replicas its Deployment should have now.

The rules (docs/autoscaling.md tells users the same):

1. Recommendation: ``clamp(max(ceil(ready / targetPerReplica) + busy, busy), minReplicas, maxReplicas)``, where
   ``busy`` counts the Deployment's pods whose AMQP connection holds unacked messages: they are working, so the
   ready messages need pods besides them.
2. Leaving zero: at zero replicas the pool stays there until ``ready > activation``, then goes to the
   recommendation in one step (scale-up limits do not slow down leaving zero).
3. Going to zero: only with ``minReplicas: 0`` and once ``ready = 0`` and ``unacked = 0`` have held for
   ``cooldownToZeroSeconds``; until then at least one replica is recommended. Unknown unacked (no management
   API) never counts as zero. The cooldown is the window of this step: the stabilisation window is not added.
4. Up: at once, within the ``scaleUp`` limits.
5. Down: only to the highest recommendation of the last ``stabilizationSeconds`` (the window; seeded with the
   current replicas when the scaler starts, so an operator restart never causes a jump), not while the drop is
   within ``tolerance``, within the ``scaleDown`` limits, and never below ``busy``. ``maxReplicas`` is enforced
   at once.
6. A failed depth read keeps the current replicas (and counts as a recommendation of them, so the first reading
   after an outage cannot cause a scale-down); after ``failureThreshold`` failures in a row ``fallback.replicas``
   is applied if it is higher than the current replicas.

Times are monotonic seconds (``now``), supplied by the caller: nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from kubecrawl.operator.conditions import Event, Outcome
from kubecrawl.operator.pool.spec import PoolSpec

Direction = Literal["up", "down"]
# Why a change was made: a bounded set, used as a metric label.
Cause = Literal["queue_depth", "min_replicas", "max_replicas", "to_zero", "fallback", "none"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll saw of the pool's queue and workers."""

    ready: int
    consumers: int
    # Unacked messages of the queue; None when the RabbitMQ management API is not configured (unknown).
    unacked: int | None = None
    # Pods of the Deployment whose connection holds unacked messages → how many.
    busy: dict[str, int] = field(default_factory=dict)

    @property
    def busy_pods(self) -> int:
        return len(self.busy)


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int  # rule 1, busy pods included
    load: int  # what the ready messages alone would recommend (tells busy pods' deferrals apart)


@dataclass(frozen=True, slots=True)
class Change:
    """A replica change the scaler wrote, for the scale-up/scale-down rate limits."""

    at: float
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class ScalerState:
    """Everything the rules remember between polls (in memory: the window restarts with the operator)."""

    recommendations: tuple[Recommendation, ...] = ()
    changes: tuple[Change, ...] = ()
    # Since when ready = 0 and unacked = 0 (and no busy pod) have held; None while they do not.
    idle_since: float | None = None
    failures: int = 0
    # The direction the recommendation points away from the current replicas, and since when (reaction time).
    pending: tuple[Direction, float] | None = None
    # What was last reported as an Event, so a condition that persists is not reposted every poll.
    reported_error: str | None = None
    reported_deferral: tuple[int, int] | None = None

    def after_change(self, before: int, after: int, at: float) -> ScalerState:
        """The state once ``before → after`` has been written."""
        return replace(self, changes=(*self.changes, Change(at, before, after)), pending=None)


def initial_state(current: int, now: float) -> ScalerState:
    """A scaler's first state: the current replicas count as a recommendation, so nothing is scaled down before a
    whole window has been observed (as a Kubernetes HPA does after a controller restart)."""
    return ScalerState(recommendations=(Recommendation(now, current, current),))


@dataclass(frozen=True, slots=True)
class Decision:
    current: int
    replicas: int  # what the Deployment should have now; == current means "leave it"
    recommendation: int  # rule 1 (clamped), before the window and the limits
    cause: Cause
    message: str  # one line for Events and status.lastScaleReason
    metrics: Outcome  # MetricsAvailable
    limited: Outcome  # ScalingLimited
    fallback: Outcome  # FallbackActive
    events: tuple[Event, ...]  # to post now, whatever is written (deferrals, metric failures)
    state: ScalerState
    # When the change this decision makes was first seen (for kubecrawl_pool_reaction_seconds); None: no change.
    seen_at: float | None = None

    @property
    def direction(self) -> Direction | None:
        if self.replicas > self.current:
            return "up"
        if self.replicas < self.current:
            return "down"
        return None

    def change_event(self) -> Event:
        """The Event to post once the change has been written."""
        if self.cause == "fallback":
            return Event("Warning", "FallbackApplied", self.message)
        reason = "ScaledUp" if self.replicas > self.current else "ScaledDown"
        return Event("Normal", reason, self.message)


def decide(
    spec: PoolSpec,
    state: ScalerState,
    *,
    current: int,
    observation: Observation | None,
    now: float,
    error: str = "",
) -> Decision:
    """The decision for one poll; ``observation`` is None when the depth could not be read (``error`` says why)."""
    window = spec.scale_down.stabilization_seconds
    horizon = max(spec.scale_up.period_seconds, spec.scale_down.period_seconds)
    state = replace(
        state,
        recommendations=tuple(r for r in state.recommendations if r.at > now - window),
        changes=tuple(c for c in state.changes if c.at > now - horizon),
    )
    if observation is None:
        return _without_depth(spec, state, current=current, now=now, error=error or "the queue depth could not be read")
    return _from_depth(spec, state, current=current, seen=observation, now=now)


@dataclass(frozen=True, slots=True)
class _Limit:
    reason: str
    message: str


def _without_depth(spec: PoolSpec, state: ScalerState, *, current: int, now: float, error: str) -> Decision:
    failures = state.failures + 1
    target = current
    fallback = spec.fallback
    if fallback is None:
        fallback_outcome = Outcome(
            "False", "NoFallback", "spec.fallback is not set: replicas stay while the depth cannot be read"
        )
    elif failures < fallback.failure_threshold:
        fallback_outcome = Outcome(
            "False", "BelowThreshold", f"{failures} of {fallback.failure_threshold} failed depth reads in a row"
        )
    else:
        floor = min(fallback.replicas, spec.max_replicas)
        target = max(current, floor)
        fallback_outcome = Outcome(
            "True",
            "FallbackActive",
            f"{failures} failed depth reads in a row (threshold {fallback.failure_threshold}): "
            f"running at least {floor} replicas",
        )
    events: list[Event] = []
    if error != state.reported_error:
        events.append(
            Event(
                "Warning",
                "MetricsUnavailable",
                f"cannot read the depth of queue {spec.queue}: {error}; keeping {current} replicas",
            )
        )
    message = (
        f"fallback after {failures} failed depth reads: {current} → {target} replicas"
        if target != current
        else f"queue depth unknown ({error}): keeping {current} replicas"
    )
    return Decision(
        current=current,
        replicas=target,
        recommendation=target,
        cause="fallback" if target != current else "none",
        message=message,
        metrics=Outcome("False", "MetricsUnavailable", error),
        limited=Outcome("Unknown", "MetricsUnavailable", "no recommendation without the queue depth"),
        fallback=fallback_outcome,
        events=tuple(events),
        state=replace(
            state,
            recommendations=(*state.recommendations, Recommendation(now, target, target)),
            idle_since=None,
            failures=failures,
            pending=None,
            reported_error=error,
        ),
        seen_at=now if target != current else None,
    )


@dataclass(frozen=True, slots=True)
class _Recommended:
    replicas: int  # rule 1 with rules 2 and 3, clamped
    load: int  # the same without busy pods
    raw: int  # before clamping (tells min/max causes apart)
    holds: list[_Limit]  # why it is not the plain formula
    idle_since: float | None


def _recommend(spec: PoolSpec, state: ScalerState, *, current: int, seen: Observation, now: float) -> _Recommended:
    busy = seen.busy_pods
    idle = seen.ready == 0 and seen.unacked == 0 and busy == 0
    idle_since = (now if state.idle_since is None else state.idle_since) if idle else None
    load = math.ceil(seen.ready / spec.target_per_replica)
    holds: list[_Limit] = []
    if current == 0 and seen.ready <= spec.activation:
        raw, raw_load = 0, 0  # rule 2: not activated, stay at zero
    else:
        raw, raw_load = max(load + busy, busy), load
        if current > 0 and raw_load == 0 and spec.min_replicas == 0:
            may_be_zero = idle_since is not None and now - idle_since >= spec.cooldown_to_zero_seconds
            if not may_be_zero:  # rule 3
                raw, raw_load = max(raw, 1), 1
                holds.append(_zero_hold(spec, seen, idle_since, now))
    if raw > spec.max_replicas:
        asks = f"the queue asks for {raw} replicas, maxReplicas is {spec.max_replicas}"
        holds.insert(0, _Limit("TooManyReplicas", asks))
    elif raw < spec.min_replicas:
        asks = f"the queue asks for {raw} replicas, minReplicas is {spec.min_replicas}"
        holds.insert(0, _Limit("TooFewReplicas", asks))
    return _Recommended(spec.clamp(raw), spec.clamp(raw_load), raw, holds, idle_since)


def _target(
    spec: PoolSpec,
    state: ScalerState,
    *,
    current: int,
    busy: int,
    recommended: _Recommended,
    recent: tuple[Recommendation, ...],
    now: float,
) -> tuple[int, _Limit | None, tuple[int, int] | None]:
    """Rules 4 and 5: the replicas to write now, what limited them, and (busy pods, replicas wanted without them)
    when busy pods hold back a scale-down."""
    recommendation = recommended.replicas
    if recommendation > current:
        target, limit = _up(spec, state.changes, current=current, wanted=recommendation, now=now)
        return target, limit, None
    target, limit = current, None
    if recommendation < current:
        # Going to zero has its own, stricter window: ready = 0 and unacked = 0 throughout the cooldown.
        stabilised = 0 if recommendation == 0 else min(max(r.replicas for r in recent), spec.max_replicas)
        target, limit = _down(spec, state.changes, current=current, stabilised=stabilised, now=now)
        if target < min(busy, current):  # only when maxReplicas < busy: busy pods still win
            target = min(busy, current)
            limit = _Limit("BusyPods", f"{busy} pods hold unacked messages: not below {target} replicas")
    if busy:
        load_window = min(max(r.load for r in recent), spec.max_replicas)
        wanted = _down(spec, state.changes, current=current, stabilised=load_window, now=now)[0]
        if wanted < target:
            return target, limit, (busy, wanted)
    return target, limit, None


def _from_depth(spec: PoolSpec, state: ScalerState, *, current: int, seen: Observation, now: float) -> Decision:
    recommended = _recommend(spec, state, current=current, seen=seen, now=now)
    recommendation = recommended.replicas
    recent = (*state.recommendations, Recommendation(now, recommendation, recommended.load))
    target, limit, deferral = _target(
        spec, state, current=current, busy=seen.busy_pods, recommended=recommended, recent=recent, now=now
    )
    events: list[Event] = []
    if deferral is not None and deferral != state.reported_deferral:
        busy, wanted = deferral
        message = f"{busy} pods hold unacked messages: keeping {target} replicas, the queue alone needs {wanted}"
        events.append(Event("Normal", "ScaleDownDeferred", message))
    direction: Direction | None = "up" if recommendation > current else "down" if recommendation < current else None
    pending = state.pending if state.pending is not None and state.pending[0] == direction else None
    if pending is None and direction is not None:
        pending = (direction, now)
    limits = ([limit] if limit else []) + recommended.holds
    return Decision(
        current=current,
        replicas=target,
        recommendation=recommendation,
        cause=_cause(spec, current, target, recommended.raw),
        message=_explain(spec, seen, current, target),
        metrics=Outcome("True", "QueueRead", _observed(spec, seen)),
        limited=(
            Outcome("True", limits[0].reason, "; ".join(x.message for x in limits))
            if limits
            else Outcome("False", "DesiredWithinRange", f"the recommendation ({recommendation}) is applied as is")
        ),
        fallback=Outcome("False", "MetricsAvailable" if spec.fallback else "NoFallback", "the queue depth is read"),
        events=tuple(events),
        state=replace(
            state,
            recommendations=recent,
            idle_since=recommended.idle_since,
            failures=0,
            pending=pending,
            reported_error=None,
            reported_deferral=deferral,
        ),
        seen_at=pending[1] if pending is not None and target != current else None,
    )


def _zero_hold(spec: PoolSpec, seen: Observation, idle_since: float | None, now: float) -> _Limit:
    if seen.unacked is None:
        return _Limit(
            "UnackedUnknown",
            "unacked messages are unknown without the RabbitMQ management API: not scaling to zero",
        )
    if idle_since is None:
        return _Limit("UnackedMessages", f"{seen.unacked} messages are unacked: not scaling to zero")
    held = now - idle_since
    return _Limit(
        "CooldownToZero",
        f"the queue has been empty for {held:.0f}s of cooldownToZeroSeconds={spec.cooldown_to_zero_seconds:g}",
    )


def _up(
    spec: PoolSpec, changes: tuple[Change, ...], *, current: int, wanted: int, now: float
) -> tuple[int, _Limit | None]:
    up = spec.scale_up
    if current == 0 or (up.max_pods is None and up.max_percent is None):
        return wanted, None  # rule 2: leaving zero is one step; no limits configured
    added = sum(c.after - c.before for c in changes if c.at > now - up.period_seconds and c.after > c.before)
    base = max(current - added, 0)  # replicas at the start of the period
    caps = []
    if up.max_pods is not None:
        caps.append(base + up.max_pods)
    if up.max_percent is not None:
        caps.append(math.ceil(base * (100 + up.max_percent) / 100))
    cap = max(*caps, current)
    if wanted <= cap:
        return wanted, None
    return cap, _Limit(
        "ScaleUpLimit", f"scaleUp allows {cap} replicas within {up.period_seconds:g}s (recommendation {wanted})"
    )


def _down(
    spec: PoolSpec, changes: tuple[Change, ...], *, current: int, stabilised: int, now: float
) -> tuple[int, _Limit | None]:
    down = spec.scale_down
    if stabilised >= current:
        return current, _Limit(
            "ScaleDownStabilized",
            f"the highest recommendation of the last {down.stabilization_seconds:g}s is {stabilised}",
        )
    if current - stabilised <= down.tolerance * current:
        return current, _Limit(
            "WithinTolerance", f"{current} → {stabilised} is within scaleDown.tolerance={down.tolerance:g}"
        )
    if down.max_pods is None:
        return stabilised, None
    removed = sum(c.before - c.after for c in changes if c.at > now - down.period_seconds and c.before > c.after)
    floor = current + removed - down.max_pods
    if stabilised >= floor:
        return stabilised, None
    target = min(current, floor)
    return target, _Limit(
        "ScaleDownLimit",
        f"scaleDown allows {down.max_pods} fewer pods per {down.period_seconds:g}s (recommendation {stabilised})",
    )


def _cause(spec: PoolSpec, current: int, target: int, raw: int) -> Cause:
    if target == current:
        return "none"
    if target == 0:
        return "to_zero"
    if target > current and raw < spec.min_replicas:
        return "min_replicas"
    if target < current and target == spec.max_replicas and raw > spec.max_replicas:
        return "max_replicas"
    return "queue_depth"


def _observed(spec: PoolSpec, seen: Observation) -> str:
    unacked = "unknown" if seen.unacked is None else str(seen.unacked)
    return (
        f"queue {spec.queue}: {seen.ready} ready, {unacked} unacked, {seen.consumers} consumers, "
        f"{seen.busy_pods} busy pods"
    )


def _explain(spec: PoolSpec, seen: Observation, current: int, target: int) -> str:
    what = f"{current} → {target} replicas" if target != current else f"keeping {current} replicas"
    return f"{what}: {_observed(spec, seen)}, {spec.target_per_replica} per replica"
