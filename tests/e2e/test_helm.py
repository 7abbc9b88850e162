"""The Helm chart (deploy/helm/kubecrawl) with the helm binary built by tools/controlplane.

Without a cluster: `helm lint --strict`, `helm template` with the defaults and with every option on, and what the
rendered objects promise (settings that exist in the code, secrets only by reference, probes on the ports the
processes listen on, the worker's grace period, one source for CRDs, RBAC rules, alert rules and the dashboard).

Installed, upgraded and uninstalled on a control plane: tests/e2e/test_helm_install.py.
"""

from __future__ import annotations

import json
import os
import uuid
from ipaddress import ip_network
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubecrawl.core.settings import Settings
from kubecrawl.operator.crawlsite import naming
from kubecrawl.operator.pool import supervising
from kubecrawl.operator.settings import ChartPool, OperatorSettings
from tests.support.helm import CHART, Helm, values_file
from tests.support.stack import ROOT, Cluster

pytestmark = pytest.mark.e2e

RELEASE = "kc"
NAMESPACE = "crawling"
FULLNAME = "kc-kubecrawl"
# deploy/ paths kubectl, promtool and Grafana users know → the chart's files they link to (one copy of each).
LINKS = {
    "deploy/crds/crawlsite.yaml": "deploy/helm/kubecrawl/files/crds/crawlsite.yaml",
    "deploy/crds/crawlworkerpool.yaml": "deploy/helm/kubecrawl/files/crds/crawlworkerpool.yaml",
    "deploy/rbac/clusterrole.yaml": "deploy/helm/kubecrawl/files/rbac/clusterrole.yaml",
    "deploy/rbac/scaling-clusterrole.yaml": "deploy/helm/kubecrawl/files/rbac/scaling.yaml",
    "deploy/prometheus/rules.yaml": "deploy/helm/kubecrawl/files/prometheus/rules.yaml",
    "deploy/grafana/kubecrawl.json": "deploy/helm/kubecrawl/files/grafana/kubecrawl.json",
}
DIGEST = "sha256:" + "0123456789abcdef" * 4
CA_VOLUME = {"name": "intranet-ca", "configMap": {"name": "intranet-ca"}}
CA_MOUNT = {"name": "intranet-ca", "mountPath": "/etc/kubecrawl/ca", "readOnly": True}
# Every optional feature on, and most settings changed from their defaults.
ALL_OPTIONS: dict[str, Any] = {
    "image": {"digest": DIGEST},
    "imagePullSecrets": [{"name": "registry"}],
    "commonLabels": {"team": "crawl"},
    "rabbitmq": {"managementUrlSecretKey": "management-url"},
    "config": {
        "logLevel": "DEBUG",
        "allowedPrivateNetworks": ["10.20.0.0/16", "fd00::/8"],
        "prefetchCount": 8,
        "fetch": {
            "timeoutSeconds": 30.5,
            "maxBodyBytes": 4194304,
            "userAgent": "acme-bot/1.0",
            "proxyUrl": "http://egress-proxy.net:3128",
        },
        "retry": {"maxAttempts": 7},
    },
    "api": {
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "priorityClassName": "high",
        # A private CA for intranet crawls (every role has the same two keys).
        "extraVolumes": [CA_VOLUME],
        "extraVolumeMounts": [CA_MOUNT],
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "kubecrawl.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "kubecrawl-tls", "hosts": ["kubecrawl.example.com"]}],
        },
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["kubecrawl.example.com"],
        },
    },
    "worker": {
        "extraVolumes": [CA_VOLUME],
        "extraVolumeMounts": [CA_MOUNT],
        "pool": {
            "minReplicas": 0,
            "maxReplicas": 20,
            "activation": 5,
            "pollSeconds": 1.5,
            "scaleUp": {"maxPods": 4, "periodSeconds": 15},
            "scaleDown": {"stabilizationSeconds": 120, "tolerance": 0.1},
            "cooldownToZeroSeconds": 600,
            "fallback": {"failureThreshold": 2, "replicas": 3},
        },
    },
    "operator": {
        "namespaces": ["crawl-a", "crawl-b"],
        "statusIntervalSeconds": 10,
        "trigger": {"apiUrl": "http://api.example:8000", "serviceAccount": "trigger"},
        "extraVolumes": [CA_VOLUME],
        "extraVolumeMounts": [CA_MOUNT],
    },
    "migrations": {
        "serviceAccount": {"create": True, "annotations": {"iam.example/role": "migrate"}},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraVolumes": [CA_VOLUME],
        "extraVolumeMounts": [CA_MOUNT],
        "podAnnotations": {"team": "db"},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "runbookBaseUrl": "https://runbooks.example/kubecrawl",
    },
    "networkPolicy": {
        "enabled": True,
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "workerEgress": {
            "enabled": True,
            "to": [{"to": [{"podSelector": {"matchLabels": {"app": "rabbitmq"}}}], "ports": [{"port": 5672}]}],
        },
    },
}


