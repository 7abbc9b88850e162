"""The pieces an e2e run (and bench/operator_apply.py, bench/scaling.py) puts together around the local control
plane: kubectl, the operator's least-privilege identity from deploy/rbac, and the kubecrawl processes (API, worker,
operator), and the handles the e2e fixtures hand to tests (``Cluster``, ``Services``, ``NodeCluster``).

Every process is a real ``kubecrawl`` subprocess with its own log file; nothing is faked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import ControlPlane, Node, free_port
from tests.support.polling import PollTimeout, eventually_sync

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
RBAC = ROOT / "deploy" / "rbac"
EXAMPLES = ROOT / "examples"
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
OPERATOR_NAMESPACE = "kubecrawl"
OPERATOR_ACCOUNT = "kubecrawl-operator"


class KubectlFailed(AssertionError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        self.result = result


@dataclass(frozen=True)
class Kube:
    """kubectl against one kubeconfig; sync for fixtures, async (``a*``) for tests that keep their loop running."""

    kubeconfig: Path

    def _command(self, args: tuple[str, ...]) -> list[str]:
        return [KUBECTL, f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", *args]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._command(args), input=stdin, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlFailed(list(args), result)
        return result

    def json(self, *args: str) -> dict[str, Any]:
        """``kubectl ARGS`` (which must ask for ``-o json``), parsed."""
        parsed: dict[str, Any] = json.loads(self.run(*args).stdout)
        return parsed

    async def arun(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            *self._command(args),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        result = subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise KubectlFailed(list(args), result)
        return result

    async def aget(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        args = ["get", kind, name, "-o", "json", *(["-n", namespace] if namespace else [])]
        result = await self.arun(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise KubectlFailed(args, result)
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    async def alist(self, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", ",".join(selector)] if selector else [])]
        items: list[dict[str, Any]] = json.loads((await self.arun(*args)).stdout)["items"]
        return items

    async def aapply(self, manifest: dict[str, Any] | str, namespace: str, *flags: str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        await self.arun("apply", "-n", namespace, *flags, "-f", "-", stdin=text)

    async def aevents(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind=CrawlSite"
        args = ("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads((await self.arun(*args)).stdout)["items"]
        return items


def install_crds(kube: Kube) -> None:
    """Every CRD in deploy/crds (the files the chart renders as release objects) with kubectl, as a cluster admin
    who manages CRDs apart from the chart does (crds.install=false): the session's operator process serves all of
    them. A chart installed into this cluster must then set crds.install=false (tests/e2e/test_helm.py installs
    into a control plane of its own)."""
    kube.run("apply", "--server-side", "-f", str(CRDS))
    kube.run("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/name=kubecrawl", "--timeout=60s")


def operator_kubeconfig(kube: Kube, server: str, ca_cert: Path, path: Path) -> Path:
    """Apply deploy/rbac (ServiceAccount, ClusterRole, ClusterRoleBinding) and write a kubeconfig holding a token
    of that ServiceAccount: the operator then has exactly the ClusterRole's rights, as in a cluster."""
    kube.run("create", "namespace", OPERATOR_NAMESPACE, check=False)
    kube.run("apply", "-f", str(RBAC))
    return service_account_kubeconfig(kube, server, ca_cert, OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, path)


