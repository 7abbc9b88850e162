"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver and kube-controller-manager.

Binaries come from ``tools/controlplane/build`` (pinned Go modules, cached outside the work tree). Everything a
run needs lives under one directory: ``pki/`` (CA, serving and client certificates, service-account keys, made with
the ``openssl`` CLI), ``etcd/`` (data), ``logs/<process>.log``, ``<process>.pid``, ``state.json`` and the admin
``kubeconfig``. There is no scheduler and no kubelet: Pods stay Pending, which is all an operator's tests need.

Command line (``tools/controlplane/up`` and ``down`` wrap the first two)::

    controlplane.py up DIR [--bin-dir BIN] [--timeout SECONDS]   # prints the admin kubeconfig path
    controlplane.py up DIR --node [--image OCI_ARCHIVE ...]       # plus a node: Pods run (see node.py)
    controlplane.py load-image DIR OCI_ARCHIVE                    # into a running node's containerd
    controlplane.py down DIR
    controlplane.py mint-user DIR NAME [--group GROUP ...]        # prints the user's kubeconfig path
    controlplane.py bind-cluster-role DIR USER CLUSTERROLE [--namespace NS]

Only the standard library is used, so the tools work without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build"
BIN_DIR_ENV = "KUBECRAWL_CONTROLPLANE_BIN"

#: Started in this order, stopped in reverse.
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager")
#: The controllers an operator's tests rely on (names as kube-controller-manager v1.36 lists them in --help).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "ttl-after-finished-controller",
    # Fills the rules of aggregated ClusterRoles: without it the built-in "view", "edit" and "admin" grant nothing.
    "clusterrole-aggregation-controller",
    # Publishes the kube-root-ca.crt ConfigMap into every namespace, as every real cluster has.
    "root-ca-certificate-publisher-controller",
)
#: Added when a node runs (``up --node``): without them the node keeps its not-ready taint, Services get no
#: endpoints, and Pods of a deleted node or a finished Job are never cleaned up.
NODE_CONTROLLERS = (
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
#: The ``kubernetes`` Service's ClusterIP: the first address of the range.
KUBERNETES_SERVICE_IP = "10.0.0.1"
#: The user the apiserver presents to kubelets (logs, exec, port-forward); bound to system:kubelet-api-admin.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
CLUSTER_NAME = "kubecrawl-test"
ADMIN_USER = "kubecrawl-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"  # bound to its roles by the bootstrap RBAC policy
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._@-]{0,252}$")

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${ENV::KUBECRAWL_SANS}
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started, reached or stopped."""


class BinaryMissing(ControlPlaneError):
    """A control-plane binary is not in the bin dir: run ``tools/controlplane/build``."""


def ensure_built() -> Path:
    """Build the pinned binaries if this checkout's pins have no cached build yet; return the bin dir.

    Progress goes to stderr; a cached build returns in milliseconds. Safe to call from concurrent runs.
    """
    return _run_build()


def pinned_bin_dir() -> Path:
    """The bin dir for this checkout's pins, whether or not it has been built."""
    return _run_build("--print-dir")


