"""deploy/crds/crawlworkerpool.yaml against kubecrawl.operator.pool.spec and the issue's contract (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubecrawl.operator.pool.spec import PoolSpec, pool_spec
from tests.support.crds import preserved_unknown_fields

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "crawlworkerpool.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
STATUS = SCHEMA["properties"]["status"]


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """What the API server fills in for an object that gives only the required fields."""
    result: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if "default" in sub:
            result[name] = sub["default"]
        if sub.get("type") == "object" and name in result:
            result[name] = {**_defaults(sub), **result[name]}
    return result


def test_crd_names_scope_and_version() -> None:
    assert CRD["metadata"]["name"] == "crawlworkerpools.kubecrawl.io"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("CrawlWorkerPool", "crawlworkerpools", ["cwp"])
    assert CRD["spec"]["scope"] == "Namespaced"
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1alpha1", True, True)
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns_show_deployment_backlog_unacked_replicas_desired_min_max_age() -> None:
    # "Backlog", not "Ready": ready messages are waiting ones, and READY reads as pods everywhere else in kubectl.
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert columns == {
        "Deployment": ".spec.deploymentName",
        "Backlog": ".status.observed.ready",
        "Unacked": ".status.observed.unacked",
        "Replicas": ".status.currentReplicas",
        "Desired": ".status.desiredReplicas",
        "Min": ".spec.minReplicas",
        "Max": ".spec.maxReplicas",
        "Age": ".metadata.creationTimestamp",
    }


def test_spec_has_every_field_of_the_issue_and_the_required_ones() -> None:
    assert set(SPEC["properties"]) == {
        "deploymentName",
        "queue",
        "targetPerReplica",
        "minReplicas",
        "maxReplicas",
        "activation",
        "pollSeconds",
        "scaleUp",
        "scaleDown",
        "cooldownToZeroSeconds",
        "fallback",
        "paused",
    }
    assert set(SPEC["required"]) == {"deploymentName", "queue", "targetPerReplica", "maxReplicas"}
    assert set(SPEC["properties"]["scaleUp"]["properties"]) == {"maxPods", "maxPercent", "periodSeconds"}
    assert set(SPEC["properties"]["scaleDown"]["properties"]) == {
        "stabilizationSeconds",
        "maxPods",
        "periodSeconds",
        "tolerance",
    }
    assert set(SPEC["properties"]["fallback"]["properties"]) == {"failureThreshold", "replicas"}


def test_crd_defaults_are_the_scalers_defaults() -> None:
    required = {"deploymentName": "w", "queue": "q", "targetPerReplica": 1, "maxReplicas": 3}
    from_crd = pool_spec({**_defaults(SPEC), **required})
    from_code = pool_spec(required)
    assert from_crd == from_code
    assert isinstance(from_crd, PoolSpec)


def test_schema_validates_min_not_above_max_and_fallback_within_max() -> None:
    rules = {r["rule"] for r in SPEC["x-kubernetes-validations"]}
    assert rules == {
        "self.minReplicas <= self.maxReplicas",
        "!has(self.fallback) || self.fallback.replicas <= self.maxReplicas",
    }
    assert SPEC["properties"]["targetPerReplica"]["minimum"] == 1
    assert SPEC["properties"]["minReplicas"]["minimum"] == 0
    assert SPEC["properties"]["scaleDown"]["properties"]["tolerance"]["exclusiveMaximum"] is True


def test_status_has_observed_counts_replicas_last_scale_and_conditions() -> None:
    assert set(STATUS["properties"]["observed"]["properties"]) == {"ready", "unacked", "consumers", "busyPods"}
    assert {"desiredReplicas", "currentReplicas", "lastScaleTime", "lastScaleReason", "conditions"} <= set(
        STATUS["properties"]
    )
    assert STATUS["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_schema_never_preserves_unknown_fields() -> None:
    assert preserved_unknown_fields(SCHEMA) == []