def service_account_kubeconfig(
    kube: Kube, server: str, ca_cert: Path, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig holding a token of ServiceAccount ``namespace/account``: what a pod running as it could do."""
    # 2 h covers any test session; TokenRequest is served by the API server itself (no controller involved).
    token = kube.run("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "e2e", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def http_json(url: str, *, method: str = "GET", body: object | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return int(response.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


class Process:
    """``python -m kubecrawl.cli ARGS`` with its output in ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubecrawl.cli", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, ready: Callable[[], object], *, timeout: float, what: str) -> None:
        """Poll ``ready`` (tests/support/polling.py) while the process runs; its exit or the deadline fails with
        the end of its log."""

        def running_and_ready() -> object:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{what}: process exited {self.proc.returncode}; log:\n{self.output()[-4000:]}")
            return ready()

        try:
            eventually_sync(running_and_ready, timeout=timeout, interval=0.1, what=what)
        except PollTimeout as exc:
            raise PollTimeout(f"{exc}; log:\n{self.output()[-4000:]}") from exc

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill would: no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running process (from /proc; clock ticks → seconds)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def service_env(database_url: str, rabbitmq_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECRAWL_", "KUBERNETES_"))}
    env.update(
        KUBECRAWL_DATABASE_URL=database_url,
        KUBECRAWL_RABBITMQ_URL=rabbitmq_url,
        KUBECRAWL_ALLOW_PRIVATE_TARGETS="true",  # the crawled test sites live on 127.0.0.1
        KUBECRAWL_LOG_FORMAT="json",
        KUBECRAWL_LOG_LEVEL="INFO",
        **extra,
    )
    return env


def start_api(env: dict[str, str], port: int, log_path: Path) -> Process:
    api = Process(["api", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
    api.start()
    api.wait_ready(lambda: http_status(f"http://127.0.0.1:{port}/health/ready") == 200, timeout=90, what="API ready")
    return api


def start_worker(env: dict[str, str], log_path: Path) -> Process:
    worker = Process(["worker", "--metrics-port", "0"], env, log_path)
    worker.start()
    worker.wait_ready(lambda: "worker_started" in worker.output(), timeout=90, what="worker_started")
    return worker


class OperatorProcess(Process):
    """``kubecrawl operator`` as the least-privilege identity; ``restart`` kills it without warning first."""

    def __init__(self, kubeconfig: Path, api_url: str, liveness_port: int, log_path: Path, **extra_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECRAWL_", "KUBERNETES_"))}
        env.update(
            KUBECONFIG=str(kubeconfig),
            KUBECRAWL_API_URL=api_url,
            KUBECRAWL_LOG_FORMAT="json",
            KUBECRAWL_OPERATOR_IMAGE="kubecrawl:e2e",
            **extra_env,
        )
        self.liveness = f"http://127.0.0.1:{liveness_port}/healthz"
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        super().__init__(["operator", "--liveness", self.liveness, "--metrics-port", str(metrics_port)], env, log_path)

    def start(self) -> None:
        super().start()
        self.wait_ready(lambda: http_status(self.liveness) == 200, timeout=60, what="operator liveness")

    def restart(self, **env: str) -> None:
        self.kill()
        self.env = {**self.env, **env}
        self.start()

    def problems(self, since: int = 0) -> list[str]:
        """Log lines since byte offset ``since`` that show missing RBAC rights or crashes. (A namespace being
        terminated also answers 403 Forbidden, without "User … cannot": that is not a missing right.)"""
        text = self.output()[since:]
        markers = ("is forbidden: User", "cannot list resource", "cannot watch resource")
        # A traceback is a crash only at error level: a library warning may carry one for an expected failure
        # (aiormq logs the closed socket when the tests cut the broker off).
        return [
            line
            for line in text.splitlines()
            if any(m in line for m in markers) or ("Traceback" in line and _level(line) in ("error", "critical"))
        ]


def _level(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return "error"  # not one of our JSON lines (a raw traceback on stderr): treat as a crash
    return str(record.get("level", "error")) if isinstance(record, dict) else "error"


def stop_all(*processes: Process) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.stop()


@dataclass
class Cluster:
    """The session's local control plane and kubectl as its administrator."""

    controlplane: ControlPlane
    admin: Kube


@dataclass
class Services:
    """A real API and worker on the session's PostgreSQL and RabbitMQ."""

    api_url: str
    api: Process
    worker: Process


@dataclass
class NodeCluster:
    """The control plane plus a real node: Pods run the image built from the repository's Dockerfile."""

    node: Node
    admin: Kube
    host_ip: str  # where Pods reach servers on this machine (the node's bridge address)
    image_repository: str
    image_tag: str
