"""Deletion costs, conflicting autoscalers, conditions/Events and the management API join (pure parts of scaling)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubecrawl.operator.conditions import Outcome
from kubecrawl.operator.pool.conflicts import hpa_index_entry, scaled_objects_of
from kubecrawl.operator.pool.costs import BUSY_COST, IDLE_COST, cost_changes, deletion_costs
from kubecrawl.operator.pool.deciding import Observation, decide, initial_state
from kubecrawl.operator.pool.probing import queue_unacked, unacked_by_connection, vhost_of
from kubecrawl.operator.pool.reporting import LastScale, active, activity_events, desired_status
from kubecrawl.operator.pool.spec import PoolSpec

SPEC = PoolSpec(deployment_name="workers", queue="kubecrawl.pages", target_per_replica=10, max_replicas=5)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_busy_pods_cost_more_than_idle_ones_and_the_busiest_most() -> None:
    costs = deletion_costs(["a", "b", "c"], {"b": 1, "c": 7})
    assert costs == {"a": IDLE_COST, "b": BUSY_COST + 1, "c": BUSY_COST + 7}
    assert costs["a"] < costs["b"] < costs["c"]


def test_only_pods_whose_cost_differs_are_annotated() -> None:
    current = {"a": "0", "b": None, "c": "1001"}
    assert cost_changes(current, {"a": 0, "b": 0, "c": 1001, "gone": 5}) == {"b": "0"}


@pytest.mark.parametrize(
    ("ref", "targets"),
    [
        ({"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"}, True),
        ({"apiVersion": "apps/v1", "kind": "Deployment", "name": "other"}, False),
        ({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "workers"}, False),
        ({"apiVersion": "example.com/v1", "kind": "Deployment", "name": "workers"}, False),
    ],
)
def test_an_hpa_conflicts_only_when_it_targets_the_same_deployment(ref: dict[str, str], targets: bool) -> None:
    entry = hpa_index_entry("ns", "h", {"scaleTargetRef": ref})
    assert entry.get(("ns", "workers")) == ("HorizontalPodAutoscaler/h" if targets else None)


def test_a_scaled_object_without_kind_targets_a_deployment() -> None:
    scaled = {"metadata": {"name": "so"}, "spec": {"scaleTargetRef": {"name": "workers"}}}
    assert scaled_objects_of("workers", [scaled]) == ["ScaledObject/so"]


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({}, "True", "Scaling"),
        ({"deployment_found": False}, "False", "DeploymentNotFound"),
        ({"autoscalers": ["HorizontalPodAutoscaler/h"]}, "False", "AutoscalerConflict"),
    ],
)
def test_active_says_whether_the_pool_may_scale(kwargs: dict[str, object], status: str, reason: str) -> None:
    outcome = active(SPEC, **kwargs)  # type: ignore[arg-type]
    assert (outcome.status, outcome.reason) == (status, reason)


def test_paused_and_invalid_pools_are_not_active() -> None:
    assert active(PoolSpec("w", "q", 1, 2, paused=True)).reason == "Paused"
    assert active(None, spec_error="spec.queue is required").message == "spec.queue is required"


@pytest.mark.parametrize(
    ("before", "after", "events"),
    [
        (None, Outcome("True", "Scaling", "m"), []),
        (
            Outcome("True", "Scaling", "m"),
            Outcome("False", "AutoscalerConflict", "hpa"),
            ["Warning AutoscalerConflict"],
        ),
        (Outcome("False", "AutoscalerConflict", "hpa"), Outcome("False", "AutoscalerConflict", "hpa"), []),
        (Outcome("False", "AutoscalerConflict", "hpa"), Outcome("True", "Scaling", "m"), ["Normal Resumed"]),
        (None, Outcome("False", "DeploymentNotFound", "gone"), ["Warning DeploymentNotFound"]),
        (Outcome("True", "Scaling", "m"), Outcome("False", "Paused", "p"), ["Normal Paused"]),
    ],
)
def test_activity_changes_are_announced_once(before: Outcome | None, after: Outcome, events: list[str]) -> None:
    assert [f"{e.type} {e.reason}" for e in activity_events(before, after)] == events


def test_status_carries_observed_counts_replicas_conditions_and_last_scale() -> None:
    observation = Observation(ready=30, consumers=2, unacked=4, busy={"pod-a": 4})
    decision = decide(SPEC, initial_state(1, 0.0), current=1, observation=observation, now=1.0)
    status = desired_status(
        {},
        generation=3,
        activity=active(SPEC),
        current=4,
        observation=observation,
        decision=decision,
        last_scale=LastScale(NOW, decision.message),
        now=NOW,
    )
    assert status["observed"] == {"ready": 30, "unacked": 4, "consumers": 2, "busyPods": 1}
    assert (status["currentReplicas"], status["desiredReplicas"], status["observedGeneration"]) == (4, 4, 3)
    assert status["lastScaleTime"] == "2026-01-02T03:04:05Z"
    assert status["lastScaleReason"].startswith("1 → 4 replicas")
    kinds = {c["type"]: c["status"] for c in status["conditions"]}
    assert kinds == {"Active": "True", "MetricsAvailable": "True", "ScalingLimited": "False", "FallbackActive": "False"}


def test_a_failed_read_leaves_the_last_observed_counts_in_place() -> None:
    decision = decide(SPEC, initial_state(1, 0.0), current=1, observation=None, now=1.0, error="refused")
    previous = {"observed": {"ready": 7}, "conditions": [{"type": "Custom", "status": "True"}]}
    status = desired_status(
        previous,
        generation=1,
        activity=active(SPEC),
        current=1,
        observation=None,
        decision=decision,
        last_scale=None,
        now=NOW,
    )
    assert "observed" not in status
    assert "lastScaleTime" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert conditions["MetricsAvailable"]["message"] == "refused"
    assert conditions["Custom"] == {"type": "Custom", "status": "True"}  # someone else's condition is kept


def test_unacked_messages_are_summed_per_client_given_connection_name() -> None:
    connections = [
        {"name": "10.0.0.1:1 -> 10.0.0.9:5672", "user_provided_name": "workers-abc"},
        {"name": "10.0.0.2:1 -> 10.0.0.9:5672", "user_provided_name": "workers-def"},
        {"name": "10.0.0.3:1 -> 10.0.0.9:5672"},  # a client that gave no name
    ]
    channels = [
        {"connection_details": {"name": "10.0.0.1:1 -> 10.0.0.9:5672"}, "messages_unacknowledged": 2},
        {"connection_details": {"name": "10.0.0.1:1 -> 10.0.0.9:5672"}, "messages_unacknowledged": 1},
        {"connection_details": {"name": "10.0.0.2:1 -> 10.0.0.9:5672"}, "messages_unacknowledged": 0},
        {"connection_details": {"name": "10.0.0.3:1 -> 10.0.0.9:5672"}, "messages_unacknowledged": 9},
    ]
    assert unacked_by_connection(connections, channels) == {"workers-abc": 3}


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@rabbit:5672/", "/"),
        ("amqp://guest:guest@rabbit:5672", "/"),
        ("amqp://guest:guest@rabbit:5672/%2F", "/"),
        ("amqp://u:p@rabbit/kubecrawl", "kubecrawl"),
    ],
)
def test_the_virtual_host_comes_from_the_amqp_url(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


@pytest.mark.parametrize(
    ("answer", "unacked"),
    [
        ({"messages_unacknowledged": 7}, 7),
        ({}, 0),
        ([], 0),  # a queue declared within the last statistics interval: the columns filter answers []
    ],
)
def test_a_queue_without_statistics_yet_counts_no_unacked_messages(answer: object, unacked: int) -> None:
    assert queue_unacked(answer) == unacked
