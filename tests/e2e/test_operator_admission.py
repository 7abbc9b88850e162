"""The chart's ValidatingAdmissionPolicy for the operator, on the real control plane: acting as the operator's
ServiceAccount (impersonated; the chart's own RBAC applied), it may set a Pod's deletion cost and write the
CronJobs operator/crawlsite/manifest.py builds, and nothing else to Pods and CronJobs its RBAC would allow.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from kubecrawl.operator.crawlsite.manifest import SiteRef, cronjob_manifest
from kubecrawl.operator.settings import OperatorSettings
from tests.support.helm import Helm
from tests.support.polling import eventually
from tests.support.stack import ROOT, Cluster, KubectlFailed

pytestmark = pytest.mark.e2e

CHART = ROOT / "deploy" / "helm" / "kubecrawl"
KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass
class Installed:
    cluster: Cluster
    namespace: str
    operator: str  # the ServiceAccount's user name
    image: str  # the image the chart gives trigger pods

    def as_operator(self, *args: str, stdin: str | None = None) -> str:
        """Run kubectl as the operator; the error text when refused, "" when allowed."""
        try:
            self.cluster.admin.run(*args, f"--as={self.operator}", stdin=stdin)
        except KubectlFailed as exc:
            return str(exc)
        return ""


@pytest.fixture(scope="module")
def installed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    suffix = uuid.uuid4().hex[:6]
    release, namespace = f"vap-{suffix}", f"vap-{suffix}"
    cluster.admin.run("create", "namespace", namespace)
    helm = Helm.private(tmp_path_factory.mktemp("helm"))
    rendered = helm.run("template", release, str(CHART), "--namespace", namespace).stdout
    objects = [obj for obj in yaml.safe_load_all(rendered) if obj and obj["kind"] in KINDS]
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= {obj["kind"] for obj in objects}
    for obj in objects:
        if obj["kind"] in {"ServiceAccount", "Role", "RoleBinding"}:
            obj["metadata"].setdefault("namespace", namespace)
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.admin.run("apply", "-f", "-", stdin=listed)
    operator = f"system:serviceaccount:{namespace}:{release}-kubecrawl-operator"
    # `kubectl patch` reads the Pod first, which the operator never does (it lists): a grant for the test's kubectl.
    cluster.admin.run("create", "role", "kubectl-get", "--verb=get", "--resource=pods", "-n", namespace)
    cluster.admin.run(
        "create", "rolebinding", "kubectl-get", "--role=kubectl-get", f"--user={operator}", "-n", namespace
    )
    operator_env = next(
        obj
        for obj in yaml.safe_load_all(rendered)
        if obj and obj["metadata"]["name"] == f"{release}-kubecrawl-operator" and obj["kind"] == "Deployment"
    )["spec"]["template"]["spec"]["containers"][0]["env"]
    image = next(e["value"] for e in operator_env if e["name"] == "KUBECRAWL_OPERATOR_IMAGE")
    yield Installed(cluster, namespace, operator, image)
    cluster.admin.run("delete", "-f", "-", stdin=listed, check=False)
    cluster.admin.run("delete", "namespace", namespace, "--wait=false", check=False)


async def a_pod(installed: Installed) -> str:
    """A worker-like Pod (it stays Pending: no node), made by the admin."""
    name = "worker-" + uuid.uuid4().hex[:6]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "worker"}, "annotations": {"team": "crawl"}},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "w", "image": "example/worker"}]},
    }

    def created() -> bool:  # the namespace's default ServiceAccount appears shortly after the namespace
        result = installed.cluster.admin.run(
            "apply", "-n", installed.namespace, "-f", "-", stdin=json.dumps(pod), check=False
        )
        return result.returncode == 0

    await eventually(created, timeout=30, interval=0.5, what="a Pod in the new namespace")
    return name


def patch(installed: Installed, pod: str, change: dict[str, Any]) -> str:
    return installed.as_operator(
        "patch", "pod", pod, "-n", installed.namespace, "--type=merge", "-p", json.dumps(change)
    )


async def test_the_operator_may_set_a_pods_deletion_cost_and_nothing_else(installed: Installed) -> None:
    pod = await a_pod(installed)

    def relabel() -> dict[str, Any]:  # a new value each time: a patch that changes nothing is always allowed
        return {"metadata": {"labels": {"app": uuid.uuid4().hex}}}

    # The policy is live once the admission plugin has loaded it: the first refusal.
    await eventually(
        lambda: "pod-deletion-cost" in patch(installed, pod, relabel()), timeout=30, interval=0.5, what="VAP"
    )
    assert patch(installed, pod, {"metadata": {"annotations": {COST: "-5"}}}) == ""
    assert patch(installed, pod, {"metadata": {"annotations": {COST: "3"}}}) == ""
    assert "pod-deletion-cost" in patch(installed, pod, {"metadata": {"annotations": {"team": "other"}}})
    assert "pod-deletion-cost" in patch(installed, pod, {"metadata": {"annotations": {"new": "x"}}})
    assert "pod-deletion-cost" in patch(installed, pod, {"spec": {"activeDeadlineSeconds": 5}})
    # The admin is not the operator: the policy does not apply.
    installed.cluster.admin.run("label", "pod", pod, "-n", installed.namespace, "app=relabelled", "--overwrite")


async def test_the_operator_may_write_only_its_own_trigger_cronjobs(installed: Installed) -> None:
    site = SiteRef(installed.namespace, "docs", str(uuid.uuid4()))
    settings = OperatorSettings(image=installed.image)
    cronjob = cronjob_manifest(site, {"url": "https://example.org/", "schedule": "@daily"}, settings, "http://api")

    def create(manifest: dict[str, Any]) -> str:
        return installed.as_operator("create", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest))

    other_image = json.loads(json.dumps(cronjob))
    other_image["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/miner"
    await eventually(lambda: "kubecrawl trigger" in create(other_image), timeout=30, interval=0.5, what="VAP")
    assert create(cronjob) == ""  # what operator/crawlsite/manifest.py writes passes

    shell = json.loads(json.dumps(cronjob))
    shell["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "id"]
    host = json.loads(json.dumps(cronjob))
    host["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    for refused in (shell, host):
        assert "kubecrawl trigger" in create(refused)
