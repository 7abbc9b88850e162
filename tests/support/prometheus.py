"""A private Prometheus (Debian's `prometheus` binary) that scrapes the Pods of a namespace, configured from the
chart's own ServiceMonitor the way the Prometheus Operator would turn it into a scrape configuration.

Only what the chart's ServiceMonitor uses is translated (``selector.matchLabels``, ``namespaceSelector.matchNames``,
``endpoints[].port/path/honorLabels``, ``targetLabels``), plus the target labels the Prometheus Operator always adds
(``namespace``, ``service``, ``pod``, ``container``, ``endpoint``); an unknown field fails loudly.

Debian builds Prometheus without its Kubernetes service discovery, so :class:`EndpointsDiscovery` does that part:
it lists the namespace's Endpoints, Services and Pods through the API server every few seconds and hands them to
Prometheus as ``file_sd`` targets carrying the same ``__meta_kubernetes_*`` labels that ``role: endpoints`` gives.
The relabelling (the part the ServiceMonitor decides) is then Prometheus' own.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.polling import ANY_ERROR, eventually_sync
from tests.support.servers import ServerUnavailable, free_port

_KNOWN_SPEC = {"selector", "namespaceSelector", "endpoints", "targetLabels"}
_KNOWN_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "honorLabels"}


def sanitise(label: str) -> str:
    """A Kubernetes label name as Prometheus meta labels spell it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_configs(service_monitor: dict[str, Any], targets_file: Path, *, interval: str) -> list[dict[str, Any]]:
    """The scrape configuration the Prometheus Operator generates for ``service_monitor`` (role ``endpoints``),
    every endpoint scraped every ``interval`` (the ServiceMonitor's own interval is minutes, too slow for a test)."""
    meta, spec = service_monitor["metadata"], service_monitor["spec"]
    unknown = set(spec) - _KNOWN_SPEC
    if unknown:
        raise ValueError(f"ServiceMonitor fields this translation does not know: {sorted(unknown)}")
    keep = [
        {
            "action": "keep",
            "source_labels": [f"__meta_kubernetes_service_label_{sanitise(key)}"],
            "regex": re.escape(str(value)),
        }
        for key, value in spec["selector"].get("matchLabels", {}).items()
    ]
    standard = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    targets = [
        {"source_labels": [f"__meta_kubernetes_service_label_{sanitise(label)}"], "target_label": sanitise(label)}
        for label in spec.get("targetLabels", [])
    ]
    configs = []
    for i, endpoint in enumerate(spec["endpoints"]):
        unknown = set(endpoint) - _KNOWN_ENDPOINT
        if unknown:
            raise ValueError(f"ServiceMonitor endpoint fields this translation does not know: {sorted(unknown)}")
        port = endpoint["port"]
        configs.append(
            {
                "job_name": f"serviceMonitor/{meta.get('namespace', '')}/{meta['name']}/{i}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "scrape_interval": interval,
                "scrape_timeout": interval,
                # What `kubernetes_sd_configs: [{role: endpoints, namespaces: {names: [...]}}]` would find.
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "2s"}],
                "relabel_configs": [
                    *keep,
                    {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port},
                    *standard,
                    *targets,
                    {"target_label": "endpoint", "replacement": port},
                ],
            }
        )
    return configs


class EndpointsDiscovery:
    """``role: endpoints`` discovery for one namespace, written to a ``file_sd`` file until :meth:`stop`."""

    def __init__(self, kubectl_json: Callable[..., dict[str, Any]], namespace: str, path: Path) -> None:
        self._get = kubectl_json
        self.namespace = namespace
        self.path = path
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpoints-discovery", daemon=True)

    def targets(self) -> list[dict[str, Any]]:
        ns = self.namespace
        services = {s["metadata"]["name"]: s for s in self._get("get", "services", "-n", ns, "-o", "json")["items"]}
        pods = {p["metadata"]["name"]: p for p in self._get("get", "pods", "-n", ns, "-o", "json")["items"]}
        groups = []
        for endpoints in self._get("get", "endpoints", "-n", ns, "-o", "json")["items"]:
            service = services.get(endpoints["metadata"]["name"])
            if service is None:
                continue
            common = {"__meta_kubernetes_namespace": ns, "__meta_kubernetes_service_name": service["metadata"]["name"]}
            for key, value in (service["metadata"].get("labels") or {}).items():
                common[f"__meta_kubernetes_service_label_{sanitise(key)}"] = value
            for subset in endpoints.get("subsets") or []:
                for address in subset.get("addresses") or []:  # ready addresses only, as Prometheus keeps
                    pod = pods.get((address.get("targetRef") or {}).get("name", ""))
                    for port in subset.get("ports") or []:
                        labels = {**common, "__meta_kubernetes_endpoint_port_name": port.get("name", "")}
                        if pod is not None:
                            labels["__meta_kubernetes_pod_name"] = pod["metadata"]["name"]
                            labels["__meta_kubernetes_pod_container_name"] = _container_of(pod, port["port"])
                        groups.append({"targets": [f"{address['ip']}:{port['port']}"], "labels": labels})
        return groups

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.targets()))
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stopped.wait(2.0):
            with contextlib.suppress(Exception):  # the API server busy for a moment: the next round catches up
                self.write()

    def start(self) -> EndpointsDiscovery:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("[]")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _container_of(pod: dict[str, Any], port: int) -> str:
    for container in pod["spec"]["containers"]:
        if any(p.get("containerPort") == port for p in container.get("ports") or []):
            return str(container["name"])
    return ""


def fast_rules(rules_file: Path, destination: Path, *, for_seconds: int) -> Path:
    """The rules with every alert's ``for`` shortened (expressions, labels and annotations unchanged), so an alert
    the test provokes fires within the test."""
    rules = yaml.safe_load(rules_file.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = f"{for_seconds}s"
    destination.write_text(yaml.safe_dump(rules, sort_keys=False))
    return destination


class PrometheusServer:
    def __init__(self, base_dir: Path, scrape: list[dict[str, Any]], rule_files: list[Path], *, interval: str) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self._config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": scrape,
        }
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServerUnavailable("prometheus is missing: scripts/install-deps installs Debian's prometheus")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config, sort_keys=False))
        log = (self.base_dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.base_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        eventually_sync(self._ready, timeout=60, interval=0.2, what="Prometheus ready", retry_on=ANY_ERROR)
        return self

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServerUnavailable(f"prometheus exited: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        path = self.base_dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expression, time=str(time.time()))["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def firing(self, alert: str) -> list[dict[str, Any]]:
        alerts = self.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == alert and a["state"] == "firing"]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