def objects_of(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def index(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → object; `namespace/name` for the few objects the chart puts in other namespaces."""
    keyed = {}
    for obj in objects:
        meta = obj["metadata"]
        keyed[obj["kind"], f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]] = obj
    assert len(keyed) == len(objects), "two objects of the same kind and name"
    return keyed


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.private(tmp_path_factory.mktemp("helm"))


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    return objects_of(helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout)


@pytest.fixture(scope="module")
def default_objects(helm: Helm) -> dict[tuple[str, str], dict[str, Any]]:
    return index(render(helm))


@pytest.fixture(scope="module")
def all_options_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return values_file(tmp_path_factory.mktemp("values"), ALL_OPTIONS)


@pytest.fixture(scope="module")
def all_objects(helm: Helm, all_options_file: str) -> dict[tuple[str, str], dict[str, Any]]:
    return index(render(helm, "-f", all_options_file))


def pod_specs(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template the chart renders (Deployments and the migration Job), by object name."""
    return {
        name: obj["spec"]["template"]["spec"] for (kind, name), obj in objects.items() if kind in {"Deployment", "Job"}
    }


def container(objects: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = objects[kind, name]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def environment(objects: dict[tuple[str, str], dict[str, Any]], spec: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env; Secrets and the downward
    API replaced by valid stand-ins (their wiring is checked separately)."""
    stand_ins = {
        "KUBECRAWL_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/kubecrawl",
        "KUBECRAWL_RABBITMQ_URL": "amqp://u:p@rabbitmq:5672/kubecrawl",
        "KUBECRAWL_RABBITMQ_MANAGEMENT_URL": "http://u:p@rabbitmq:15672",
        "POD_NAME": "pod-0",
    }
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
    for var in spec.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else stand_ins[var["name"]]
    return env


def setting_variables() -> set[str]:
    """Every environment variable Settings and OperatorSettings read (prefix, nested with __, aliases)."""
    names: set[str] = set()
    for model, prefix in ((Settings, "KUBECRAWL_"), (OperatorSettings, "KUBECRAWL_OPERATOR_")):
        for name, info in model.model_fields.items():
            if isinstance(info.validation_alias, str):
                names.add(info.validation_alias.upper())
            elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                names |= {f"{prefix}{name}__{sub}".upper() for sub in info.annotation.model_fields}
            else:
                names.add(f"{prefix}{name}".upper())
    return names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KUBECRAWL_") or name == "POD_NAME":
            monkeypatch.delenv(name)
    return monkeypatch


# ---------------------------------------------------------------------------------------------- lint, template


def test_helm_show_readme_gives_the_charts_readme(helm: Helm) -> None:
    readme = helm.run("show", "readme", str(CHART)).stdout
    assert readme.startswith("# kubecrawl")
    assert "crds.install" in readme


def test_chart_passes_helm_lint_strict_with_defaults(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_chart_passes_helm_lint_strict_with_every_option(helm: Helm, all_options_file: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "-f", all_options_file)
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_the_workloads_and_no_optional_objects(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert set(default_objects) == {
        ("Deployment", f"{FULLNAME}-api"),
        ("Deployment", f"{FULLNAME}-worker"),
        ("Deployment", f"{FULLNAME}-operator"),
        ("Job", f"{FULLNAME}-migrate"),
        ("Service", f"{FULLNAME}-api"),
        ("Service", f"{FULLNAME}-worker-metrics"),
        ("Service", f"{FULLNAME}-operator-metrics"),
        ("PodDisruptionBudget", f"{FULLNAME}-api"),
        ("CustomResourceDefinition", "crawlsites.kubecrawl.io"),
        ("CustomResourceDefinition", "crawlworkerpools.kubecrawl.io"),
        ("ConfigMap", f"{FULLNAME}-config"),
        ("ConfigMap", f"{FULLNAME}-dashboard"),
        ("ServiceAccount", FULLNAME),
        ("ServiceAccount", f"{FULLNAME}-operator"),
        ("ClusterRole", f"{FULLNAME}-operator"),
        ("ClusterRoleBinding", f"{FULLNAME}-operator"),
        # The operator keeps the chart's CrawlWorkerPool in the release namespace (create, delete).
        ("Role", f"{FULLNAME}-operator-pool"),
        ("RoleBinding", f"{FULLNAME}-operator-pool"),
        # Pods and the worker Deployment's /scale only in the release's namespace.
        ("Role", f"{NAMESPACE}/{FULLNAME}-operator-scaling"),
        ("RoleBinding", f"{NAMESPACE}/{FULLNAME}-operator-scaling"),
        # Its Pod patches and CronJobs held to what it writes (tests/e2e/test_operator_admission.py).
        ("ValidatingAdmissionPolicy", f"{FULLNAME}-operator"),
        ("ValidatingAdmissionPolicyBinding", f"{FULLNAME}-operator"),
        # auth.mode kubernetes (docs/security.md): the API's reviewing identity, who may trigger, aggregated roles.
        ("ServiceAccount", f"{FULLNAME}-api"),
        ("ClusterRoleBinding", f"{FULLNAME}-api-auth-delegator"),
        ("ClusterRole", f"{FULLNAME}-trigger"),
        ("ClusterRoleBinding", f"{FULLNAME}-trigger"),
        ("ClusterRole", f"{FULLNAME}-crawlsites-view"),
        ("ClusterRole", f"{FULLNAME}-crawlsites-edit"),
        ("Pod", f"{FULLNAME}-test-api-ready"),  # `helm test`
        # NetworkPolicy on by default (docs/security.md): ingress of each role, the workers' egress.
        ("NetworkPolicy", f"{FULLNAME}-api"),
        ("NetworkPolicy", f"{FULLNAME}-worker"),
        ("NetworkPolicy", f"{FULLNAME}-operator"),
        ("NetworkPolicy", f"{FULLNAME}-worker-egress"),
    }


def test_every_option_renders_monitoring_network_policies_and_namespace_bindings(
    all_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kinds = {kind for kind, _ in all_objects}
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "RoleBinding"} <= kinds
    assert ("ClusterRoleBinding", f"{FULLNAME}-operator") not in all_objects
    bindings = [
        obj
        for (kind, name), obj in all_objects.items()
        if kind == "RoleBinding" and "/" in name and name.endswith("-operator")
    ]
    # The chart's own CrawlWorkerPool lives in the release namespace: the operator watches it too.
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["crawl-a", "crawl-b", NAMESPACE]
    operator = container(all_objects, "Deployment", f"{FULLNAME}-operator")
    namespaces = [arg.split("=", 1)[1] for arg in operator["args"] if arg.startswith("--namespace=")]
    assert namespaces == ["crawl-a", "crawl-b", NAMESPACE]
    assert all(obj["metadata"]["labels"]["team"] == "crawl" for obj in all_objects.values())
    assert container(all_objects, "Deployment", f"{FULLNAME}-api")["image"] == f"ghcr.io/kubecrawl/kubecrawl@{DIGEST}"


def test_api_network_policy_admits_trigger_pods_operator_and_scrapers(
    all_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    peers = all_objects["NetworkPolicy", f"{FULLNAME}-api"]["spec"]["ingress"][0]["from"]
    trigger_pod = naming.labels("docs")  # what the operator puts on CrawlSite trigger pods
    assert any(
        "namespaceSelector" in peer and peer["podSelector"]["matchLabels"].items() <= trigger_pod.items()
        for peer in peers
    )
    operator_pod = all_objects["Deployment", f"{FULLNAME}-operator"]["spec"]["template"]["metadata"]["labels"]
    same_namespace = [peer["podSelector"]["matchLabels"] for peer in peers if set(peer) == {"podSelector"}]
    assert any(labels.items() <= operator_pod.items() for labels in same_namespace)
    assert ALL_OPTIONS["networkPolicy"]["metricsFrom"][0] in peers


def test_api_network_policy_without_scrapers_is_refused_when_a_service_monitor_scrapes_the_api(helm: Helm) -> None:
    # The API's /metrics shares its port: limited to apiFrom, an empty metricsFrom ("everyone") admits no scraper.
    api_from = ["--set-json", 'networkPolicy.apiFrom=[{"namespaceSelector": {"matchLabels": {"team": "web"}}}]']
    enabled = ("--set", "networkPolicy.enabled=true")
    result = helm.run(
        "template", RELEASE, str(CHART), *enabled, *api_from, "--set", "serviceMonitor.enabled=true", check=False
    )
    assert result.returncode != 0
    assert "set networkPolicy.metricsFrom" in result.stderr, result.stderr
    scrapers = ["--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector": {"matchLabels": {"name": "mon"}}}]']
    objects = index(render(helm, *enabled, *api_from, *scrapers, "--set", "serviceMonitor.enabled=true"))
    peers = objects["NetworkPolicy", f"{FULLNAME}-api"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"name": "mon"}}} in peers


def test_values_schema_refuses_unknown_keys_and_bad_values(helm: Helm) -> None:
    for args, message in (
        (("--set", "api.replicaz=3"), "replicaz"),
        (("--set", "config.logFormat=xml"), "logFormat"),
        (("--set", "config.fetch.timeoutSeconds=0"), "timeoutSeconds"),
        (("--set", "worker.pool.queue="), "queue"),
    ):
        result = helm.run("template", RELEASE, str(CHART), *args, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr


def test_worker_pool_without_the_operator_is_refused(helm: Helm) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", "operator.enabled=false", check=False)
    assert result.returncode != 0
    assert "worker.pool.enabled needs operator.enabled" in result.stderr
    objects = index(render(helm, "--set", "operator.enabled=false", "--set", "worker.pool.enabled=false"))
    operator_objects = [key for key in objects if key[0] in {"ClusterRole", "CrawlWorkerPool"} or "operator" in key[1]]
    # The API's RBAC model (trigger, aggregated CrawlSite roles) stays: triggers and people still call the API.
    assert {name for _, name in operator_objects} <= {
        f"{FULLNAME}-trigger",
        f"{FULLNAME}-crawlsites-view",
        f"{FULLNAME}-crawlsites-edit",
    }


# ------------------------------------------------------------------------------------------ pods and settings


def test_every_pod_runs_non_root_read_only_without_capabilities(
    all_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    specs = pod_specs(all_objects)
    assert len(specs) == 4
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == 10001, name  # the image's user (Dockerfile)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for box in spec["containers"]:
            assert box["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert box["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
            assert box["resources"]["requests"]["memory"], name
            assert box["resources"]["limits"]["memory"], name
            assert {"name": "tmp", "mountPath": "/tmp"} in box["volumeMounts"], name


def test_image_ships_compiled_bytecode_since_pods_cannot_write_it(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    # No Docker engine here: the image is checked through its Dockerfile (build instructions joined over `\`).
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [line for line in dockerfile.splitlines() if line.startswith("RUN") and "pip install" in line]
    assert installs, "the Dockerfile installs kubecrawl with pip"
    # A read-only root filesystem (and PYTHONDONTWRITEBYTECODE) leaves no place to cache bytecode: unless the build
    # compiles it, every process start compiles every module again.
    specs = pod_specs(default_objects).values()
    assert all(spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] for spec in specs)
    assert not [line for line in installs if "--no-compile" in line], installs
    assert "PIP_NO_COMPILE" not in dockerfile
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users == [str(spec["securityContext"]["runAsUser"]) for spec in specs][:1]


def test_only_the_operator_and_the_reviewing_api_get_a_kubernetes_api_token(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name, spec in pod_specs(default_objects).items():
        expected = name.endswith(("-operator", "-api"))  # the API only for TokenReview/SubjectAccessReview
        assert spec.get("automountServiceAccountToken", True) is expected, name


def test_auth_kubernetes_wires_tokens_audiences_and_rbac(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    specs = pod_specs(default_objects)
    api = next(spec for name, spec in specs.items() if name.endswith("-api"))
    env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert (env["KUBECRAWL_AUTH"], env["KUBECRAWL_AUTH_AUDIENCE"]) == ("kubernetes", "kubecrawl")
    delegator = next(o for (kind, n), o in default_objects.items() if kind == "ClusterRoleBinding" and "delegator" in n)
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    assert delegator["subjects"][0]["name"] == api["serviceAccountName"]
    operator = next(spec for name, spec in specs.items() if name.endswith("-operator"))
    (source,) = next(v for v in operator["volumes"] if "projected" in v)["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "kubecrawl"
    op_env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert op_env["KUBECRAWL_API_TOKEN_FILE"].endswith("/" + source["serviceAccountToken"]["path"])
    assert op_env["KUBECRAWL_OPERATOR_TRIGGER_TOKEN_AUDIENCE"] == "kubecrawl"
    trigger = next(o for (kind, n), o in default_objects.items() if kind == "ClusterRole" and n.endswith("-trigger"))
    assert trigger["rules"] == [
        {"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites/trigger"], "verbs": ["create"]}
    ]


def test_each_role_runs_its_kubecrawl_command(default_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    boxes = {
        name: container(default_objects, kind, name) for kind, name in default_objects if kind in {"Deployment", "Job"}
    }
    # The image's ENTRYPOINT is `kubecrawl`: containers give arguments only.
    assert not [name for name, box in boxes.items() if "command" in box]
    commands = {name: box["args"][0] for name, box in boxes.items()}
    assert commands == {
        f"{FULLNAME}-api": "api",
        f"{FULLNAME}-worker": "worker",
        f"{FULLNAME}-operator": "operator",
        f"{FULLNAME}-migrate": "migrate",
    }


def test_probes_hit_the_endpoints_on_the_ports_the_processes_listen_on(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def port(box: dict[str, Any], name: str) -> int:
        ports: dict[str, int] = {p["name"]: p["containerPort"] for p in box["ports"]}
        return ports[name]

    api = container(default_objects, "Deployment", f"{FULLNAME}-api")
    assert "--port=8000" in api["args"]
    assert port(api, "http") == 8000
    assert api["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert api["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}

    operator = container(default_objects, "Deployment", f"{FULLNAME}-operator")
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]
    assert port(operator, "healthz") == 8080
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--metrics-port=9100" in operator["args"]
    assert port(operator, "metrics") == 9100

    worker = container(default_objects, "Deployment", f"{FULLNAME}-worker")
    assert "--metrics-port=9100" in worker["args"]
    assert port(worker, "metrics") == 9100
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "metrics"}
    # a hung loop cannot drain: a liveness kill does not wait for the pod's drain grace period
    assert worker["livenessProbe"]["terminationGracePeriodSeconds"] == 10

    services = {name: obj for (kind, name), obj in default_objects.items() if kind == "Service"}
    assert services[f"{FULLNAME}-api"]["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    for name in (f"{FULLNAME}-worker-metrics", f"{FULLNAME}-operator-metrics"):
        assert services[name]["spec"]["ports"][0]["targetPort"] == "metrics"


def _grace(objects: dict[tuple[str, str], dict[str, Any]], role: str) -> int:
    """The rendered terminationGracePeriodSeconds of the ``role`` Deployment."""
    value: int = objects["Deployment", f"{FULLNAME}-{role}"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    return value


def test_worker_grace_period_follows_the_fetch_and_publisher_timeouts(helm: Helm) -> None:
    def grace(*args: str) -> int:
        return _grace(index(render(helm, *args)), "worker")

    # 2 × fetch timeout (robots.txt, then the page) + 2 × confirm timeout + publisher shutdown + drain margin.
    assert grace() == 2 * 15 + 2 * 10 + 10 + 30
    assert grace("--set", "config.fetch.timeoutSeconds=60") == 2 * 60 + 2 * 10 + 10 + 30
    # Rounded up. (--set-json: helm's --set passes 7.25 on as a string, which the values schema refuses.)
    assert grace("--set-json", "config.fetch.timeoutSeconds=7.25", "--set", "worker.drainMarginSeconds=0") == 45
    assert grace("--set", "worker.terminationGracePeriodSeconds=45") == 45


def test_worker_drain_timeout_ends_ten_seconds_before_its_grace_period(helm: Helm) -> None:
    def drain_and_grace(*args: str) -> tuple[float, int]:
        objects = index(render(helm, *args))
        env = {var["name"]: var for var in container(objects, "Deployment", f"{FULLNAME}-worker")["env"]}
        return float(env["KUBECRAWL_DRAIN_TIMEOUT_SECONDS"]["value"]), _grace(objects, "worker")

    assert drain_and_grace() == (80.0, 90)
    assert drain_and_grace("--set", "worker.terminationGracePeriodSeconds=300") == (290.0, 300)
    assert drain_and_grace("--set", "worker.terminationGracePeriodSeconds=5") == (1.0, 5)


def test_operator_grace_period_covers_a_pool_daemons_stop(helm: Helm) -> None:
    def grace(*args: str) -> int:
        return _grace(index(render(helm, *args)), "operator")

    # A pool's task may finish its poll, then is cancelled; then kopf's cleanup runs.
    stop = supervising.STOP_TIMEOUT_SECONDS
    assert stop + 5 > 30  # with the cleanup, longer than Kubernetes' default grace period: why the chart sets one
    assert grace() == 45
    assert grace() >= stop + 5  # room for the cleanup handlers
    assert grace("--set", "operator.terminationGracePeriodSeconds=90") == 90


def test_workers_and_api_get_their_pod_name_from_the_downward_api(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for name in (f"{FULLNAME}-worker", f"{FULLNAME}-api"):
        env = {var["name"]: var for var in container(default_objects, "Deployment", name)["env"]}
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_connection_urls_come_from_existing_secrets_only(all_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert not [key for key in all_objects if key[0] == "Secret"]
    expected = {
        "KUBECRAWL_DATABASE_URL": {"name": "kubecrawl-database", "key": "url"},
        "KUBECRAWL_RABBITMQ_URL": {"name": "kubecrawl-rabbitmq", "key": "url"},
        "KUBECRAWL_RABBITMQ_MANAGEMENT_URL": {"name": "kubecrawl-rabbitmq", "key": "management-url"},
    }
    seen = set()
    for spec in pod_specs(all_objects).values():
        for var in spec["containers"][0].get("env", []):
            if var["name"] in expected:
                assert var["valueFrom"] == {"secretKeyRef": expected[var["name"]]}, var
                seen.add(var["name"])
    assert seen == set(expected)
    config = all_objects["ConfigMap", f"{FULLNAME}-config"]["data"]
    assert not [value for value in config.values() if "@" in value and "://" in value]


def test_every_kubecrawl_variable_the_chart_sets_is_a_setting(
    all_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    known = setting_variables()
    for name, spec in pod_specs(all_objects).items():
        env = environment(all_objects, spec["containers"][0])
        unknown = {var for var in env if var.startswith("KUBECRAWL_") and var not in known}
        assert not unknown, f"{name} sets variables no kubecrawl setting reads: {sorted(unknown)}"


def test_rendered_settings_parse_to_the_values_given(
    all_objects: dict[tuple[str, str], dict[str, Any]], clean_env: pytest.MonkeyPatch
) -> None:
    for var, value in environment(all_objects, container(all_objects, "Deployment", f"{FULLNAME}-worker")).items():
        clean_env.setenv(var, value)
    settings = Settings()
    assert settings.log_level == "DEBUG"
    assert settings.allowed_private_networks == [ip_network("10.20.0.0/16"), ip_network("fd00::/8")]
    assert settings.prefetch_count == 8
    assert settings.fetch.timeout_seconds == 30.5
    assert settings.fetch.max_body_bytes == 4194304
    assert settings.fetch.user_agent == "acme-bot/1.0"
    assert settings.fetch.proxy_url is not None
    assert settings.fetch.proxy_url.get_secret_value() == "http://egress-proxy.net:3128"
    assert settings.retry.max_attempts == 7
    assert settings.pod_name == "pod-0"

    for var, value in environment(all_objects, container(all_objects, "Deployment", f"{FULLNAME}-operator")).items():
        clean_env.setenv(var, value)
    operator = OperatorSettings()
    assert operator.image == f"ghcr.io/kubecrawl/kubecrawl@{DIGEST}"
    assert operator.status_interval_seconds == 10
    assert operator.trigger_api_url == "http://api.example:8000"
    assert operator.trigger_service_account == "trigger"
    assert operator.rabbitmq_management_url is not None


def test_chart_defaults_are_the_code_defaults(
    default_objects: dict[tuple[str, str], dict[str, Any]], clean_env: pytest.MonkeyPatch
) -> None:
    code_defaults = Settings().model_dump(exclude={"database_url", "rabbitmq_url"})
    # The chart's pool is the chart's (test_worker_pool_owns_the_worker_replicas), not a setting with a default.
    chart_only = {"image", "rabbitmq_management_url", "worker_pool"}
    operator_defaults = OperatorSettings().model_dump(exclude=chart_only)
    for var, value in environment(
        default_objects, container(default_objects, "Deployment", f"{FULLNAME}-worker")
    ).items():
        clean_env.setenv(var, value)
    # The drain timeout is derived, not a default: 10 s short of the worker's grace period (90 s by default).
    derived = {"pod_name": "pod-0", "drain_timeout_seconds": 80.0}
    assert Settings().model_dump(exclude={"database_url", "rabbitmq_url"}) == {**code_defaults, **derived}
    for var, value in environment(
        default_objects, container(default_objects, "Deployment", f"{FULLNAME}-operator")
    ).items():
        clean_env.setenv(var, value)
    assert OperatorSettings().model_dump(exclude=chart_only) == operator_defaults


def test_operator_calls_the_api_through_its_service(
    helm: Helm, default_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    env = {
        var["name"]: var.get("value") for var in container(default_objects, "Deployment", f"{FULLNAME}-operator")["env"]
    }
    # Namespace-qualified: trigger pods run in the CrawlSites' namespaces.
    assert env["KUBECRAWL_API_URL"] == f"http://{FULLNAME}-api.{NAMESPACE}.svc:8000"
    assert ("Service", f"{FULLNAME}-api") in default_objects
    assert env["KUBECRAWL_OPERATOR_IMAGE"] == "ghcr.io/kubecrawl/kubecrawl:0.1.0"
    assert "KUBECRAWL_RABBITMQ_MANAGEMENT_URL" not in env
    plain = index(render(helm, "--set", "rabbitmq.managementUrl=http://rabbitmq.broker:15672"))
    env = {var["name"]: var.get("value") for var in container(plain, "Deployment", f"{FULLNAME}-operator")["env"]}
    assert env["KUBECRAWL_RABBITMQ_MANAGEMENT_URL"] == "http://rabbitmq.broker:15672"


def test_migration_hook_runs_before_install_and_upgrade_using_nothing_the_chart_creates(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = default_objects["Job", f"{FULLNAME}-migrate"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]["template"]["spec"]
    # On install the hook runs before the release's ServiceAccount and ConfigMap exist.
    assert "serviceAccountName" not in spec
    box = spec["containers"][0]
    assert "envFrom" not in box
    assert box["args"] == ["migrate"]
    assert spec["restartPolicy"] == "Never"


def test_extra_volumes_are_mounted_in_every_pod(all_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    specs = pod_specs(all_objects)
    assert set(specs) == {f"{FULLNAME}-{role}" for role in ("api", "worker", "operator", "migrate")}
    for name, spec in specs.items():
        assert CA_VOLUME in spec["volumes"], name
        assert CA_MOUNT in spec["containers"][0]["volumeMounts"], name
        # /tmp stays: the root filesystem is read-only.
        assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"], name


def test_migration_job_takes_scheduling_environment_and_its_own_hook_service_account(
    all_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = all_objects["Job", f"{FULLNAME}-migrate"]
    spec = job["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert job["spec"]["template"]["metadata"]["annotations"] == {"team": "db"}
    assert {"name": "EXTRA", "value": "1"} in spec["containers"][0]["env"]
    account = all_objects["ServiceAccount", f"{FULLNAME}-migrate"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False
    annotations = account["metadata"]["annotations"]
    # Created before the Job (the release's own objects do not exist yet on install), deleted after it.
    assert annotations["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(annotations["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert annotations["iam.example/role"] == "migrate"


def test_ingress_and_http_route_send_traffic_to_the_api_service(
    helm: Helm, all_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    service = all_objects["Service", f"{FULLNAME}-api"]
    ingress = all_objects["Ingress", f"{FULLNAME}-api"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "kubecrawl-tls", "hosts": ["kubecrawl.example.com"]}]
    [rule] = ingress["rules"]
    assert rule["host"] == "kubecrawl.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    route = all_objects["HTTPRoute", f"{FULLNAME}-api"]["spec"]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["hostnames"] == ["kubecrawl.example.com"]
    [backend_ref] = route["rules"][0]["backendRefs"]
    assert (backend_ref["name"], backend_ref["port"]) == (
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
    )
    # Switched on without where to route: refused, not an object that routes nowhere.
    for args, message in (
        (("--set", "api.ingress.enabled=true"), "api.ingress.hosts"),
        (("--set", "api.httpRoute.enabled=true"), "api.httpRoute.parentRefs"),
    ):
        result = helm.run("template", RELEASE, str(CHART), *args, check=False)
        assert result.returncode != 0
        assert message in result.stderr


def chart_pool(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """KUBECRAWL_OPERATOR_WORKER_POOL: the CrawlWorkerPool the operator applies at start-up."""
    env = {var["name"]: var.get("value") for var in container(objects, "Deployment", f"{FULLNAME}-operator")["env"]}
    pool: dict[str, Any] = json.loads(env["KUBECRAWL_OPERATOR_WORKER_POOL"])
    return pool


def test_worker_pool_owns_the_worker_replicas(
    helm: Helm, default_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    pool = chart_pool(default_objects)
    assert (pool["name"], pool["namespace"]) == (f"{FULLNAME}-worker", NAMESPACE)
    assert pool["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert pool["spec"] == {
        "deploymentName": f"{FULLNAME}-worker",
        "queue": "kubecrawl.pages",
        "targetPerReplica": 20,
        "minReplicas": 1,
        "maxReplicas": 10,
        "paused": False,
    }
    # Parsed the way the operator reads its settings.
    assert OperatorSettings(worker_pool=pool).worker_pool == ChartPool.model_validate(pool)
    # Left out, so `helm upgrade` never resets what the pool has set.
    assert "replicas" not in default_objects["Deployment", f"{FULLNAME}-worker"]["spec"]
    without = index(render(helm, "--set", "worker.pool.enabled=false"))
    # Off: a null spec, so the operator deletes the pool it made while the pool was on.
    assert chart_pool(without)["spec"] is None
    assert without["Deployment", f"{FULLNAME}-worker"]["spec"]["replicas"] == 2


def test_worker_pool_values_mirror_the_crawlworkerpool_crd() -> None:
    crd = yaml.safe_load((CHART / "files" / "crds" / "crawlworkerpool.yaml").read_text())
    crd_spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    schema = json.loads((CHART / "values.schema.json").read_text())
    values_pool = schema["properties"]["worker"]["properties"]["pool"]["properties"]

    def bounds(prop: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {k: prop[k] for k in ("minimum", "maximum", "minLength", "maxLength") if k in prop}
        if prop.get("exclusiveMaximum") is True:  # OpenAPI 3.0 → JSON Schema draft 7
            found["exclusiveMaximum"] = found.pop("maximum")
        elif "exclusiveMaximum" in prop:
            found["exclusiveMaximum"] = prop["exclusiveMaximum"]
        return found

    assert set(values_pool) - {"enabled"} == set(crd_spec) - {"deploymentName"}
    for key, prop in values_pool.items():
        if key == "enabled":
            continue
        assert bounds(prop) == bounds(crd_spec[key]), key
        for sub, sub_prop in prop.get("properties", {}).items():
            assert bounds(sub_prop) == bounds(crd_spec[key]["properties"][sub]), f"{key}.{sub}"
        assert set(prop.get("properties", {})) == set(crd_spec[key].get("properties", {})), key


# ---------------------------------------------------------------------------------------- one source of truth


def test_deploy_files_are_links_to_the_charts_copies() -> None:
    for link, target in LINKS.items():
        path = ROOT / link
        assert path.is_symlink(), f"{link} must link to {target}, not be a copy"
        assert path.resolve() == (ROOT / target).resolve(), link
    chart_crds = {p.name for p in (CHART / "files" / "crds").iterdir()}
    assert chart_crds == {p.name for p in (ROOT / "deploy" / "crds").iterdir()}


def test_chart_renders_the_crd_files_kept_on_uninstall(
    helm: Helm, default_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    # Release objects, not helm's crds/ directory (installed once, never upgraded).
    assert not (CHART / "crds").exists()
    for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        rendered = default_objects["CustomResourceDefinition", crd["metadata"]["name"]]
        assert rendered["spec"] == crd["spec"]
        assert crd["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
        # helm uninstall leaves them: deleting a CRD deletes every CrawlSite of the cluster.
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # A second release in the same cluster leaves them to the first.
    without = index(render(helm, "--set", "crds.install=false"))
    assert not [key for key in without if key[0] == "CustomResourceDefinition"]


def test_operator_cluster_role_has_exactly_the_deploy_rbac_rules(
    default_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deploy_rbac = yaml.safe_load((ROOT / "deploy" / "rbac" / "clusterrole.yaml").read_text())
    assert default_objects["ClusterRole", f"{FULLNAME}-operator"]["rules"] == deploy_rbac["rules"]
    binding = default_objects["ClusterRoleBinding", f"{FULLNAME}-operator"]
    assert binding["roleRef"]["name"] == f"{FULLNAME}-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}]
    scaling = yaml.safe_load((ROOT / "deploy" / "rbac" / "scaling-clusterrole.yaml").read_text())["rules"]
    role = default_objects["Role", f"{NAMESPACE}/{FULLNAME}-operator-scaling"]["rules"]
    # The same rules, the worker Deployment named on /scale.
    assert [{k: v for k, v in rule.items() if k != "resourceNames"} for rule in role] == scaling
    assert [rule.get("resourceNames") for rule in role if "deployments/scale" in rule["resources"]] == [
        [f"{FULLNAME}-worker"]
    ]
    assert not [
        rule for rule in default_objects["ClusterRole", f"{FULLNAME}-operator"]["rules"] if "pods" in rule["resources"]
    ]


def test_worker_egress_policy_denies_private_and_metadata_ranges_and_the_api_server_accepts_it(
    cluster: Cluster, helm: Helm, all_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    assert ("NetworkPolicy", f"{FULLNAME}-worker-egress") not in index(
        render(helm, "--set", "networkPolicy.workerEgress.enabled=false")
    )
    assert not [key for key in index(render(helm, "--set", "networkPolicy.enabled=false")) if key[0] == "NetworkPolicy"]
    policy = all_objects["NetworkPolicy", f"{FULLNAME}-worker-egress"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"] == all_objects["Deployment", f"{FULLNAME}-worker"]["spec"]["selector"]
    rules = policy["spec"]["egress"]
    internet = next(rule for rule in rules if any("ipBlock" in peer for peer in rule.get("to", ())))
    v4 = next(peer["ipBlock"] for peer in internet["to"] if peer["ipBlock"]["cidr"] == "0.0.0.0/0")
    metadata, cluster_pods = ip_network("169.254.169.254/32"), ip_network("10.244.0.0/16")
    assert any(metadata.subnet_of(ip_network(c)) for c in v4["except"])
    assert any(cluster_pods.subnet_of(ip_network(c)) for c in v4["except"])
    assert {"port": 5672} in [port for rule in rules for port in rule.get("ports", ())]  # the `to` peers
    assert {"port": 53, "protocol": "UDP"} in rules[0]["ports"]
    # The API server validates it (except ranges inside the CIDR, peers, ports); no CNI here enforces it.
    namespace = f"np-{uuid.uuid4().hex[:6]}"
    cluster.admin.run("create", "namespace", namespace)
    try:
        cluster.admin.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(policy))
    finally:
        cluster.admin.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_default_network_policies_keep_an_install_working_and_the_api_server_accepts_them(
    cluster: Cluster, helm: Helm, default_objects: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """On by default without breaking installs: every role keeps its port open to everyone (apiFrom and metricsFrom
    empty); the workers reach DNS, the internet but private/metadata ranges, the broker's and the database's ports
    at any address (their addresses live in Secrets), config.allowedPrivateNetworks, and the egress proxy's port."""
    policies = {name: obj for (kind, name), obj in default_objects.items() if kind == "NetworkPolicy"}
    api = policies[f"{FULLNAME}-api"]["spec"]
    assert api["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]  # from anyone, its port only
    for role in ("worker", "operator"):
        assert policies[f"{FULLNAME}-{role}"]["spec"]["ingress"] == [
            {"ports": [{"port": "metrics", "protocol": "TCP"}]}
        ]
    egress = policies[f"{FULLNAME}-worker-egress"]["spec"]["egress"]
    open_ports = {port["port"] for rule in egress if "to" not in rule for port in rule["ports"]}
    assert open_ports == {53, 5432, 5671, 5672, 27017}
    v4 = next(
        peer["ipBlock"] for rule in egress for peer in rule.get("to", ()) if peer["ipBlock"]["cidr"] == "0.0.0.0/0"
    )
    for private in ("10.96.0.1/32", "169.254.169.254/32", "192.168.1.1/32", "172.17.0.1/32"):
        assert any(ip_network(private).subnet_of(ip_network(c)) for c in v4["except"]), private

    opened = index(
        render(
            helm,
            "--set-json",
            'config.allowedPrivateNetworks=["10.20.0.0/16"]',
            "--set",
            "config.fetch.proxyUrl=http://squid.proxy:3128",
        )
    )["NetworkPolicy", f"{FULLNAME}-worker-egress"]["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]} in opened
    assert {"ports": [{"port": 3128, "protocol": "TCP"}]} in opened

    # The API server validates every default policy; no CNI here enforces them (docs/security.md).
    namespace = f"np-{uuid.uuid4().hex[:6]}"
    cluster.admin.run("create", "namespace", namespace)
    try:
        for policy in policies.values():
            cluster.admin.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(policy))
    finally:
        cluster.admin.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_reviewing_api_account_keeps_the_workload_account_annotations(helm: Helm) -> None:
    role = "iam/role"
    objects = index(render(helm, "--set", f"serviceAccount.annotations.{role}=arn:db"))
    assert objects["ServiceAccount", f"{FULLNAME}-api"]["metadata"]["annotations"] == {role: "arn:db"}
    assert objects["ServiceAccount", FULLNAME]["metadata"]["annotations"] == {role: "arn:db"}


def test_operator_rights_stop_at_its_watched_and_pool_namespaces(cluster: Cluster, helm: Helm) -> None:
    """The chart's RBAC for an operator watching crawl-a only, applied to the control plane: `kubectl auth can-i`
    as its ServiceAccount. CronJobs only where it watches CrawlSites; Pods and /scale only in the pool namespace."""
    suffix = uuid.uuid4().hex[:6]
    release, home, watched, elsewhere = (f"{x}-{suffix}" for x in ("lp", "lp-home", "lp-watched", "lp-other"))
    for namespace in (home, watched, elsewhere):
        cluster.admin.run("create", "namespace", namespace)
    rbac_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    manifest = helm.run(
        "template", release, str(CHART), "--namespace", home, "--set", f"operator.namespaces={{{watched}}}"
    ).stdout
    objects = [obj for obj in objects_of(manifest) if obj["kind"] in rbac_kinds]
    for obj in objects:
        if obj["kind"] in {"ServiceAccount", "Role", "RoleBinding"}:  # helm leaves the release namespace implicit
            obj["metadata"].setdefault("namespace", home)
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.admin.run("apply", "-f", "-", stdin=listed)
    operator = f"system:serviceaccount:{home}:{release}-kubecrawl-operator"

    def can(*args: str) -> bool:
        return cluster.admin.run("auth", "can-i", *args, f"--as={operator}", check=False).stdout.strip() == "yes"

    try:
        assert can("create", "cronjobs.batch", "-n", watched)
        assert not can("create", "cronjobs.batch", "-n", elsewhere)
        assert not can("create", "cronjobs.batch", "-n", "kube-system")
        assert can("patch", "pods", "-n", home)  # pod-deletion-cost on the worker pods
        for namespace in (watched, elsewhere, "kube-system"):
            assert not can("patch", "pods", "-n", namespace), namespace
            assert not can("list", "pods", "-n", namespace), namespace
        assert can("patch", f"deployments.apps/{release}-kubecrawl-worker", "--subresource=scale", "-n", home)
        assert not can("patch", f"deployments.apps/{release}-kubecrawl-api", "--subresource=scale", "-n", home)
        assert not can("patch", "deployments.apps", "--subresource=scale", "-n", watched)
        assert not can("get", "secrets", "-n", home)
        assert not can("create", "pods", "-n", home)
    finally:
        cluster.admin.run("delete", "-f", "-", stdin=listed, check=False)
        for namespace in (home, watched, elsewhere):
            cluster.admin.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_prometheus_rule_renders_the_rules_file(all_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    text = (ROOT / "deploy" / "prometheus" / "rules.yaml").read_text()
    text = text.replace(
        "https://github.com/kubecrawl/kubecrawl/blob/main/docs/operations.md", "https://runbooks.example/kubecrawl"
    )
    rule = all_objects["PrometheusRule", FULLNAME]
    assert rule["spec"]["groups"] == yaml.safe_load(text)["groups"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_service_monitor_scrapes_every_role(all_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    monitor = all_objects["ServiceMonitor", FULLNAME]["spec"]
    ports = {endpoint["port"] for endpoint in monitor["endpoints"]}
    services = [obj for (kind, _), obj in all_objects.items() if kind == "Service"]
    assert len(services) == 3
    for service in services:
        labels = service["metadata"]["labels"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items()
        assert {port["name"] for port in service["spec"]["ports"]} & ports


def test_dashboard_config_map_holds_the_dashboard(default_objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    config_map = default_objects["ConfigMap", f"{FULLNAME}-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "kubecrawl.json").read_text())
    rendered = json.loads(config_map["data"][f"kubecrawl-{RELEASE}.json"])
    assert {k: v for k, v in rendered.items() if k not in {"uid", "title"}} == {
        k: v for k, v in dashboard.items() if k not in {"uid", "title"}
    }
    assert rendered["title"] == f"kubecrawl ({NAMESPACE}/{RELEASE})"


def test_two_releases_in_one_namespace_get_dashboards_of_their_own(helm: Helm) -> None:
    uids = set()
    for release in ("first", "second"):
        objects = objects_of(helm.run("template", release, str(CHART), "--namespace", NAMESPACE).stdout)
        [config_map] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
        [(name, text)] = config_map["data"].items()
        dashboard = json.loads(text)
        assert len(dashboard["uid"]) <= 40  # Grafana's limit
        uids.add((name, dashboard["uid"]))
    assert len({name for name, _ in uids}) == len({uid for _, uid in uids}) == 2
