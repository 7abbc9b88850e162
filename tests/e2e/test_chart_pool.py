"""The chart's CrawlWorkerPool as the operator keeps it (kubecrawl.operator.pool.provisioning) against the session's
control plane: applied owned by its Deployment, changed in place, deleted when the chart turns it off — and a pool
of the same name that someone else made is never deleted. (The whole path through `helm install`, the chart's
rights and garbage collection on `helm uninstall`: tests/e2e/test_helm_install.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from kubecrawl.operator.pool.provisioning import ChartPools
from kubecrawl.operator.settings import ChartPool
from tests.support.stack import Cluster

pytestmark = pytest.mark.e2e

SPEC = {"deploymentName": "worker", "queue": "kubecrawl.pages", "targetPerReplica": 5, "maxReplicas": 4}


@pytest.fixture
async def pools(cluster: Cluster) -> AsyncIterator[ChartPools]:
    configuration = client.Configuration()
    await config.load_kube_config(str(cluster.admin.kubeconfig), client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    yield ChartPools(api_client)
    await api_client.close()


def pool_in(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    result = cluster.admin.run("get", "crawlworkerpool", "workers", "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


async def test_the_charts_pool_is_applied_owned_by_its_deployment_and_deleted_when_turned_off(
    cluster: Cluster, namespace: str, pools: ChartPools
) -> None:
    cluster.admin.run("create", "deployment", "worker", "--image=kubecrawl:e2e", "-n", namespace)
    pool = ChartPool(name="workers", namespace=namespace, labels={"team": "crawl"}, spec=SPEC)
    assert await pools.keep(pool) == "applied"
    applied = pool_in(cluster, namespace)
    assert applied is not None
    uid = cluster.admin.json("get", "deployment", "worker", "-n", namespace, "-o", "json")["metadata"]["uid"]
    assert [(o["kind"], o["uid"]) for o in applied["metadata"]["ownerReferences"]] == [("Deployment", uid)]
    assert applied["metadata"]["labels"] == {"team": "crawl", "app.kubernetes.io/managed-by": "kubecrawl-operator"}
    # New values (an upgrade): the same object, changed.
    assert await pools.keep(pool.model_copy(update={"spec": {**SPEC, "maxReplicas": 9}})) == "applied"
    changed = pool_in(cluster, namespace)
    assert changed is not None
    assert (changed["metadata"]["uid"], changed["spec"]["maxReplicas"]) == (applied["metadata"]["uid"], 9)
    # worker.pool.enabled=false: the chart sends no spec.
    assert await pools.keep(pool.model_copy(update={"spec": None})) == "deleted"
    assert pool_in(cluster, namespace) is None
    assert await pools.keep(pool.model_copy(update={"spec": None})) == "absent"


async def test_a_pool_of_that_name_made_by_someone_else_is_left_alone(
    cluster: Cluster, namespace: str, pools: ChartPools
) -> None:
    theirs = {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlWorkerPool",
        "metadata": {"name": "workers", "namespace": namespace},
        "spec": SPEC,
    }
    cluster.admin.run("apply", "-f", "-", stdin=json.dumps(theirs))
    assert await pools.keep(ChartPool(name="workers", namespace=namespace, spec=None)) == "absent"
    assert pool_in(cluster, namespace) is not None
