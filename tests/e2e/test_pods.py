"""The chart on a real node: `helm install` of the image built from the Dockerfile, and what a user sees next.

Everything here runs in Pods on the `node_cluster` (kubelet, containerd, CNI, kube-proxy, CoreDNS): the migration
hook Job, the API, the workers and the operator (in-cluster, with the chart's ServiceAccount and RBAC only), the
CronJob's trigger Pod and `helm test`. PostgreSQL, RabbitMQ and the site to crawl run on this machine; Pods reach
them through the node's bridge address (`host_ip`), the broker and the database through TCP forwarders a test can
cut, exactly as a network partition looks to a client.

The tests of this module run in order on one release: install → helm test → a scheduled crawl → a broker outage
→ upgrade.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import NodeCluster
from tests.e2e.stack import ROOT, Kube
from tests.support.controlplane import ensure_built
from tests.support.proxy import TcpProxy
from tests.support.servers import PostgresServer, RabbitServer, wait_for
from tests.support.sites import ThreadedSite, linked_pages

pytestmark = pytest.mark.e2e

CHART = ROOT / "deploy" / "helm" / "kubecrawl"
RELEASE = "kc"
FULLNAME = "kc-kubecrawl"
POD_NETWORK = ip_network("10.244.0.0/24")
SITE_PAGES = 12
# Pods start in seconds here; the API waits for the broker and the database first. Generous for a loaded CI VM.
READY_SECONDS = 300.0
# A "* * * * *" schedule fires at the next minute; the crawl of 12 pages then takes seconds.
CRAWL_SECONDS = 200.0
# Readiness probe: period 5 s × failureThreshold 2, plus the kubelet's status update.
PROBE_SECONDS = 60.0


@dataclass
class Release:
    kube: Kube
    namespace: str
    helm_env: dict[str, str]
    values_file: Path
    rabbit_proxy: TcpProxy
    site: ThreadedSite
    database: str
    postgres: PostgresServer
    timings: dict[str, float] = field(default_factory=dict)

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(ensure_built() / "helm"), *args, "--namespace", self.namespace],
            env=self.helm_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}\n{self.describe()}"
            )
        return result

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        selector = ["-l", f"app.kubernetes.io/component={component}"] if component else []
        out = self.kube.run("get", "pods", "-n", self.namespace, "-o", "json", *selector).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def describe(self) -> str:
        """Pods, their states and recent events: what a failing test should show."""
        pods = self.kube.run("get", "pods", "-n", self.namespace, "-o", "wide", check=False).stdout
        events = self.kube.run("get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False).stdout
        logs = []
        for component in ("api", "worker", "operator"):
            out = self.kube.run(
                "logs", "-n", self.namespace, "-l", f"app.kubernetes.io/component={component}", "--tail=15",
                "--prefix", check=False,
            ).stdout  # fmt: skip
            logs.append(f"{component} logs (last 15 per Pod):\n{out}")
        return f"pods:\n{pods}\nevents (last 30):\n" + "\n".join(events.splitlines()[-30:]) + "\n" + "\n".join(logs)


def ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses", []))


@pytest.fixture(scope="module")
def release(
    node_cluster: NodeCluster, postgres: PostgresServer, rabbit: RabbitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    kube, host = node_cluster.admin, node_cluster.host_ip
    suffix = uuid.uuid4().hex[:8]
    namespace = "kc-" + suffix
    database = "pods_" + suffix
    postgres.create_database(database)
    rabbit.add_vhost(database)
    proxies = [
        TcpProxy(port, listen_host=host).start() for port in (postgres.port, rabbit.port, rabbit.management_port)
    ]
    pg_proxy, rabbit_proxy, management_proxy = proxies
    site = ThreadedSite(host, linked_pages(SITE_PAGES))
    kube.run("create", "namespace", namespace)
    secrets = {
        "kubecrawl-database": f"postgresql+asyncpg://postgres@{host}:{pg_proxy.port}/{database}",
        "kubecrawl-rabbitmq": f"amqp://guest:guest@{host}:{rabbit_proxy.port}/{database}",
    }
    for name, url in secrets.items():
        kube.run("create", "secret", "generic", name, "-n", namespace, f"--from-literal=url={url}")
    home = tmp_path_factory.mktemp("helm-pods")
    helm_env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    helm_env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(kube.kubeconfig),
    )
    values = {
        "image": {"repository": node_cluster.image_repository, "tag": node_cluster.image_tag, "pullPolicy": "Never"},
        # The site and nothing else on this machine: the SSRF guard stays on for every other private address.
        "config": {"allowedPrivateNetworks": [f"{host}/32"]},
        "rabbitmq": {"managementUrl": f"http://{host}:{management_proxy.port}"},
        "operator": {"statusIntervalSeconds": 2},
    }
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rel = Release(kube, namespace, helm_env, values_file, rabbit_proxy, site, database, postgres)
    yield rel
    rel.helm("uninstall", RELEASE, "--ignore-not-found")
    # Known bug (real Pods showed it): the operator's kopf daemon puts a finalizer on the chart's CrawlWorkerPool, and
    # `helm uninstall` stops the operator before it can remove it, so the pool (and its namespace) would hang.
    kube.run(
        "patch", "crawlworkerpools", f"{FULLNAME}-worker", "-n", namespace, "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}', check=False,
    )  # fmt: skip
    kube.run("delete", "namespace", namespace, "--wait=false", check=False)
    for proxy in proxies:
        proxy.stop()
    site.stop()


def test_helm_install_runs_the_migration_job_and_brings_every_pod_ready_through_its_real_probes(
    release: Release,
) -> None:
    started = time.monotonic()
    release.helm("install", RELEASE, str(CHART), "-f", str(release.values_file), "--wait", "--timeout", "5m")
    release.timings["helm_install_to_ready_seconds"] = time.monotonic() - started
    print(f"helm install → all Pods Ready: {release.timings['helm_install_to_ready_seconds']:.1f} s")

    # The hook Job ran `kubecrawl migrate` in a Pod (and helm deleted it on success): the schema is at head.
    version = release.postgres.psql("SELECT version_num FROM alembic_version", database=release.database)
    assert version, "the migration Job's Pod did not migrate the database"
    for component in ("api", "worker", "operator"):
        pods = release.pods(component)
        assert pods, f"no {component} Pod"
        assert all(ready(pod) for pod in pods), release.describe()
        for pod in pods:
            assert pod["spec"]["nodeName"] == "kubecrawl-node"
            assert ip_address(pod["status"]["podIP"]) in POD_NETWORK


def test_helm_test_reaches_the_api_through_its_service_name(release: Release) -> None:
    result = release.helm("test", RELEASE, "--logs", "--timeout", "3m")
    assert "Phase:          Succeeded" in result.stdout or "Succeeded" in result.stdout, result.stdout
    assert "/health/ready 200" in result.stdout, result.stdout


def test_a_scheduled_crawlsite_is_triggered_by_its_cronjob_pod_and_crawled_by_worker_pods(release: Release) -> None:
    crawlsite = {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlSite",
        "metadata": {"name": "local-site"},
        "spec": {
            "url": release.site.base + "/",
            "schedule": "* * * * *",
            "overlapPolicy": "Forbid",
            "scope": {"maxPages": 50, "maxDepth": 2},
            "politeness": {"respectRobotsTxt": False},
        },
    }
    applied = time.monotonic()
    release.kube.run("apply", "-n", release.namespace, "-f", "-", stdin=json.dumps(crawlsite))

    def completed_crawl() -> dict[str, Any] | None:
        out = release.kube.run("get", "crawlsite", "local-site", "-n", release.namespace, "-o", "json").stdout
        last = (json.loads(out).get("status") or {}).get("lastCrawl") or {}
        return last if last.get("state") == "COMPLETED" else None

    try:
        last = wait_for(completed_crawl, timeout=CRAWL_SECONDS, what="the scheduled crawl to complete", interval=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{release.describe()}") from exc
    print(f"CrawlSite apply → crawl completed: {time.monotonic() - applied:.1f} s")
    assert last["pages"] == SITE_PAGES
    assert last.get("failed", 0) == 0

    # The CronJob's Job ran `kubecrawl trigger` in a Pod that reached the API by its Service name.
    def succeeded_trigger_jobs() -> list[str]:
        jobs = json.loads(release.kube.run("get", "jobs", "-n", release.namespace, "-o", "json").stdout)["items"]
        return [
            job["metadata"]["name"]
            for job in jobs
            if job["metadata"].get("ownerReferences", [{}])[0].get("kind") == "CronJob"
            and job.get("status", {}).get("succeeded") == 1
        ]

    wait_for(succeeded_trigger_jobs, timeout=60, what="a succeeded Job of the CrawlSite's CronJob")

    # A schedule of every minute may have started more crawls meanwhile: suspend it, then every crawl fetched every
    # page exactly once, each from a worker Pod's address (never from the machine itself).
    release.kube.run(
        "patch", "crawlsite", "local-site", "-n", release.namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_for(
        lambda: {len(release.site.fetched(path)) for path in release.site.pages} == {len(release.site.fetched("/"))},
        timeout=60,
        what="every crawl to fetch every page once",
    )
    worker_ips = {pod["status"]["podIP"] for pod in release.pods("worker")}
    clients = {client for path in release.site.pages for client in release.site.fetched(path)}
    assert clients <= worker_ips, (clients, worker_ips)

    row = release.kube.run("get", "crawlsites", "-n", release.namespace).stdout
    assert "local-site" in row
    assert str(SITE_PAGES) in row.splitlines()[1]


def test_a_broker_outage_takes_api_pods_out_of_the_service_and_back_without_restarts(release: Release) -> None:
    before = {pod["metadata"]["name"]: restarts(pod) for pod in release.pods("api")}
    api_service = f"{FULLNAME}-api"

    def ready_endpoints() -> int:
        out = release.kube.run(
            "get", "endpointslices", "-n", release.namespace, "-l", f"kubernetes.io/service-name={api_service}",
            "-o", "json",
        ).stdout  # fmt: skip
        return sum(
            1
            for item in json.loads(out)["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
        )

    release.rabbit_proxy.cut()
    try:
        wait_for(
            lambda: not any(ready(pod) for pod in release.pods("api")) and ready_endpoints() == 0,
            timeout=PROBE_SECONDS,
            what="every API Pod NotReady and out of the Service's endpoints while the broker is unreachable",
        )
    finally:
        release.rabbit_proxy.restore()
    wait_for(
        lambda: all(ready(pod) for pod in release.pods("api")) and ready_endpoints() == len(before),
        timeout=PROBE_SECONDS * 2,
        what="every API Pod Ready again once the broker is back",
    )
    after = {pod["metadata"]["name"]: restarts(pod) for pod in release.pods("api")}
    assert after == before, "the API Pods were restarted instead of reconnecting"


def test_helm_upgrade_rolls_the_pods(release: Release) -> None:
    before = {pod["metadata"]["name"] for pod in release.pods("api")}
    release.helm(
        "upgrade", RELEASE, str(CHART), "-f", str(release.values_file),
        "--set", "api.podAnnotations.rollout=second", "--wait", "--timeout", "5m",
    )  # fmt: skip
    after = release.pods("api")
    assert {pod["metadata"]["name"] for pod in after}.isdisjoint(before)
    assert all(ready(pod) for pod in after)
