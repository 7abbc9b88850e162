"""The chart installed, upgraded and uninstalled with helm on a control plane of its own (tools/controlplane), as
on a fresh cluster: no kubecrawl CRD exists before `helm install`.

The namespace enforces the `restricted` Pod Security Standard. No kubelet runs, so pods stay Pending; this test is
the node where the chart needs one: the migration hook Job's container arguments run as a local `kubecrawl` process
with the Job's own environment (Secrets read back from the cluster) against the session's PostgreSQL, then the
Job's status is set to Complete, as the job controller does when its pod succeeds — and helm goes on. The operator
Deployment's container runs the same way, as the chart's operator ServiceAccount (a token of it), to see it create
the chart's CrawlWorkerPool.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from alembic.script import ScriptDirectory

from kubecrawl.store.migrating import alembic_config
from tests.support.controlplane import ControlPlane, ensure_built, free_port
from tests.support.helm import CHART, Helm, values_file
from tests.support.polling import ANY_ERROR, eventually_sync
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.stack import ROOT, Kube, Process, http_status, service_account_kubeconfig

pytestmark = pytest.mark.e2e

CRDS = ("crawlsites.kubecrawl.io", "crawlworkerpools.kubecrawl.io")


# Install values: the CrawlWorkerPool with most of its fields (validated by the real API server against the CRD),
# paused so the operator this test runs never scales the Deployment.
INSTALL_VALUES: dict[str, Any] = {
    "worker": {
        "pool": {
            "paused": True,
            "minReplicas": 0,
            "activation": 5,
            "pollSeconds": 1.5,
            "scaleUp": {"maxPods": 4, "periodSeconds": 15},
            "scaleDown": {"stabilizationSeconds": 120, "tolerance": 0.1},
            "cooldownToZeroSeconds": 600,
            "fallback": {"replicas": 3},
        }
    },
    "rabbitmq": {"managementUrl": "http://rabbitmq.broker:15672"},
    # Validated by the real API server (and the Job's pod admitted with the hook's own ServiceAccount).
    "migrations": {"serviceAccount": {"create": True}},
    "api": {"ingress": {"enabled": True, "hosts": [{"host": "kubecrawl.example.com"}]}},
}


@dataclass
class Release:
    name: str
    namespace: str
    kube: Kube
    helm: Helm
    values: str
    database_url: str
    controlplane: ControlPlane
    work: Path
    # What the namespace held while the install's migration hook ran, and what `helm install` printed.
    workloads_during_install_hook: list[str] = field(default_factory=list)
    install_output: str = ""

    @property
    def fullname(self) -> str:
        return f"{self.name}-kubecrawl"

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.kube.run("get", kind, name, "-n", self.namespace, "-o", "json").stdout)
        return obj

    def names(self, kinds: str, *selector: str) -> list[str]:
        args = ["get", kinds, "-n", self.namespace, "-o", "name", *(["-l", ",".join(selector)] if selector else [])]
        return sorted(self.kube.run(*args).stdout.split())


def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str:
    secret = json.loads(kube.run("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return base64.b64decode(secret["data"][key]).decode()


def run_hook_job(release: Release, job_name: str, before: Callable[[], None] | None = None) -> None:
    """Be the node for the migration Job: wait for its pod to be admitted, (call ``before``,) run the container's
    arguments with the Job's environment, then mark the Job Complete as the job controller would."""
    kube, namespace = release.kube, release.namespace

    def started() -> dict[str, Any] | None:
        result = kube.run("get", "job", job_name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        job: dict[str, Any] = json.loads(result.stdout)
        # active = 1: the job controller created the pod, so the namespace's Pod Security admission took it.
        return job if job.get("status", {}).get("active") == 1 and job["status"].get("startTime") else None

    job = eventually_sync(
        started, timeout=90, what=f"hook Job {job_name} with an admitted pod", interval=0.2, retry_on=ANY_ERROR
    )
    if before is not None:
        before()
    box = job["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECRAWL_", "KUBERNETES_"))}
    for var in box.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_value(kube, namespace, ref["name"], ref["key"])
    # The image's ENTRYPOINT is `kubecrawl`; the Job gives its arguments.
    result = subprocess.run(
        [sys.executable, "-m", "kubecrawl.cli", *box["args"]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = {
        "status": "True",
        "reason": "CompletionsReached",
        "message": "run by the e2e test",
        "lastTransitionTime": now,
    }
    status = {
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "succeeded": 1,
        "completionTime": now,
        "conditions": [{"type": "SuccessCriteriaMet", **done}, {"type": "Complete", **done}],
    }
    kube.run(
        "patch",
        "job",
        job_name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def helm_with_hook(release: Release, *args: str, before: Callable[[], None] | None = None) -> str:
    """`helm install|upgrade …` while this test plays the node for its pre-* hook Job; helm's output."""
    process = release.helm.start(*args, "--timeout", "180s")
    try:
        run_hook_job(release, f"{release.fullname}-migrate", before)
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out + err
    return out


async def applied_revision(database_url: str) -> str:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        revision: str = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    return revision


@pytest.fixture(scope="module")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own: the CRDs must not exist before the install (the session's `cluster`
    has them, applied with kubectl for the operator tests)."""
    controlplane = ControlPlane(tmp_path_factory.mktemp("controlplane"), ensure_built())
    controlplane.start()
    yield controlplane
    controlplane.stop()


@pytest.fixture(scope="module")
def release(
    controlplane: ControlPlane,
    postgres: PostgresServer,
    rabbit: RabbitServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    kube = Kube(Path(controlplane.kubeconfig))
    work = tmp_path_factory.mktemp("install")
    suffix = uuid.uuid4().hex[:8]
    namespace = f"helm-{suffix}"
    kube.run("create", "namespace", namespace)
    # The chart's pods must pass the strictest Pod Security Standard: pods that break it are never created.
    kube.run(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    database_url = postgres.create_database(f"helm_{suffix}")
    secrets = {"kubecrawl-database": database_url, "kubecrawl-rabbitmq": rabbit.add_vhost(f"helm_{suffix}")}
    for name, url in secrets.items():
        kube.run("create", "secret", "generic", name, "-n", namespace, f"--from-literal=url={url}")
    release = Release(
        name=f"kc{suffix[:6]}",
        namespace=namespace,
        kube=kube,
        helm=Helm.private(work / "helm", Path(controlplane.kubeconfig)),
        values=values_file(work, INSTALL_VALUES),
        database_url=database_url,
        controlplane=controlplane,
        work=work,
    )

    def look_around() -> None:
        release.workloads_during_install_hook = release.names("deployments,services")

    release.install_output = helm_with_hook(
        release, "install", release.name, str(CHART), "-n", namespace, "-f", release.values, before=look_around
    )
    yield release
    release.helm.run("uninstall", release.name, "-n", namespace, "--wait", check=False)


def run_operator(release: Release) -> Process:
    """Be the node for the operator Deployment: its container's arguments as a local process, with its environment
    (ConfigMap, Secrets) and a token of the chart's operator ServiceAccount, so it has exactly the chart's rights."""
    deployment = release.get("deployment", f"{release.fullname}-operator")
    spec = deployment["spec"]["template"]["spec"]
    box = spec["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECRAWL_", "KUBERNETES_"))}
    for source in box.get("envFrom", []):
        env.update(release.get("configmap", source["configMapRef"]["name"])["data"])
    for var in box.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_value(release.kube, release.namespace, ref["name"], ref["key"])
    kubeconfig = service_account_kubeconfig(
        release.kube,
        release.controlplane.server,
        release.controlplane.pki.ca_cert,
        release.namespace,
        spec["serviceAccountName"],
        release.work / f"operator-{uuid.uuid4().hex[:6]}.kubeconfig",
    )
    env["KUBECONFIG"] = str(kubeconfig)
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    # The pod's ports are the node's business: free local ones instead.
    args = [a for a in box["args"] if not a.startswith(("--liveness=", "--metrics-port="))]
    args += [f"--liveness={liveness}", f"--metrics-port={free_port()}"]
    process = Process(args, env, release.work / "operator.log")
    process.start()
    process.wait_ready(lambda: http_status(liveness) == 200, timeout=60, what="operator liveness")
    return process


def test_install_migrates_the_database_before_any_workload_exists(release: Release) -> None:
    assert release.workloads_during_install_hook == []
    head = ScriptDirectory.from_config(alembic_config(release.database_url)).get_current_head()
    assert asyncio.run(applied_revision(release.database_url)) == head
    # hook-succeeded: the Job is deleted once it completed.
    eventually_sync(
        lambda: (
            release.kube.run(
                "get", "job", f"{release.fullname}-migrate", "-n", release.namespace, check=False
            ).returncode
            != 0
        ),
        timeout=60,
        what="the completed hook Job to be deleted",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    # Its ServiceAccount, a hook as well, goes with it.
    account = f"serviceaccount/{release.fullname}-migrate"
    assert release.kube.run("get", account, "-n", release.namespace, check=False).returncode != 0


def test_install_on_a_fresh_cluster_creates_the_crds_workloads_services_and_budget(release: Release) -> None:
    name = release.fullname
    for crd in CRDS:
        release.kube.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
        meta = release.get("crd", crd)["metadata"]
        # Objects of the release (so `helm upgrade` applies a changed CRD), kept by `helm uninstall`.
        assert meta["annotations"]["meta.helm.sh/release-name"] == release.name
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
    assert release.names("deployments") == [
        f"deployment.apps/{name}-api",
        f"deployment.apps/{name}-operator",
        f"deployment.apps/{name}-worker",
    ]
    assert release.names("services") == [
        f"service/{name}-api",
        f"service/{name}-operator-metrics",
        f"service/{name}-worker-metrics",
    ]
    assert release.names("poddisruptionbudgets") == [f"poddisruptionbudget.policy/{name}-api"]
    assert release.names("ingresses") == [f"ingress.networking.k8s.io/{name}-api"]
    assert release.get("service", f"{name}-api")["spec"]["clusterIP"]
    # NOTES.txt: where the API is and which Secrets the pods read.
    assert f"The API: http://{name}-api.{release.namespace}.svc:8000" in release.install_output
    assert "kubecrawl-database (key url): KUBECRAWL_DATABASE_URL" in release.install_output
    # Nothing that only exists in a clone of the repository (a user installs from a chart archive).
    notes = release.install_output.split("NOTES:", 1)[1]
    assert not [word for word in notes.split() if word.startswith(("examples/", "deploy/", "docs/", "tools/"))]


def test_installed_pods_are_admitted_under_the_restricted_pod_security_standard(release: Release) -> None:
    # Pending (no scheduler, no kubelet) but created: Pod Security admission refuses a pod at creation.
    def created() -> bool:
        for deployment in ("api", "operator", "worker"):
            status = release.get("deployment", f"{release.fullname}-{deployment}")["status"]
            wanted = release.get("deployment", f"{release.fullname}-{deployment}")["spec"]["replicas"]
            if status.get("replicas") != wanted:
                return False
        return True

    eventually_sync(created, timeout=60, what="every Deployment's pods to be created", interval=0.2, retry_on=ANY_ERROR)
    refused = release.kube.run(
        "get", "events", "-n", release.namespace, "--field-selector", "reason=FailedCreate", "-o", "name"
    ).stdout
    assert not refused.strip()
    pods = json.loads(
        release.kube.run(
            "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=worker", "-o", "json"
        ).stdout
    )["items"]
    assert pods
    assert all(pod["spec"]["terminationGracePeriodSeconds"] == 90 for pod in pods)


def wait_for_pool(release: Release, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    def pool() -> dict[str, Any] | None:
        result = release.kube.run(
            "get", "crawlworkerpool", f"{release.fullname}-worker", "-n", release.namespace, "-o", "json", check=False
        )
        found: dict[str, Any] | None = json.loads(result.stdout) if result.returncode == 0 else None
        return found if found is not None and ready(found) else None

    found: dict[str, Any] = eventually_sync(pool, timeout=60, what=what, interval=0.2, retry_on=ANY_ERROR)
    return found


def test_the_operator_creates_the_charts_pool_owned_by_the_worker_deployment(release: Release) -> None:
    operator = run_operator(release)
    try:
        pool = wait_for_pool(release, lambda _: True, "the operator to create the chart's CrawlWorkerPool")
    finally:
        operator.stop()
    assert "worker_pool_kept" in operator.output()
    # The API server applied the CRD's defaults to what the chart left out.
    assert pool["spec"]["scaleDown"] == {"stabilizationSeconds": 120, "tolerance": 0.1, "periodSeconds": 60}
    assert pool["spec"]["fallback"] == {"replicas": 3, "failureThreshold": 3}
    assert pool["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    # Deleting the worker Deployment (helm uninstall does) has the garbage collector delete the pool.
    worker = release.get("deployment", f"{release.fullname}-worker")
    assert [(o["kind"], o["name"], o["uid"]) for o in pool["metadata"]["ownerReferences"]] == [
        ("Deployment", worker["metadata"]["name"], worker["metadata"]["uid"])
    ]


def test_operator_service_account_has_the_operator_rights_and_no_more(release: Release) -> None:
    def can(user: str, *args: str) -> bool:
        result = release.kube.run("auth", "can-i", *args, f"--as={user}", check=False)
        return result.stdout.strip() == "yes"

    operator = f"system:serviceaccount:{release.namespace}:{release.fullname}-operator"
    assert can(operator, "watch", "crawlsites.kubecrawl.io", "--all-namespaces")
    worker_scale = (f"deployments.apps/{release.fullname}-worker", "--subresource=scale")
    assert can(operator, "patch", *worker_scale, "-n", release.namespace)
    assert not can(operator, "patch", "deployments.apps", "--subresource=scale", "-n", "anywhere")
    assert not can(operator, "patch", "pods", "-n", "anywhere")
    assert can(operator, "patch", "pods", "-n", release.namespace)
    # Watching every namespace, it must write CrawlSites' CronJobs wherever they are.
    assert can(operator, "create", "cronjobs.batch", "-n", "anywhere")
    # The chart's own pool, in the release namespace only.
    assert can(operator, "create", "crawlworkerpools.kubecrawl.io", "-n", release.namespace)
    assert not can(operator, "create", "crawlworkerpools.kubecrawl.io", "-n", "anywhere")
    assert not can(operator, "get", "secrets", "-n", release.namespace)
    assert not can(operator, "patch", "deployments.apps", "-n", release.namespace)
    workload = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    assert not can(workload, "list", "pods", "-n", release.namespace)


def chart_with_a_new_printer_column(directory: Path) -> Path:
    """A copy of the chart whose CrawlWorkerPool CRD has one more printer column: what a newer chart brings."""
    chart = directory / "kubecrawl"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "crawlworkerpool.yaml"
    crd = yaml.safe_load(path.read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    columns.append({"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused", "priority": 1})
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def test_upgrade_applies_the_changed_crd_migrates_again_keeps_the_replicas_and_rolls_new_settings(
    release: Release,
) -> None:
    worker = f"{release.fullname}-worker"
    before = release.get("deployment", worker)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    pool_uid = release.get("crawlworkerpool", worker)["metadata"]["uid"]
    # What the CrawlWorkerPool does: scale through /scale.
    release.kube.run("scale", "deployment", worker, "-n", release.namespace, "--replicas=3")
    newer = chart_with_a_new_printer_column(release.work)
    helm_with_hook(
        release,
        "upgrade",
        release.name,
        str(newer),
        "-n",
        release.namespace,
        "-f",
        release.values,
        "--set",
        "config.logLevel=DEBUG",
        "--set",
        "worker.pool.maxReplicas=7",
    )
    crd = release.get("crd", "crawlworkerpools.kubecrawl.io")
    assert "Paused" in [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    deployment = release.get("deployment", worker)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before
    config = release.get("configmap", f"{release.fullname}-config")
    assert config["data"]["KUBECRAWL_LOG_LEVEL"] == "DEBUG"
    status = json.loads(release.helm.run("status", release.name, "-n", release.namespace, "-o", "json").stdout)
    assert status["version"] == 2
    assert status["info"]["status"] == "deployed"
    # The upgraded operator (its pod template changed) applies the new pool values to the same pool.
    operator = run_operator(release)
    try:
        pool = wait_for_pool(release, lambda p: p["spec"]["maxReplicas"] == 7, "the pool's new maxReplicas")
    finally:
        operator.stop()
    assert pool["metadata"]["uid"] == pool_uid


def test_uninstall_deletes_the_release_and_its_pool_and_keeps_the_crds_and_crawlsites(release: Release) -> None:
    elsewhere = f"sites-{uuid.uuid4().hex[:6]}"
    release.kube.run("create", "namespace", elsewhere)
    site = {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlSite",
        "metadata": {"name": "docs", "namespace": elsewhere},
        "spec": {"url": "https://docs.example/"},
    }
    release.kube.run("apply", "-f", "-", stdin=json.dumps(site))
    release.helm.run("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "120s")
    kinds = (
        "deployments,replicasets,pods,services,crawlworkerpools,poddisruptionbudgets,configmaps,serviceaccounts,jobs,"
        "roles,rolebindings"
    )
    selector = f"app.kubernetes.io/instance={release.name}"
    # The pool goes with the worker Deployment that owns it (garbage collection).
    eventually_sync(
        lambda: not release.names(kinds, selector),
        timeout=90,
        what="the release's objects to be deleted",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    cluster_wide = release.kube.run("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout
    assert not cluster_wide.strip()
    # helm.sh/resource-policy: keep. Deleting the CRDs would have deleted every CrawlSite of the cluster.
    release.kube.run("get", "crd", *CRDS)
    assert release.kube.run("get", "crawlsite", "docs", "-n", elsewhere, "-o", "name").stdout.strip()
