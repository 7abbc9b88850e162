"""The chart on a real node: `helm install` of the image built from the Dockerfile, and what a user sees next.

Everything here runs in Pods on the `node_cluster` (kubelet, containerd, CNI, kube-proxy, CoreDNS): the migration
hook Job, the API, the workers and the operator (in-cluster, with the chart's ServiceAccount and RBAC only), the
CronJob's trigger Pod and `helm test`. PostgreSQL, RabbitMQ and the site to crawl run on this machine; Pods reach
them through the node's bridge address (`host_ip`), the broker and the database through TCP forwarders a test can
cut, exactly as a network partition looks to a client.

The tests of this module run in order on one release: install → helm test → a scheduled crawl → a broker outage
→ upgrade → a backlog scaled by the CrawlWorkerPool → a hung worker restarted → uninstall.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.helm import Helm
from tests.support.polling import ANY_ERROR, eventually_sync
from tests.support.prometheus import EndpointsDiscovery, PrometheusServer, fast_rules, scrape_configs
from tests.support.proxy import TcpProxy
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.sites import ThreadedSite, linked_pages
from tests.support.stack import ROOT, Kube, NodeCluster

pytestmark = pytest.mark.e2e

CHART = ROOT / "deploy" / "helm" / "kubecrawl"
RELEASE = "kc"
FULLNAME = "kc-kubecrawl"
POD_NETWORK = ip_network("10.244.0.0/24")
SITE_PAGES = 12
CRAWLED = linked_pages(SITE_PAGES)  # what the CrawlSite's crawl finds; the site serves more (the pool test's)
# Pods start in seconds here; the API waits for the broker and the database first. Generous for a loaded CI VM.
READY_SECONDS = 300.0
# A "* * * * *" schedule fires at the next minute; the crawl of 12 pages then takes seconds.
CRAWL_SECONDS = 200.0
# Readiness probe: period 5 s × failureThreshold 2, plus the kubelet's status update.
PROBE_SECONDS = 60.0
# The pool test: URLs whose pages take SLOW_PAGE_SECONDS each, posted at once.
BACKLOG_PAGES = 48
SLOW_PAGE_SECONDS = 2.0
# Liveness: period 10 s × failureThreshold 3 (timeout 3 s), then the probe's 10 s grace period, then the restart.
LIVENESS_SECONDS = 120.0
# Prometheus: scrape and rule evaluation every 2 s; alerts fire after 6 s instead of their minutes.
SCRAPE_INTERVAL = "2s"
ALERT_FOR = 6
# The dashboard's Grafana variables, for checking its queries against that Prometheus after the tests above.
DASHBOARD = ROOT / "deploy" / "grafana" / "kubecrawl.json"
GRAFANA_VARIABLES = {"$__rate_interval": "15m", "$__range": "1h", "$namespace": ".*", "$pool": ".*"}


@dataclass
class Release:
    kube: Kube
    namespace: str
    helm_cli: Helm
    values_file: Path
    rabbit_proxy: TcpProxy
    site: ThreadedSite
    database: str
    postgres: PostgresServer
    prometheus: PrometheusServer
    token: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def api(self, *, ready_only: bool = True) -> httpx.Client:
        """A client of one API Pod, as the test's ServiceAccount (the chart's default auth.mode: kubernetes)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=api_url(self, ready_only=ready_only), headers=headers, timeout=30)

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = self.helm_cli.run(*args, "--namespace", self.namespace, check=False, timeout=timeout)
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


def api_url(release: Release, *, ready_only: bool = True) -> str:
    """The API through one of its Pods' addresses (the machine routes to the Pod network over the node's bridge)."""
    pod = next(pod for pod in release.pods("api") if ready(pod) or not ready_only)
    return f"http://{pod['status']['podIP']}:8000"


