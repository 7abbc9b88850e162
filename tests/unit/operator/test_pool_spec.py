"""A CrawlWorkerPool's spec → PoolSpec (kubecrawl.operator.pool.spec): defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from kubecrawl.operator.pool.spec import Fallback, InvalidPoolSpec, PoolSpec, ScaleDown, ScaleUp, pool_spec
from kubecrawl.operator.settings import OperatorSettings

MINIMAL = {"deploymentName": "workers", "queue": "kubecrawl.pages", "targetPerReplica": 10, "maxReplicas": 5}


def test_minimal_spec_gets_the_documented_defaults() -> None:
    assert pool_spec(MINIMAL) == PoolSpec(
        deployment_name="workers",
        queue="kubecrawl.pages",
        target_per_replica=10,
        max_replicas=5,
        min_replicas=1,
        activation=0,
        poll_seconds=2.0,
        scale_up=ScaleUp(max_pods=None, max_percent=None, period_seconds=15.0),
        scale_down=ScaleDown(stabilization_seconds=300.0, max_pods=None, period_seconds=60.0, tolerance=0.0),
        cooldown_to_zero_seconds=300.0,
        fallback=None,
        paused=False,
    )


def test_every_field_is_read() -> None:
    spec = pool_spec(
        {
            **MINIMAL,
            "minReplicas": 0,
            "activation": 3,
            "pollSeconds": 1,
            "scaleUp": {"maxPods": 4, "maxPercent": 100, "periodSeconds": 30},
            "scaleDown": {"stabilizationSeconds": 120, "maxPods": 2, "periodSeconds": 45, "tolerance": 0.1},
            "cooldownToZeroSeconds": 600,
            "fallback": {"failureThreshold": 5, "replicas": 3},
            "paused": True,
        }
    )
    assert (spec.min_replicas, spec.activation, spec.poll_seconds, spec.cooldown_to_zero_seconds) == (0, 3, 1.0, 600.0)
    assert spec.scale_up == ScaleUp(max_pods=4, max_percent=100, period_seconds=30.0)
    assert spec.scale_down == ScaleDown(stabilization_seconds=120.0, max_pods=2, period_seconds=45.0, tolerance=0.1)
    assert spec.fallback == Fallback(replicas=3, failure_threshold=5)
    assert spec.paused is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"deploymentName": ""}, "spec.deploymentName"),
        ({"queue": None}, "spec.queue"),
        ({"targetPerReplica": 0}, "spec.targetPerReplica"),
        ({"targetPerReplica": 2.5}, "spec.targetPerReplica"),
        ({"maxReplicas": None}, "spec.maxReplicas"),
        ({"minReplicas": -1}, "spec.minReplicas"),
        ({"minReplicas": 6}, "spec.minReplicas"),  # above maxReplicas
        ({"pollSeconds": 0.1}, "spec.pollSeconds"),
        ({"scaleUp": {"maxPods": 0}}, "spec.scaleUp.maxPods"),
        ({"scaleDown": {"tolerance": 1}}, "spec.scaleDown.tolerance"),
        ({"scaleDown": "fast"}, "spec.scaleDown"),
        ({"fallback": {"failureThreshold": 2}}, "spec.fallback.replicas"),
        ({"activation": True}, "spec.activation"),
    ],
)
def test_invalid_spec_names_the_offending_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPoolSpec) as caught:
        pool_spec({**MINIMAL, **change})
    assert caught.value.detail.startswith(field)
    assert caught.value.code == "invalid_pool_spec"


def test_operator_reads_the_management_url_from_kubecrawl_rabbitmq_management_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECRAWL_RABBITMQ_MANAGEMENT_URL", "http://monitor:s3cret@rabbit:15672")
    settings = OperatorSettings()
    assert settings.rabbitmq_management_url is not None
    assert settings.rabbitmq_management_url.get_secret_value() == "http://monitor:s3cret@rabbit:15672"
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("KUBECRAWL_RABBITMQ_MANAGEMENT_URL", "amqp://rabbit")
    with pytest.raises(ValueError, match="must be http"):
        OperatorSettings()
