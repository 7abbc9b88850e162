"""The kopf-free PoolScaler over a fake Deployment and broker: one poll reads, decides, writes ``/scale`` and
reports; what it must not do (write without reading the depth, fight an autoscaler) it does not."""

from __future__ import annotations

from typing import Any

from kubecrawl.operator.conditions import Event
from kubecrawl.operator.pool.deciding import Observation
from kubecrawl.operator.pool.probing import MetricsUnavailable
from kubecrawl.operator.pool.scaler import PoolRef, PoolScaler
from kubecrawl.operator.pool.workloads import Scale
from tests.support.fakes import FakeProbe, FakeWorkloads

SPEC: dict[str, Any] = {
    "deploymentName": "workers",
    "queue": "kubecrawl.pages",
    "targetPerReplica": 10,
    "maxReplicas": 5,
}


class Scaled:
    def __init__(self, workloads: FakeWorkloads, probe: FakeProbe, **kwargs: Any) -> None:
        self.events: list[Event] = []
        self.workloads = workloads
        self.scaler = PoolScaler(
            PoolRef("team", "pool"),
            workloads=workloads,  # type: ignore[arg-type]
            probe=probe,  # type: ignore[arg-type]
            post=self.post,
            status={},
            conflict_check_seconds=60,
            clock=lambda: 100.0,
            **kwargs,
        )

    async def post(self, event: Event) -> None:
        self.events.append(event)

    def status(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for patch in self.workloads.statuses:
            merged.update(patch)
        return merged


async def test_a_backlog_scales_the_deployment_up_at_once_and_reports_it() -> None:
    run = Scaled(FakeWorkloads(Scale(1, "app=worker", "1")), FakeProbe(Observation(ready=35, consumers=1)))
    await run.scaler.poll(SPEC, 1)
    assert run.workloads.writes == [4]  # ceil(35 / 10)
    assert "ScaledUp" in [event.reason for event in run.events]
    assert (run.status()["desiredReplicas"], run.status()["currentReplicas"]) == (4, 4)


async def test_an_unreadable_depth_keeps_the_replicas_and_says_why() -> None:
    probe = FakeProbe(error=MetricsUnavailable("connection refused"))
    run = Scaled(FakeWorkloads(Scale(3, "app=worker", "1")), probe)
    await run.scaler.poll(SPEC, 1)
    assert run.workloads.writes == []
    conditions = {c["type"]: c for c in run.status()["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"


async def test_a_write_that_conflicts_with_the_deployment_controller_is_read_again_and_retried() -> None:
    workloads = FakeWorkloads(Scale(1, "app=worker", "1"))
    workloads.conflicts = 1
    run = Scaled(workloads, FakeProbe(Observation(ready=50, consumers=1)))
    await run.scaler.poll(SPEC, 1)
    assert workloads.writes == [5]


async def test_a_missing_deployment_is_reported_and_nothing_is_written() -> None:
    run = Scaled(FakeWorkloads(None), FakeProbe(Observation(ready=50, consumers=1)))
    await run.scaler.poll(SPEC, 1)
    assert run.workloads.writes == []
    active = {c["type"]: c for c in run.status()["conditions"]}["Active"]
    assert active["status"] == "False"


async def test_a_pool_never_scales_a_deployment_an_hpa_also_scales() -> None:
    run = Scaled(
        FakeWorkloads(Scale(1, "app=worker", "1")),
        FakeProbe(Observation(ready=50, consumers=1)),
        known_hpas=lambda _namespace, _deployment: ["HorizontalPodAutoscaler/cpu"],
    )
    await run.scaler.poll(SPEC, 1)
    assert run.workloads.writes == []
    active = {c["type"]: c for c in run.status()["conditions"]}["Active"]
    assert (active["status"], active["reason"]) == ("False", "AutoscalerConflict")