def worker_replicas(release: Release) -> int:
    out = release.kube.run("get", "deployment", f"{FULLNAME}-worker", "-n", release.namespace, "-o", "json").stdout
    return int(json.loads(out)["spec"].get("replicas") or 0)


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
    pages = dict(CRAWLED) | {f"/slow/{i}": f"<title>slow {i}</title>" for i in range(BACKLOG_PAGES)}
    site = ThreadedSite(host, pages, slow={"/slow/": SLOW_PAGE_SECONDS}, failing={"/unavailable/": 503})
    kube.run("create", "namespace", namespace)
    secrets = {
        "kubecrawl-database": f"postgresql+asyncpg://postgres@{host}:{pg_proxy.port}/{database}",
        "kubecrawl-rabbitmq": f"amqp://guest:guest@{host}:{rabbit_proxy.port}/{database}",
    }
    for name, url in secrets.items():
        kube.run("create", "secret", "generic", name, "-n", namespace, f"--from-literal=url={url}")
    home = tmp_path_factory.mktemp("helm-pods")
    helm = Helm.private(home, kube.kubeconfig)
    values = {
        "image": {"repository": node_cluster.image_repository, "tag": node_cluster.image_tag, "pullPolicy": "Never"},
        # The site and nothing else on this machine: the SSRF guard stays on for every other private address.
        # Two messages per worker: a backlog stays in the queue, where the pool sees it.
        "config": {"allowedPrivateNetworks": [f"{host}/32"], "prefetchCount": 2},
        # The pool sizes the workers from the metadata queue (POST /metadata: one message per URL, no crawl
        # politeness to serialise them), small Pods so four fit on the node beside the others.
        "worker": {
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            "pool": {
                "queue": "kubecrawl.metadata",
                "targetPerReplica": 4,
                "maxReplicas": 4,
                "pollSeconds": 1,
                "scaleDown": {"stabilizationSeconds": 10, "periodSeconds": 5},
            },
        },
        "rabbitmq": {"managementUrl": f"http://{host}:{management_proxy.port}"},
        "operator": {"statusIntervalSeconds": 2},
    }
    values_file = home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    # Prometheus discovers the Pods through the API server exactly as the chart's ServiceMonitor asks, with the
    # chart's rules (each alert's `for` shortened so the test can see one fire).
    monitor_yaml = helm.run(
        "template", RELEASE, str(CHART), "-f", str(values_file), "--namespace", namespace,
        "--set", "serviceMonitor.enabled=true", "--show-only", "templates/monitoring.yaml",
    ).stdout  # fmt: skip
    monitor = next(doc for doc in yaml.safe_load_all(monitor_yaml) if doc and doc["kind"] == "ServiceMonitor")
    rules = fast_rules(ROOT / "deploy" / "prometheus" / "rules.yaml", home / "rules.yaml", for_seconds=ALERT_FOR)
    discovery = EndpointsDiscovery(kube.json, namespace, home / "targets.json").start()
    scrape = scrape_configs(monitor, discovery.path, interval=SCRAPE_INTERVAL)
    prometheus = PrometheusServer(home / "prometheus", scrape, [rules], interval=SCRAPE_INTERVAL).start()
    # The test calls the API as a script would in the cluster: a ServiceAccount allowed to fetch metadata
    # (docs/security.md), with a token for the API's audience, reviewed by the API (TokenReview + RBAC).
    client_role = f"{namespace}-metadata-client"
    kube.run("create", "serviceaccount", "e2e-client", "-n", namespace)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": client_role},
        "rules": [{"apiGroups": ["kubecrawl.io"], "resources": ["metadata"], "verbs": ["create"]}],
    }
    kube.run("apply", "-f", "-", stdin=json.dumps(role))
    kube.run(
        "create", "clusterrolebinding", client_role, f"--clusterrole={client_role}",
        f"--serviceaccount={namespace}:e2e-client",
    )  # fmt: skip
    token = kube.run("create", "token", "e2e-client", "-n", namespace, "--audience=kubecrawl", "--duration=2h")
    rel = Release(
        kube, namespace, helm, values_file, rabbit_proxy, site, database, postgres, prometheus, token.stdout.strip()
    )
    yield rel
    kube.run("delete", "clusterrolebinding,clusterrole", client_role, "--ignore-not-found", check=False)
    prometheus.stop()
    discovery.stop()
    rel.helm("uninstall", RELEASE, "--ignore-not-found")  # already done by the last test, unless it failed earlier
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
    # The test Pod exits 0 only on /health/ready 200 through the Service name. It is deleted once it passed
    # (hook-succeeded, so helm uninstall leaves nothing), which is why there are no --logs to read here.
    result = release.helm("test", RELEASE, "--timeout", "3m")
    assert "Phase:          Succeeded" in result.stdout, result.stdout


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
        last = eventually_sync(
            completed_crawl,
            timeout=CRAWL_SECONDS,
            what="the scheduled crawl to complete",
            interval=1,
            retry_on=ANY_ERROR,
        )
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

    eventually_sync(
        succeeded_trigger_jobs,
        timeout=60,
        what="a succeeded Job of the CrawlSite's CronJob",
        interval=0.2,
        retry_on=ANY_ERROR,
    )

    # A schedule of every minute may have started more crawls meanwhile: suspend it, then every crawl fetched every
    # page exactly once, each from a worker Pod's address (never from the machine itself).
    release.kube.run(
        "patch", "crawlsite", "local-site", "-n", release.namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    eventually_sync(
        lambda: {len(release.site.fetched(path)) for path in CRAWLED} == {len(release.site.fetched("/"))},
        timeout=60,
        what="every crawl to fetch every page once",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    worker_ips = {pod["status"]["podIP"] for pod in release.pods("worker")}
    clients = {client for path in CRAWLED for client in release.site.fetched(path)}
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
        eventually_sync(
            lambda: not any(ready(pod) for pod in release.pods("api")) and ready_endpoints() == 0,
            timeout=PROBE_SECONDS,
            what="every API Pod NotReady and out of the Service's endpoints while the broker is unreachable",
            interval=0.2,
            retry_on=ANY_ERROR,
        )
        # A client that still reaches a Pod directly is told to come back later; nothing is accepted and lost.
        with release.api(ready_only=False) as api:
            refused = api.post("/metadata", json={"url": f"{release.site.base}/p/1"})
        assert refused.status_code == 503, refused.text
        # Prometheus scrapes the Pods and the chart's broker-down alert fires, from the Pods' own metrics.
        eventually_sync(
            lambda: release.prometheus.firing("KubecrawlPublisherNotReady"),
            timeout=PROBE_SECONDS,
            what="the KubecrawlPublisherNotReady alert firing",
            interval=0.2,
            retry_on=ANY_ERROR,
        )
    finally:
        release.rabbit_proxy.restore()
    eventually_sync(
        lambda: all(ready(pod) for pod in release.pods("api")) and ready_endpoints() == len(before),
        timeout=PROBE_SECONDS * 2,
        what="every API Pod Ready again once the broker is back",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    after = {pod["metadata"]["name"]: restarts(pod) for pod in release.pods("api")}
    assert after == before, "the API Pods were restarted instead of reconnecting"
    eventually_sync(
        lambda: not release.prometheus.firing("KubecrawlPublisherNotReady"),
        timeout=PROBE_SECONDS,
        what="the broker-down alert resolved",
        interval=0.2,
        retry_on=ANY_ERROR,
    )


def test_helm_upgrade_rolls_the_pods(release: Release) -> None:
    before = {pod["metadata"]["name"] for pod in release.pods("api")}
    release.helm(
        "upgrade", RELEASE, str(CHART), "-f", str(release.values_file),
        "--set", "api.podAnnotations.rollout=second", "--wait", "--timeout", "5m",
    )  # fmt: skip
    after = [pod for pod in release.pods("api") if not pod["metadata"].get("deletionTimestamp")]
    assert {pod["metadata"]["name"] for pod in after}.isdisjoint(before)
    assert all(ready(pod) for pod in after)


def test_a_backlog_scales_worker_pods_up_and_down_and_a_pod_stopped_mid_page_loses_nothing(release: Release) -> None:
    site, kube = release.site, release.kube
    assert worker_replicas(release) == 1
    urls = [f"{site.base}/slow/{i}" for i in range(BACKLOG_PAGES)]
    started = time.monotonic()
    with release.api() as api:
        for url in urls:
            assert api.post("/metadata", json={"url": url}).status_code == 202

    # Up: 48 messages / 4 per replica → the maximum, 4 worker Pods, consuming.
    eventually_sync(
        lambda: worker_replicas(release) == 4,
        timeout=60,
        what="the pool to scale the workers to 4",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    up = time.monotonic() - started

    def busy_workers() -> set[str]:
        return {client for client, path in site.in_flight() if path.startswith("/slow/")}

    eventually_sync(
        lambda: len(busy_workers()) >= 3,
        timeout=READY_SECONDS,
        what="3 worker Pods fetching at once",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    print(f"backlog → 4 replicas: {up:.1f} s; → 3 Pods fetching: {time.monotonic() - started:.1f} s")

    # A Pod stopped mid-page (as a scale-down or a node drain does): it finishes its pages or gives them back.
    busy_ip = min(busy_workers())
    victim = next(p for p in release.pods("worker") if p["status"].get("podIP") == busy_ip)
    kube.run("delete", "pod", victim["metadata"]["name"], "-n", release.namespace, "--wait=false")

    with release.api() as api:

        def stored() -> bool:
            answers = [api.get("/metadata", params={"url": url}) for url in urls]
            return all(a.status_code == 200 and a.json().get("status") == "COMPLETED" for a in answers)

        try:
            eventually_sync(stored, timeout=300, what="every backlog page stored", interval=2, retry_on=ANY_ERROR)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{release.describe()}") from exc

    counts = {url: len(site.fetched(url.removeprefix(site.base))) for url in urls}
    assert min(counts.values()) >= 1, counts  # nothing lost
    assert max(counts.values()) <= 2, counts  # a page given back is fetched once more, never again
    clients = {client for client, path in site.requests if path.startswith("/slow/")}
    assert len(clients) >= 3, clients  # fetched by several worker Pods at once
    assert all(ip_address(client) in POD_NETWORK and client != release.site.host for client in clients), clients

    # Down: the queue is empty, so after the 10 s window the pool goes back to its minimum, one Pod.
    eventually_sync(
        lambda: worker_replicas(release) == 1,
        timeout=120,
        what="the pool to scale the workers back to 1",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    eventually_sync(
        lambda: len(release.pods("worker")) == 1,
        timeout=120,
        what="one worker Pod left",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    pool = json.loads(
        kube.run("get", "crawlworkerpool", f"{FULLNAME}-worker", "-n", release.namespace, "-o", "json").stdout
    )
    assert pool["status"]["lastScaleReason"], pool["status"]
    print(f"backlog of {BACKLOG_PAGES} → stored and back to 1 replica: {time.monotonic() - started:.1f} s")


def test_a_worker_whose_process_hangs_is_restarted_by_its_liveness_probe(
    release: Release, node_cluster: NodeCluster
) -> None:
    # A Pod that stays: not one the pool's last scale-down is still terminating (its kubelet kills it anyway).
    pod = eventually_sync(
        lambda: next(
            (p for p in release.pods("worker") if ready(p) and not p["metadata"].get("deletionTimestamp")), None
        ),
        timeout=READY_SECONDS,
        what="a Ready worker Pod that is not terminating",
        interval=0.2,
        retry_on=ANY_ERROR,
    )
    name = pod["metadata"]["name"]
    before = restarts(pod)
    container = pod["status"]["containerStatuses"][0]["containerID"]
    pid = node_cluster.node.container_pid(container)
    os.kill(pid, signal.SIGSTOP)  # frozen: connections stay open, nothing is answered (a hung event loop)
    try:

        def restarted() -> bool:
            out = release.kube.run("get", "pod", name, "-n", release.namespace, "-o", "json", check=False).stdout
            return bool(out) and restarts(json.loads(out)) > before

        eventually_sync(
            restarted,
            timeout=LIVENESS_SECONDS,
            what="the kubelet to restart the hung worker",
            interval=1,
            retry_on=ANY_ERROR,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    eventually_sync(
        lambda: any(ready(p) for p in release.pods("worker") if p["metadata"]["name"] == name),
        timeout=READY_SECONDS,
        what="the restarted worker Ready again",
        interval=0.2,
        retry_on=ANY_ERROR,
    )


def test_prometheus_scrapes_every_pod_and_every_dashboard_query_returns_data(release: Release) -> None:
    prometheus, kube = release.prometheus, release.kube
    # What the runs above did not cause yet: a page that keeps failing (retries, then a dead letter) and a
    # CrawlSite whose CronJob name is taken (an operator reconcile error).
    with release.api() as api:
        assert api.post("/metadata", json={"url": f"{release.site.base}/unavailable/1"}).status_code == 202
    kube.run("create", "cronjob", "taken", "-n", release.namespace, "--image=busybox", "--schedule=0 0 1 1 *")
    taken = {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlSite",
        "metadata": {"name": "taken"},
        "spec": {"url": release.site.base + "/", "schedule": "0 0 1 1 *"},
    }
    kube.run("apply", "-n", release.namespace, "-f", "-", stdin=json.dumps(taken))

    # Every Pod of every role is a target, found through the Services the ServiceMonitor selects, and up.
    def targets_up() -> dict[str, int]:
        up: dict[str, int] = {}
        for target in prometheus.targets():
            if target["health"] == "up":
                component = target["labels"].get("app_kubernetes_io_component", "")
                up[component] = up.get(component, 0) + 1
        return up

    pods = {role: len(release.pods(role)) for role in ("api", "worker", "operator")}
    eventually_sync(
        lambda: targets_up() == pods, timeout=60, what=f"{pods} targets up", interval=0.2, retry_on=ANY_ERROR
    )

    expressions = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            expressions.append((panel["title"], expression))
    assert expressions

    def empty() -> list[str]:
        return [f"{title}: {expression}" for title, expression in expressions if not prometheus.query(expression)]

    try:
        eventually_sync(
            lambda: not empty(), timeout=180, what="data for every dashboard query", interval=3, retry_on=ANY_ERROR
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; queries without data:\n" + "\n".join(empty())) from exc


def release_objects(release: Release) -> list[str]:
    """Every object in the release's namespace (of every listable kind) and cluster-wide that carries its label."""
    kube, selector = release.kube, f"app.kubernetes.io/instance={RELEASE}"
    namespaced = kube.run("api-resources", "--verbs=list", "--namespaced=true", "-o", "name").stdout.split()
    kinds = ",".join(kind for kind in namespaced if kind not in {"events", "events.events.k8s.io"})
    found = kube.run("get", kinds, "-n", release.namespace, "-l", selector, "-o", "name").stdout.split()
    cluster = kube.run("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout.split()
    return found + cluster


def test_helm_uninstall_leaves_nothing(release: Release) -> None:
    assert release_objects(release)  # the selector does find the release while it is installed
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "3m")
    # Nothing of the release stays, not even Terminating: the CrawlWorkerPool carries no finalizer that a stopped
    # operator could no longer remove, and the Pods are gone (--wait). The user's own CrawlSite stays, as do the
    # CRDs, the database and the queues.
    try:
        eventually_sync(
            lambda: not release_objects(release),
            timeout=60,
            what="no object of the release left",
            interval=0.2,
            retry_on=ANY_ERROR,
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {release_objects(release)}") from exc
    assert release.kube.run("get", "crawlworkerpools", "-n", release.namespace, "-o", "name").stdout.split() == []
    assert release.kube.run("get", "crawlsites", "-n", release.namespace, "-o", "name").stdout.split()
