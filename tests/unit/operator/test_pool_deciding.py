"""The CrawlWorkerPool scaling rules (kubecrawl.operator.pool.deciding), one behaviour per test, table-driven.

``simulate`` plays a list of polls through ``decide`` as the scaler does: every decided change is written at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from kubecrawl.operator.pool.deciding import Decision, Observation, ScalerState, decide, initial_state
from kubecrawl.operator.pool.spec import Fallback, PoolSpec, ScaleDown, ScaleUp

WINDOW = 60.0


def pool(**changes: object) -> PoolSpec:
    base = PoolSpec(
        deployment_name="workers",
        queue="kubecrawl.pages",
        target_per_replica=10,
        min_replicas=1,
        max_replicas=20,
        scale_down=ScaleDown(stabilization_seconds=WINDOW),
        cooldown_to_zero_seconds=30.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def seen(ready: int, *, unacked: int | None = 0, busy: dict[str, int] | None = None) -> Observation:
    return Observation(ready=ready, consumers=len(busy or {}), unacked=unacked, busy=busy or {})


@dataclass
class Run:
    replicas: list[int]  # after each poll
    decisions: list[Decision]


def simulate(
    spec: PoolSpec, current: int, polls: list[tuple[float, Observation | None]], *, state: ScalerState | None = None
) -> Run:
    state = state if state is not None else initial_state(current, polls[0][0] - 1000.0)  # an old, expired seed
    run = Run([], [])
    for now, observation in polls:
        decision = decide(spec, state, current=current, observation=observation, now=now, error="broker down")
        state = decision.state
        if decision.replicas != current:
            state = state.after_change(current, decision.replicas, now)
            current = decision.replicas
        run.replicas.append(current)
        run.decisions.append(decision)
    return run


def every(
    seconds: float, *observations: Observation | None, start: float = 0.0
) -> list[tuple[float, Observation | None]]:
    return [(start + i * seconds, o) for i, o in enumerate(observations)]


@pytest.mark.parametrize(
    ("ready", "busy", "expected"),
    [
        (1, 0, 1),
        (10, 0, 1),
        (11, 0, 2),
        (95, 0, 10),
        (200, 0, 20),
        (0, 2, 2),  # busy pods are a floor even with nothing ready
        (20, 2, 4),  # ready messages need pods besides the busy ones
    ],
)
def test_recommendation_is_ceil_ready_over_target_plus_busy_pods(ready: int, busy: int, expected: int) -> None:
    holding = {f"pod-{i}": 1 for i in range(busy)}
    run = simulate(pool(), 1, [(0.0, seen(ready, unacked=busy, busy=holding))])
    assert run.decisions[0].recommendation == expected
    assert run.replicas == [expected]


@pytest.mark.parametrize(
    ("min_replicas", "max_replicas", "ready", "expected", "reason"),
    [
        (2, 20, 0, 2, "TooFewReplicas"),
        (1, 5, 500, 5, "TooManyReplicas"),
        (1, 20, 50, 5, "DesiredWithinRange"),
    ],
)
def test_recommendation_is_clamped_to_min_and_max_replicas(
    min_replicas: int, max_replicas: int, ready: int, expected: int, reason: str
) -> None:
    run = simulate(pool(min_replicas=min_replicas, max_replicas=max_replicas), 2, [(0.0, seen(ready))])
    assert run.replicas == [expected]
    assert run.decisions[0].limited.reason == reason


@pytest.mark.parametrize(
    ("activation", "ready", "expected"),
    [
        (0, 0, 0),
        (0, 1, 1),
        (5, 5, 0),  # not more than the activation: stays at zero
        (5, 6, 1),
        (5, 55, 6),
    ],
)
def test_leaving_zero_needs_more_ready_messages_than_activation(activation: int, ready: int, expected: int) -> None:
    run = simulate(pool(min_replicas=0, activation=activation), 0, [(0.0, seen(ready))])
    assert run.replicas == [expected]


def test_leaving_zero_is_one_step_whatever_the_scale_up_limits() -> None:
    spec = pool(min_replicas=0, scale_up=ScaleUp(max_pods=1, period_seconds=60))
    assert simulate(spec, 0, [(0.0, seen(150))]).replicas == [15]


def test_activation_only_matters_at_zero() -> None:
    spec = pool(min_replicas=0, activation=50)
    assert simulate(spec, 2, [(0.0, seen(45))]).replicas == [5]


@pytest.mark.parametrize(
    ("scale_up", "current", "ready", "expected"),
    [
        (ScaleUp(), 1, 200, [20, 20, 20]),  # no limits: at once
        (ScaleUp(max_pods=2, period_seconds=10), 2, 200, [4, 4, 6]),  # +2 per 10 s
        (ScaleUp(max_percent=100, period_seconds=10), 2, 200, [4, 4, 8]),  # doubling per 10 s
        (ScaleUp(max_pods=4, max_percent=50, period_seconds=10), 2, 200, [6, 6, 10]),  # the larger allowance wins
    ],
)
def test_scale_up_is_at_once_within_the_scale_up_limits(
    scale_up: ScaleUp, current: int, ready: int, expected: list[int]
) -> None:
    run = simulate(pool(scale_up=scale_up), current, every(5.0, seen(ready), seen(ready), seen(ready)))
    assert run.replicas == expected
    assert run.decisions[0].limited.reason == (
        "ScaleUpLimit" if scale_up.max_pods or scale_up.max_percent else "DesiredWithinRange"
    )


def test_scale_up_ignores_the_stabilisation_window() -> None:
    run = simulate(pool(), 5, every(1.0, seen(50), seen(0), seen(80)))
    assert run.replicas == [5, 5, 8]


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    polls = [(0.0, seen(50))] + [(t, seen(0)) for t in (1.0, 30.0, 59.0, 60.0, 61.0)]
    run = simulate(pool(), 1, polls)
    assert run.replicas == [5, 5, 5, 5, 1, 1]
    assert run.decisions[1].limited.reason == "ScaleDownStabilized"


def test_scale_down_goes_to_the_highest_recommendation_in_the_window() -> None:
    polls = [(0.0, seen(80)), (20.0, seen(50)), (40.0, seen(30)), (60.0, seen(0)), (80.0, seen(0)), (100.0, seen(0))]
    run = simulate(pool(), 8, polls)
    # at 60 s the 80-message poll has left the window (it covers (0 s, 60 s]); the 50 is the highest left
    assert run.replicas == [8, 8, 8, 5, 3, 1]


@pytest.mark.parametrize(
    ("max_pods", "expected"),
    [
        (None, [10, 1, 1, 1]),
        (3, [10, 7, 7, 4]),  # 3 fewer per 30 s period
    ],
)
def test_scale_down_removes_at_most_max_pods_per_period(max_pods: int | None, expected: list[int]) -> None:
    spec = pool(scale_down=ScaleDown(stabilization_seconds=0, max_pods=max_pods, period_seconds=30))
    run = simulate(spec, 10, every(15.0, seen(100), seen(0), seen(0), seen(0)))
    assert run.replicas == expected


@pytest.mark.parametrize(
    ("tolerance", "ready", "expected"),
    [
        (0.0, 90, 9),
        (0.1, 90, 10),  # 10 → 9 is within 10 %
        (0.1, 80, 8),
    ],
)
def test_scale_down_within_tolerance_is_skipped(tolerance: float, ready: int, expected: int) -> None:
    spec = pool(scale_down=ScaleDown(stabilization_seconds=0, tolerance=tolerance))
    assert simulate(spec, 10, [(0.0, seen(ready))]).replicas == [expected]


@pytest.mark.parametrize(
    ("max_replicas", "busy", "expected"),
    [
        (20, 3, 3),
        (2, 3, 3),  # even above a lowered maxReplicas: busy pods are never the ones to go
    ],
)
def test_scale_down_never_goes_below_busy_pods(max_replicas: int, busy: int, expected: int) -> None:
    spec = pool(max_replicas=max_replicas, scale_down=ScaleDown(stabilization_seconds=0))
    holding = {f"pod-{i}": 5 for i in range(busy)}
    run = simulate(spec, 6, [(0.0, seen(0, unacked=5 * busy, busy=holding))])
    assert run.replicas == [expected]


def test_busy_pods_holding_back_a_scale_down_are_reported_once_per_change() -> None:
    spec = pool(min_replicas=0, scale_down=ScaleDown(stabilization_seconds=0))
    two = {"pod-a": 4, "pod-b": 1}
    one = {"pod-a": 4}
    run = simulate(
        spec, 4, every(1.0, seen(0, unacked=5, busy=two), seen(0, unacked=5, busy=two), seen(0, unacked=4, busy=one))
    )
    assert run.replicas == [2, 2, 1]
    reasons = [[e.reason for e in d.events] for d in run.decisions]
    assert reasons == [["ScaleDownDeferred"], [], []]  # one busy pod = the 1 replica the queue needs anyway
    assert (
        "2 pods hold unacked messages: keeping 2 replicas, the queue alone needs 1"
        in run.decisions[0].events[0].message
    )


def test_no_deferral_is_reported_when_the_window_holds_replicas_anyway() -> None:
    run = simulate(pool(), 5, [(0.0, seen(50)), (1.0, seen(0, unacked=2, busy={"pod-a": 2}))])
    assert run.replicas == [5, 5]
    assert run.decisions[1].events == ()


@pytest.mark.parametrize(
    ("unacked", "busy", "reason"),
    [
        (None, {}, "UnackedUnknown"),  # no management API: zero can never be proven
        (3, {}, "UnackedMessages"),  # held by a connection that is not one of the Deployment's pods
        (3, {"pod-a": 3}, "UnackedMessages"),
    ],
)
def test_never_to_zero_while_unacked_messages_are_not_known_to_be_zero(
    unacked: int | None, busy: dict[str, int], reason: str
) -> None:
    spec = pool(min_replicas=0, cooldown_to_zero_seconds=0, scale_down=ScaleDown(stabilization_seconds=0))
    run = simulate(spec, 3, every(100.0, *[seen(0, unacked=unacked, busy=busy)] * 3))
    assert run.replicas == [1, 1, 1]
    assert run.decisions[-1].limited.reason == reason


def test_to_zero_only_after_ready_and_unacked_zero_held_for_the_cooldown() -> None:
    spec = pool(min_replicas=0, cooldown_to_zero_seconds=30, scale_down=ScaleDown(stabilization_seconds=0))
    polls = [(0.0, seen(0)), (10.0, seen(0, unacked=1)), (20.0, seen(0)), (49.0, seen(0)), (50.0, seen(0))]
    run = simulate(spec, 2, polls)
    assert run.replicas == [1, 1, 1, 1, 0]  # the unacked message at 10 s restarted the cooldown
    assert run.decisions[3].limited.reason == "CooldownToZero"
    assert run.decisions[4].cause == "to_zero"


def test_to_zero_does_not_add_the_stabilisation_window_to_the_cooldown() -> None:
    spec = pool(min_replicas=0, cooldown_to_zero_seconds=20, scale_down=ScaleDown(stabilization_seconds=300))
    run = simulate(spec, 1, every(10.0, seen(0), seen(0), seen(0)))
    assert run.replicas == [1, 1, 0]


def test_min_replicas_above_zero_never_scales_to_zero() -> None:
    spec = pool(min_replicas=1, cooldown_to_zero_seconds=0, scale_down=ScaleDown(stabilization_seconds=0))
    assert simulate(spec, 3, every(100.0, seen(0), seen(0))).replicas == [1, 1]


def test_failed_read_keeps_replicas_and_warns_once_per_error() -> None:
    run = simulate(pool(), 4, every(1.0, None, None, seen(0)))
    assert run.replicas == [4, 4, 4]
    assert [e.reason for e in run.decisions[0].events] == ["MetricsUnavailable"]
    assert run.decisions[1].events == ()
    assert run.decisions[0].metrics.status == "False"
    assert run.decisions[2].metrics.status == "True"


@pytest.mark.parametrize(
    ("current", "fallback", "expected"),
    [
        (1, Fallback(replicas=5, failure_threshold=3), [1, 1, 5, 5]),
        (8, Fallback(replicas=5, failure_threshold=3), [8, 8, 8, 8]),  # only ever raises replicas
        (1, Fallback(replicas=50, failure_threshold=1), [20, 20, 20, 20]),  # within maxReplicas
        (1, None, [1, 1, 1, 1]),
    ],
)
def test_fallback_replicas_apply_after_the_failure_threshold_only_if_higher(
    current: int, fallback: Fallback | None, expected: list[int]
) -> None:
    run = simulate(pool(fallback=fallback), current, every(1.0, None, None, None, None))
    assert run.replicas == expected
    active = [d.fallback.status for d in run.decisions]
    threshold = fallback.failure_threshold if fallback else 99
    assert active == ["True" if i + 1 >= threshold else "False" for i in range(4)]
    changed = [d for d in run.decisions if d.replicas != d.current]
    assert all(d.cause == "fallback" and d.change_event().reason == "FallbackApplied" for d in changed)


def test_first_reading_after_an_outage_does_not_scale_down() -> None:
    run = simulate(pool(), 6, [(0.0, seen(60)), (10.0, None), (70.0, None), (71.0, seen(0)), (131.0, seen(0))])
    assert run.replicas == [6, 6, 6, 6, 1]  # the polls without a depth count as "keep 6" in the window


def test_fallback_replicas_stay_for_a_window_after_the_depth_is_read_again() -> None:
    spec = pool(fallback=Fallback(replicas=5, failure_threshold=1))
    run = simulate(spec, 1, [(0.0, None), (1.0, seen(0)), (61.0, seen(0))])
    assert run.replicas == [5, 5, 1]


def test_a_fresh_state_holds_current_replicas_for_a_window_and_scales_up_at_once() -> None:
    """What an operator restart does: the window is seeded with the replicas the Deployment has."""
    restart = initial_state(7, 100.0)
    assert simulate(pool(), 7, [(101.0, seen(0)), (159.0, seen(0)), (160.0, seen(0))], state=restart).replicas == [
        7,
        7,
        1,
    ]
    assert simulate(pool(), 7, [(101.0, seen(150))], state=restart).replicas == [15]


def test_max_replicas_is_enforced_at_once_when_it_was_lowered() -> None:
    run = simulate(pool(max_replicas=4), 10, [(0.0, seen(200))], state=initial_state(10, 0.0))
    assert run.replicas == [4]
    assert run.decisions[0].cause == "max_replicas"


@pytest.mark.parametrize(
    ("current", "polls", "expected_seen_at"),
    [
        (1, [(5.0, 50)], [5.0]),  # up: the poll that saw it
        (5, [(0.0, 50), (1.0, 0), (30.0, 0), (61.0, 0)], [None, None, None, 1.0]),  # down: the first low poll
    ],
)
def test_reaction_is_measured_from_the_first_poll_that_saw_the_change(
    current: int, polls: list[tuple[float, int]], expected_seen_at: list[float | None]
) -> None:
    run = simulate(pool(), current, [(t, seen(ready)) for t, ready in polls])
    assert [d.seen_at for d in run.decisions] == expected_seen_at


@pytest.mark.parametrize(
    ("spec", "current", "ready", "cause"),
    [
        (pool(), 1, 50, "queue_depth"),
        (pool(min_replicas=2), 0, 0, "min_replicas"),
        (
            pool(min_replicas=0, cooldown_to_zero_seconds=0, scale_down=ScaleDown(stabilization_seconds=0)),
            1,
            0,
            "to_zero",
        ),
        (pool(), 1, 10, "none"),
    ],
)
def test_each_change_names_its_cause(spec: PoolSpec, current: int, ready: int, cause: str) -> None:
    assert simulate(spec, current, [(0.0, seen(ready))]).decisions[0].cause == cause


@pytest.mark.parametrize(
    ("current", "ready", "event"),
    [
        (1, 50, "ScaledUp"),
        (5, 0, "ScaledDown"),
    ],
)
def test_a_written_change_is_announced_by_direction(current: int, ready: int, event: str) -> None:
    spec = pool(scale_down=ScaleDown(stabilization_seconds=0))
    decision = simulate(spec, current, [(0.0, seen(ready))]).decisions[0]
    assert decision.change_event().reason == event
    assert f"{current} → {decision.replicas} replicas" in decision.change_event().message