def _run_build(*args: str) -> Path:
    if not BUILD_SCRIPT.is_file():
        raise ControlPlaneError(f"{BUILD_SCRIPT} not found")
    result = subprocess.run([str(BUILD_SCRIPT), *args], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneError(f"tools/controlplane/build {' '.join(args)} failed (exit {result.returncode})")
    return Path(lines[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_name(kind: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{kind} {value!r} must match {_NAME_RE.pattern}")
    return value


def _openssl(*args: str, sans: Sequence[str] = ()) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ControlPlaneError("the openssl command is needed to make the control plane's certificates")
    # The config's [server] section reads its subjectAltName from the environment (expanded at load, every call).
    env = {**os.environ, "KUBECRAWL_SANS": ",".join(["IP:127.0.0.1", "DNS:localhost", *sans])}
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class Pki:
    """Certificates and keys under ``base_dir/pki``; all keys are ECDSA P-256 except the RSA service-account key."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def _config(self) -> Path:
        return self.directory / "openssl.cnf"

    def create(self, apiserver_sans: Sequence[str] = ()) -> None:
        """The CA, the service-account key pair and the apiserver's serving certificate (loopback + ``apiserver_sans``)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._config.write_text(_OPENSSL_CONFIG)
        _openssl(
            "req", "-x509", "-config", str(self._config), "-extensions", "ca", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(self.ca_key),
            "-out", str(self.ca_cert), "-days", "3650", "-subj", f"/CN={CLUSTER_NAME}-ca",
        )  # fmt: skip
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.sa_key))
        _openssl("pkey", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub))
        self.issue("apiserver", common_name="kube-apiserver", profile="server", sans=apiserver_sans)
        for key in (self.ca_key, self.sa_key):
            key.chmod(0o600)

    def issue(
        self,
        stem: str,
        *,
        common_name: str,
        organizations: Sequence[str] = (),
        profile: str = "client",
        sans: Sequence[str] = (),
    ) -> tuple[Path, Path]:
        """Sign a certificate for ``common_name`` with one O= per organization (Kubernetes: user and groups).

        A ``server`` certificate is valid for 127.0.0.1 and localhost plus ``sans`` (``IP:…``/``DNS:…`` entries).
        """
        cert, key, csr = (self.directory / f"{stem}{suffix}" for suffix in (".crt", ".key", ".csr"))
        subject = "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"
        _openssl(
            "req", "-new", "-config", str(self._config), "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "365", "-extfile", str(self._config),
            "-extensions", profile, "-out", str(cert), sans=sans,
        )  # fmt: skip
        csr.unlink()
        key.chmod(0o600)
        return cert, key


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, user: str, cert: Path, key: Path) -> Path:
    """A self-contained kubeconfig (certificates embedded), readable by kubectl, kopf and kubernetes_asyncio."""
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    context = f"{user}@{CLUSTER_NAME}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""\
apiVersion: v1
kind: Config
clusters:
- name: {q(CLUSTER_NAME)}
  cluster:
    server: {q(server)}
    certificate-authority-data: {q(_b64(ca_cert))}
users:
- name: {q(user)}
  user:
    client-certificate-data: {q(_b64(cert))}
    client-key-data: {q(_b64(key))}
contexts:
- name: {q(context)}
  context:
    cluster: {q(CLUSTER_NAME)}
    user: {q(user)}
current-context: {q(context)}
"""
    )
    path.chmod(0o600)
    return path


def pid_alive(pid: int, exe: str) -> bool:
    """True while ``pid`` is a live (not zombie) process running ``exe``: a recycled pid is never signalled."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"} and cmdline[0].decode(errors="replace") == exe


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # each process leads its own session (start_new_session), so this gets its children too


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Processes:
    """The background processes of one cluster directory. Each runs in its own session (it outlives ``up``) and is
    recorded by pid and executable in a JSON state file, so another process (``down``) can find and stop it; a wait
    fails fast, with the end of the log, when one of them exits."""

    def __init__(self, state_file: Path, logs_dir: Path, cwd: Path) -> None:
        self.state_file = state_file
        self.logs_dir = logs_dir
        self.cwd = cwd
        self._popen: dict[str, subprocess.Popen[bytes]] = {}

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        return state

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def update(self, **changes: Any) -> None:
        state = self.state()
        state.update(changes)
        self.save(state)

    def spawn(self, name: str, exe: Path, args: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``exe`` with its output appended to ``logs/NAME.log``; → its pid."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with (self.logs_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [str(exe), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the `up` process; stopped by pid (and group) in stop()
                cwd=self.cwd,
                env=env,
            )
        self._popen[name] = proc
        state = self.state()
        state.setdefault("processes", {})[name] = {"pid": proc.pid, "exe": str(exe)}
        self.save(state)
        return proc.pid

    def running(self) -> dict[str, int]:
        """Name → pid of the recorded processes that are still alive."""
        return {
            name: int(proc["pid"])
            for name, proc in self.state().get("processes", {}).items()
            if pid_alive(int(proc["pid"]), str(proc["exe"]))
        }

    def wait(self, what: str, deadline: float, ready: Callable[[], object]) -> None:
        """Poll ``ready`` (an exception counts as not ready) until it is true; fail when a process exits."""
        while True:
            for name, proc in self._popen.items():
                if proc.poll() is not None:
                    log = self.logs_dir / f"{name}.log"
                    raise ControlPlaneError(f"{name} exited with {proc.returncode}; {log} ends with:\n{tail(log)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}; logs are in {self.logs_dir}")
            time.sleep(0.2)

    def stop(self, name: str, timeout: float) -> None:
        """SIGTERM the process (and its group), SIGKILL after ``timeout``."""
        proc = self.state().get("processes", {}).get(name)
        if proc is None:
            return
        pid, exe = int(proc["pid"]), str(proc["exe"])
        popen = self._popen.pop(name, None)
        if pid_alive(pid, exe):
            signal_group(pid, signal.SIGTERM)
            if not self.wait_exit(pid, exe, popen, timeout):
                signal_group(pid, signal.SIGKILL)
                self.wait_exit(pid, exe, popen, timeout)
        elif popen is not None:
            popen.wait()

    @staticmethod
    def wait_exit(pid: int, exe: str, popen: subprocess.Popen[bytes] | None, timeout: float) -> bool:
        if popen is not None:  # our child: reap it
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(pid, exe):  # started by another process (e.g. `up`): its reaper is init
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager with all state under ``base_dir``.

    ``bin_dir`` is only needed by :meth:`start`; :meth:`stop`, :meth:`mint_user` and :meth:`bind_cluster_role`
    also work on a control plane that another process started in ``base_dir`` (that is how ``down`` works).
    """

    def __init__(
        self,
        base_dir: Path | str,
        bin_dir: Path | str | None = None,
        *,
        kubectl: str | None = None,
        advertise_address: str | None = None,
    ) -> None:
        """``advertise_address``: serve on that (non-loopback) address instead of 127.0.0.1, publish it as the
        ``kubernetes`` Service's endpoint and talk to kubelets: what a node needs (see node.py). ``None``: loopback
        only, no kubelet, as the operator's tests need."""
        self.base_dir = Path(base_dir).resolve()
        self.advertise_address = advertise_address
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else None
        self.pki = Pki(self.base_dir / "pki")
        self.logs_dir = self.base_dir / "logs"
        self.users_dir = self.base_dir / "users"
        self.etcd_dir = self.base_dir / "etcd"
        self.state_file = self.base_dir / "state.json"
        self.kubeconfig = self.base_dir / "kubeconfig"
        self._kubectl = kubectl
        self.processes = Processes(self.state_file, self.logs_dir, self.base_dir)

    @property
    def server(self) -> str:
        """The API server URL (``https://127.0.0.1:PORT``) of the running control plane."""
        server = self.processes.state().get("server")
        if not server:
            raise ControlPlaneError(f"no control plane has been started in {self.base_dir}")
        return str(server)

    def running_processes(self) -> dict[str, int]:
        """Name → pid of this control plane's processes that are still alive."""
        return self.processes.running()

    def is_running(self) -> bool:
        return bool(self.running_processes())

    # -- start ------------------------------------------------------------------------------------------------------

    def binary(self, name: str) -> Path:
        """Path of a built binary; :class:`BinaryMissing` (naming ``tools/controlplane/build``) if it is not there."""
        if self.bin_dir is None:
            raise BinaryMissing("no bin dir given: run tools/controlplane/build, it prints the bin dir")
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise BinaryMissing(
                f"{path} is missing: build the control plane first with tools/controlplane/build "
                "(it prints the bin dir to use)"
            )
        return path

    def start(self, timeout: float = 120.0) -> Path:
        """Start etcd, kube-apiserver and kube-controller-manager on free loopback ports; return the kubeconfig.

        Returns once /readyz answers and the controller manager has created the "default" ServiceAccount.
        A port taken between choosing and binding it is retried (twice) with new ports.
        """
        binaries = {name: self.binary(name) for name in PROCESSES}
        if self.is_running():
            raise ControlPlaneError(f"a control plane is already running in {self.base_dir}: stop it first (down)")
        for attempt in range(3):
            try:
                self._start_once(binaries, timeout)
            except ControlPlaneError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
            else:
                return self.kubeconfig
        raise AssertionError("unreachable")

    def _reset_dir(self) -> None:
        """Remove what a previous run left (only the entries this class creates), keep anything else in base_dir."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.pki.directory, self.etcd_dir, self.logs_dir, self.users_dir):
            shutil.rmtree(directory, ignore_errors=True)
        for file in (self.state_file, self.kubeconfig, *(self.base_dir / f"{name}.pid" for name in PROCESSES)):
            file.unlink(missing_ok=True)
        self.logs_dir.mkdir()

    def _start_once(self, binaries: dict[str, Path], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._reset_dir()
        node_mode = self.advertise_address is not None
        host = self.advertise_address or "127.0.0.1"
        self.pki.create(
            [
                f"IP:{host}",
                f"IP:{KUBERNETES_SERVICE_IP}",
                *(f"DNS:{name}" for name in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")),
                "DNS:kubernetes.default.svc.cluster.local",
            ]
            if node_mode
            else []
        )
        ports = {name: free_port() for name in ("etcd-client", "etcd-peer", "apiserver", "controller-manager")}
        server = f"https://{host}:{ports['apiserver']}"
        self.processes.save({"server": server, "ports": ports, "processes": {}})
        admin_cert, admin_key = self.pki.issue("admin", common_name=ADMIN_USER, organizations=["system:masters"])
        write_kubeconfig(
            self.kubeconfig, server=server, ca_cert=self.pki.ca_cert, user=ADMIN_USER, cert=admin_cert, key=admin_key
        )
        kcm_cert, kcm_key = self.pki.issue("kube-controller-manager", common_name=CONTROLLER_MANAGER_USER)
        kcm_kubeconfig = write_kubeconfig(
            self.pki.directory / "kube-controller-manager.kubeconfig",
            server=server,
            ca_cert=self.pki.ca_cert,
            user=CONTROLLER_MANAGER_USER,
            cert=kcm_cert,
            key=kcm_key,
        )

        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn("etcd", binaries["etcd"], [
            "--name=kubecrawl",
            f"--data-dir={self.etcd_dir}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubecrawl={peer_url}",
            "--unsafe-no-fsync=true",  # throw-away data: no fsync makes writes (and the tests) much faster
        ])  # fmt: skip
        self.processes.wait("etcd", deadline, lambda: b'"health":"true"' in self._get(f"{etcd_url}/health", tls=False))

        pki = self.pki
        if node_mode:
            kubelet_client_cert, kubelet_client_key = pki.issue("kubelet-client", common_name=KUBELET_CLIENT_USER)
            apiserver_node_args = [
                f"--advertise-address={host}",
                # Pods reach the apiserver through the "kubernetes" Service, whose endpoint is the advertised address.
                "--endpoint-reconciler-type=lease",
                # The node is named kubecrawl-node, which no resolver here knows: dial the kubelet by its InternalIP.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={kubelet_client_cert}",
                f"--kubelet-client-key={kubelet_client_key}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
            ]
        else:
            # A loopback address may not be published as the endpoint of the "kubernetes" Service; nothing in the
            # cluster could reach it anyway (no kubelet, no pods running), so do not try.
            apiserver_node_args = ["--endpoint-reconciler-type=none"]
        self._spawn("kube-apiserver", binaries["kube-apiserver"], [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={pki.directory}",
            f"--tls-cert-file={pki.directory / 'apiserver.crt'}",
            f"--tls-private-key-file={pki.directory / 'apiserver.key'}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            *apiserver_node_args,
            "--profiling=false",
        ])  # fmt: skip
        self.processes.wait("kube-apiserver /readyz", deadline, lambda: self._get(f"{server}/readyz") == b"ok")

        self._spawn("kube-controller-manager", binaries["kube-controller-manager"], [
            f"--kubeconfig={kcm_kubeconfig}",
            # No --authentication/--authorization-kubeconfig: the health port only has to answer /healthz (always
            # allowed), and with them the controller manager keeps logging that the apiserver has no front-proxy CA.
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--cert-dir={pki.directory / 'kube-controller-manager-serving'}",
            f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if node_mode else ()))}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=true",  # each controller acts with its own RBAC role, as in a cluster
            "--leader-elect=false",
            "--profiling=false",
        ])  # fmt: skip
        kcm_healthz = f"https://127.0.0.1:{ports['controller-manager']}/healthz"
        self.processes.wait(
            "kube-controller-manager /healthz", deadline, lambda: self._get(kcm_healthz, verify=False) == b"ok"
        )
        default_sa = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        self.processes.wait(
            "the default ServiceAccount (serviceaccount-controller)", deadline, lambda: bool(self._get(default_sa))
        )

    def _spawn(self, name: str, exe: Path, args: list[str]) -> None:
        pid = self.processes.spawn(name, exe, args)
        (self.base_dir / f"{name}.pid").write_text(f"{pid}\n")

    def _ssl_context(self, *, verify: bool = True) -> ssl.SSLContext:
        if not verify:  # the controller manager's health port serves a self-signed certificate
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.directory / "admin.crt"), str(self.pki.directory / "admin.key"))
        return context

    def _get(self, url: str, *, tls: bool = True, verify: bool = True) -> bytes:
        """GET as admin; b"" for any HTTP or connection error (the caller polls)."""
        context = self._ssl_context(verify=verify) if tls else None
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return bytes(response.read())
        except (urllib.error.URLError, OSError):
            return b""

    # -- stop -------------------------------------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each process (controller manager, apiserver, etcd), SIGKILL after ``timeout``; keeps the logs."""
        for name in reversed(PROCESSES):
            self.processes.stop(name, timeout)
            (self.base_dir / f"{name}.pid").unlink(missing_ok=True)
        if (leftover := self.running_processes()) != {}:
            raise ControlPlaneError(f"could not stop {leftover}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- identities -------------------------------------------------------------------------------------------------

    def mint_user(self, name: str, groups: Sequence[str] = ()) -> Path:
        """A client certificate for user ``name`` in ``groups`` (never system:masters) → its kubeconfig path.

        The user starts with no permissions beyond what RBAC grants every authenticated user (discovery, self
        reviews); grant more with :meth:`bind_cluster_role` or kubectl.
        """
        _check_name("user name", name)
        for group in groups:
            _check_name("group", group)
        if "system:masters" in groups:
            raise ValueError("a least-privilege identity cannot be in system:masters; use the admin kubeconfig")
        server = self.server
        stem = "user-" + name.replace(":", "_")
        cert, key = self.pki.issue(stem, common_name=name, organizations=list(groups))
        return write_kubeconfig(
            self.users_dir / f"{name.replace(':', '_')}.kubeconfig",
            server=server,
            ca_cert=self.pki.ca_cert,
            user=name,
            cert=cert,
            key=key,
        )

    def kubectl(self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
        """Run kubectl (``$KUBECTL`` or the one on PATH) against this control plane, as admin unless told; stdout."""
        exe = self._kubectl or os.environ.get("KUBECTL") or shutil.which("kubectl")
        if exe is None:
            raise ControlPlaneError("kubectl not found (set KUBECTL or put it on PATH)")
        command = [exe, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ControlPlaneError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result.stdout

    def bind_cluster_role(self, user: str, clusterrole: str, *, namespace: str | None = None) -> str:
        """Grant ``clusterrole`` to ``user`` with kubectl: cluster-wide, or only in ``namespace`` (a RoleBinding).

        Idempotent (``kubectl apply``). Returns the binding's name.
        """
        _check_name("user name", user)
        _check_name("cluster role", clusterrole)
        binding_name = f"kubecrawl-test:{user}:{clusterrole}"
        metadata: dict[str, str] = {"name": binding_name}
        if namespace is not None:
            metadata["namespace"] = _check_name("namespace", namespace)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding" if namespace is not None else "ClusterRoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": clusterrole},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(binding))
        return binding_name


# -- command line -----------------------------------------------------------------------------------------------------


def _resolve_bin_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if from_env := os.environ.get(BIN_DIR_ENV):
        return Path(from_env)
    return pinned_bin_dir()


def load_node_module() -> Any:
    """tools/controlplane/node.py (the node beside this control plane), loaded by path like this module."""
    import importlib.util

    # node.py finds this module under the name tests/support loads it as; as a script it is __main__.
    sys.modules.setdefault("kubecrawl_tools_controlplane", sys.modules[__name__])
    if (loaded := sys.modules.get("kubecrawl_tools_node")) is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("kubecrawl_tools_node", HERE / "node.py")
    if spec is None or spec.loader is None:
        raise ControlPlaneError(f"cannot load {HERE / 'node.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kubecrawl_tools_node"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controlplane.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a control plane in DIR; prints the admin kubeconfig path")
    up.add_argument("dir")
    up.add_argument("--bin-dir", help=f"default: ${BIN_DIR_ENV}, else the bin dir tools/controlplane/build uses")
    up.add_argument("--timeout", type=float, default=None, help="seconds (default 120; 240 with --node)")
    up.add_argument("--node", action="store_true", help="also run a node (kubelet, containerd, CNI, DNS); needs root")
    up.add_argument("--image", action="append", default=[], help="with --node: an OCI archive to load (repeatable)")
    load = commands.add_parser("load-image", help="load an OCI image archive into the node running in DIR")
    load.add_argument("dir")
    load.add_argument("archive")
    down = commands.add_parser("down", help="stop the control plane (and node) running in DIR")
    down.add_argument("dir")
    mint = commands.add_parser("mint-user", help="client certificate + kubeconfig for a user; prints its path")
    mint.add_argument("dir")
    mint.add_argument("name")
    mint.add_argument("--group", action="append", default=[], dest="groups")
    bind = commands.add_parser("bind-cluster-role", help="grant a ClusterRole to a user (kubectl apply)")
    bind.add_argument("dir")
    bind.add_argument("user")
    bind.add_argument("clusterrole")
    bind.add_argument("--namespace")
    args = parser.parse_args(argv)

    try:
        if args.command == "up" and args.node:
            node = load_node_module().Node(args.dir, _resolve_bin_dir(args.bin_dir))
            kubeconfig = node.start(timeout=args.timeout or 240.0, images=[Path(a) for a in args.image])
            print(
                f"control plane up at {node.controlplane.server} with a node; "
                f"Pods reach this machine at {node.host_ip} ({node.host_ip_file}); logs in {node.logs_dir}; "
                f"stop with: down {node.base_dir}",
                file=sys.stderr,
            )
            print(kubeconfig)
        elif args.command == "up":
            cp = ControlPlane(args.dir, _resolve_bin_dir(args.bin_dir))
            kubeconfig = cp.start(timeout=args.timeout or 120.0)
            print(
                f"control plane up at {cp.server}; logs in {cp.logs_dir}; stop with: down {cp.base_dir}",
                file=sys.stderr,
            )
            print(kubeconfig)
        elif args.command == "load-image":
            names = load_node_module().Node(args.dir, _resolve_bin_dir(None)).import_image(Path(args.archive))
            print("\n".join(names))
        elif args.command == "down":
            node_module = load_node_module()
            node_module.Node(args.dir, _resolve_bin_dir(None)).stop()
            print(f"control plane (and node) in {args.dir} stopped", file=sys.stderr)
        elif args.command == "mint-user":
            print(ControlPlane(args.dir).mint_user(args.name, args.groups))
        else:
            name = ControlPlane(args.dir).bind_cluster_role(args.user, args.clusterrole, namespace=args.namespace)
            print(name)
    except (ControlPlaneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
