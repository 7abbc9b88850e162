"""One real Kubernetes node beside the local control plane: containerd + runc, a CNI bridge, kubelet,
kube-scheduler, kube-proxy and CoreDNS, so Pods run for real from images built on this machine (no registry).

``tools/controlplane/up DIR --node`` starts, in this order: the bridge ``kcbr0`` (10.244.0.1/24, the node's and
the host's address for Pods), containerd (which imports a pause image compiled from the pinned Kubernetes module's
``build/pause/linux/pause.c``), the control plane serving on 10.244.0.1 (node.py's ``NODE_IP``), the node's RBAC,
kubelet (node ``kubecrawl-node``), kube-scheduler, kube-proxy (iptables mode) and CoreDNS (``<svc>.<ns>.svc``
for Pods). It returns once the node is Ready and untainted and cluster DNS answers. ``DIR/host-ip`` holds the
address on which Pods reach servers running on this machine (the bridge's address).

Pods can reach this machine and each other, and nothing else: the CNI network has no default route and a
``mangle FORWARD`` rule drops anything forwarded out of any interface but the bridge (IP forwarding must be on
for ClusterIP Services). CoreDNS has no upstream, so no query leaves the machine either.

``down DIR`` deletes every Pod while kubelet and containerd still run (the CNI plugin frees addresses and veths),
stops the processes by the pids it recorded, then removes what they leave behind: mounts, the bridge, the iptables
rules of kubelet, kube-proxy and the guard, the ``kubepods`` cgroups, and kubelet's fixed paths. Only one node runs
per machine (the bridge, the cgroup root and iptables are machine-wide).

Findings this is built on (each stopped the node until fixed) are in docs/controlplane.md.
Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CP_MODULE = "kubecrawl_tools_controlplane"
if _CP_MODULE in sys.modules:
    cp = sys.modules[_CP_MODULE]
else:  # loaded on its own: load controlplane.py by path, under the name tests/support uses
    import importlib.util

    _spec = importlib.util.spec_from_file_location(_CP_MODULE, Path(__file__).with_name("controlplane.py"))
    assert _spec is not None
    assert _spec.loader is not None
    cp = importlib.util.module_from_spec(_spec)
    sys.modules[_CP_MODULE] = cp
    _spec.loader.exec_module(cp)

NODE_NAME = "kubecrawl-node"
BRIDGE = "kcbr0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/kubecrawl/pause:3.10"
#: Started in this order (after the control plane), stopped in reverse.
PROCESSES = ("containerd", "kubelet", "kube-scheduler", "kube-proxy", "coredns")
GUARD_COMMENT = "kubecrawl-node: pods reach only this machine"
#: Paths kubelet and the CNI plugins use whatever their configuration says; removed by down().
FIXED_PATHS = (
    "/var/lib/cni/results",
    "/var/lib/cni/networks",
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
)
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
NodeError = cp.ControlPlaneError


def _run(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _k8s_module_dir() -> Path:
    """The pinned k8s.io/kubernetes module's source (already downloaded by tools/controlplane/build)."""
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    result = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent / "kubernetes",
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise NodeError(f"cannot find the k8s.io/kubernetes module source: {result.stderr.strip()}")
    return Path(result.stdout.strip())


# -- images without a registry ---------------------------------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def write_oci_archive(path: Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: Sequence[str]) -> Path:
    """A one-layer OCI image archive (image-layout spec) holding ``files`` (path → (content, mode)).

    ``ctr images import`` names it ``name`` (the ``io.containerd.image.name`` annotation).
    """
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(member_path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    layer = layer_tar.getvalue()
    blobs: dict[str, bytes] = {}
    layer_desc = _blob(blobs, gzip.compress(layer, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
    }
    manifest_desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
            }
        ],
    }
    entries = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{digest.removeprefix('sha256:')}": data for digest, data in blobs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for entry, data in entries.items():
            info = tarfile.TarInfo(entry)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def build_pause_image(work_dir: Path) -> Path:
    """Kubernetes' own pause program (from the pinned module), compiled statically: the Pod sandbox image."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise NodeError("gcc is needed to compile the pause image (Debian: apt-get install gcc libc6-dev)")
    module_dir = _k8s_module_dir()
    source = module_dir / "build" / "pause" / "linux" / "pause.c"
    binary = work_dir / "pause"
    work_dir.mkdir(parents=True, exist_ok=True)
    _run(gcc, "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10-kubecrawl", "-o", str(binary), str(source))
    return write_oci_archive(
        work_dir / "pause.oci.tar", PAUSE_IMAGE, {"/pause": (binary.read_bytes(), 0o755)}, ["/pause"]
    )


# -- configuration files ---------------------------------------------------------------------------------------------


def _containerd_config(node: Node) -> str:
    q = json.dumps  # a JSON string is a valid TOML basic string
    disabled = [
        "io.containerd.nri.v1.nri",
        *(f"io.containerd.snapshotter.v1.{name}" for name in ("btrfs", "zfs", "devmapper", "blockfile", "erofs")),
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ]
    return f"""\
version = 3
root = {q(str(node.dir / "containerd" / "root"))}
state = {q(str(node.run_dir / "state"))}
disabled_plugins = {q(disabled)}

[grpc]
  address = {q(str(node.containerd_socket))}
[ttrpc]
  address = {q(str(node.containerd_socket) + ".ttrpc")}
[debug]
  address = ""
[metrics]
  address = ""

[plugins.'io.containerd.shim.v1.manager']
  # Unix socket paths are limited to 107 bytes and the shim adds its own name: keep the directory short.
  socket_dir = {q(str(node.run_dir / "s"))}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {q(PAUSE_IMAGE)}

[plugins.'io.containerd.cri.v1.runtime']
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's OOM score, and every sandbox failed with
  # "can't get final child's PID from pipe: EOF" until containerd stopped asking it to.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = {q(node.runc)}
        Root = {q(str(node.run_dir / "runc"))}
        # PID 1 is not systemd here: cgroupfs, as kubelet's cgroupDriver.
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = {q([str(node.cni_bin_dir)])}
    conf_dir = {q(str(node.dir / "cni" / "net.d"))}

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def _cni_config(node: Node) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "kubecrawl",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # The bridge already has NODE_IP. isGateway would also switch IP forwarding on machine-wide; the
                # routes below make the bridge the gateway for the Service range only.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.dir / "cni" / "ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    # No default route: a Pod reaches its own subnet (this machine's bridge address included) and
                    # ClusterIPs, nothing else.
                    "routes": [{"dst": cp.SERVICE_CLUSTER_IP_RANGE, "gw": NODE_IP}],
                },
            },
        ],
    }


def _kubelet_config(node: Node, ports: dict[str, int]) -> dict[str, Any]:
    pki = node.controlplane.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # kubelet >= 1.35 refuses cgroup v1 unless told; this machine has only v1 controllers.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "address": NODE_IP,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(pki.directory / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki.directory / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        # Never the machine's own resolver: Pods resolve cluster names only, so no query leaves the machine.
        "resolvConf": str(node.dir / "resolv.conf"),
        "failSwapOn": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "podLogsDir": str(node.dir / "pod-logs"),
        "volumePluginDir": str(node.dir / "volume-plugins"),
        # Tests fill the disk with images and logs of short-lived Pods; do not evict them on a busy CI disk.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 110,
        # Pod status reaches the apiserver faster: tests wait for readiness changes.
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }


def _kube_proxy_config(node: Node, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(node.kubeconfigs["kube-proxy"])},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        # NodePorts only on the bridge, never on the machine's uplink.
        "nodePortAddresses": [POD_SUBNET],
        # Leave the machine's conntrack table sizes and timeouts as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def _corefile(node: Node, ports: dict[str, int]) -> str:
    return f"""\
.:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:{ports["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {node.kubeconfigs["coredns"]}
        pods insecure
        ttl 5
    }}
    # No forward plugin: names outside the cluster are not resolved, so no query leaves the machine.
}}
"""


#: What CoreDNS's kubernetes plugin reads (the upstream system:coredns ClusterRole).
_COREDNS_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    },
    # An RBAC-only apiserver has no Node authorizer: the bootstrap system:node role, bound to the nodes group.
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubecrawl:nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
    },
    # The apiserver's client identity towards kubelets (logs, exec, port-forward).
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubecrawl:kubelet-api-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": cp.KUBELET_CLIENT_USER}],
    },
]


# -- the node --------------------------------------------------------------------------------------------------------


class Node:
    """The control plane (serving on NODE_IP) plus one node, all state under ``base_dir`` (``base_dir/node``)."""

    def __init__(self, base_dir: Path | str, bin_dir: Path | str | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else None
        self.controlplane = cp.ControlPlane(self.base_dir, bin_dir, advertise_address=NODE_IP)
        self.dir = self.base_dir / "node"
        self.logs_dir = self.controlplane.logs_dir
        self.state_file = self.dir / "state.json"
        # Sockets need short paths (107 bytes with the shim's own names); one per base_dir.
        self.run_dir = Path("/run/kubecrawl-" + hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:8])
        self.containerd_socket = self.run_dir / "containerd.sock"
        self.host_ip_file = self.base_dir / "host-ip"
        self.kubeconfigs = {
            name: self.dir / f"{name}.kubeconfig" for name in ("kubelet", "kube-scheduler", "kube-proxy", "coredns")
        }
        self.runc = shutil.which("runc") or "/usr/sbin/runc"
        self.cni_bin_dir = Path("/usr/lib/cni")
        self.processes = cp.Processes(self.state_file, self.logs_dir, self.dir)

    @property
    def host_ip(self) -> str:
        """The address on which Pods reach servers on this machine (the bridge's address)."""
        return NODE_IP

    def running_processes(self) -> dict[str, int]:
        return self.processes.running()

    # -- start ------------------------------------------------------------------------------------------------------

    def start(self, timeout: float = 240.0, images: Sequence[Path] = ()) -> Path:
        """Bridge, containerd, control plane, kubelet, scheduler, kube-proxy, CoreDNS; → the admin kubeconfig.

        ``images``: OCI archives to import into the node's runtime before kubelet starts.
        """
        if self.bin_dir is None:
            raise cp.BinaryMissing("no bin dir given: run tools/controlplane/build, it prints the bin dir")
        binaries = {name: self.controlplane.binary(name) for name in (*PROCESSES, "ctr", "containerd-shim-runc-v2")}
        for tool in ("ip", "iptables", "iptables-restore", "conntrack"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} not found: apt-get install iproute2 iptables conntrack")
        if not (self.cni_bin_dir / "bridge").exists():
            raise NodeError("CNI plugins not found in /usr/lib/cni: apt-get install containernetworking-plugins")
        if os.geteuid() != 0:
            raise NodeError("a node needs root (network, mounts, cgroups)")
        if self.running_processes() or self.controlplane.is_running():
            raise NodeError(f"a cluster is already running in {self.base_dir}: stop it first (down)")
        if _link_exists(BRIDGE):
            raise NodeError(f"{BRIDGE} exists: another node runs on this machine (or a crashed one: down its DIR)")
        deadline = time.monotonic() + timeout
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.processes.save({"processes": {}, "run_dir": str(self.run_dir), "sysctls": {}, "network": False})
        try:
            self._start_network()
            self._start_containerd(binaries, deadline, images)
            self.controlplane.start(timeout=max(deadline - time.monotonic(), 30))
            self.logs_dir.mkdir(exist_ok=True)
            self._write_identities()
            self._start_kubelet(binaries, deadline)
            self._start_scheduler(binaries, deadline)
            self._start_kube_proxy(binaries, deadline)
            self._start_coredns(binaries, deadline)
            self.processes.wait("node Ready and untainted", deadline, self._node_ready)
        except BaseException:
            self.stop()
            raise
        self.host_ip_file.write_text(NODE_IP + "\n")
        return self.controlplane.kubeconfig

    def _start_network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self.processes.update(network=True)
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Forwarding is needed for ClusterIPs (DNAT to a Pod); the guard first, so nothing forwarded can leave by
        # another interface. mangle, because kube-proxy puts its ACCEPTs ahead of anything in filter.
        _run("iptables", "-t", "mangle", "-I", "FORWARD", "!", "-o", BRIDGE, "-m", "comment",
             "--comment", GUARD_COMMENT, "-j", "DROP")  # fmt: skip
        self.processes.update(guard=True)
        previous = {}
        for key, value in SYSCTLS.items():
            path = Path("/proc/sys") / key
            previous[key] = path.read_text().strip()
            path.write_text(value)
        self.processes.update(sysctls=previous)

    def _start_containerd(self, binaries: dict[str, Path], deadline: float, images: Sequence[Path]) -> None:
        (self.dir / "cni" / "net.d").mkdir(parents=True)
        (self.dir / "cni" / "net.d" / "10-kubecrawl.conflist").write_text(json.dumps(_cni_config(self), indent=2))
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.dir / "containerd.toml"
        config.write_text(_containerd_config(self))
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        self.processes.spawn("containerd", binaries["containerd"], ["--config", str(config)], env=env)
        self.processes.wait("containerd", deadline, lambda: self._ctr("version", check=False) is not None)
        pause = build_pause_image(self.dir / "images")
        for archive in (pause, *images):
            self.import_image(archive)

    def _ctr(self, *args: str, check: bool = True) -> str | None:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / "ctr"), "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
        if result.returncode != 0:
            if check:
                raise NodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
            return None
        return result.stdout

    def container_pid(self, container_id: str) -> int:
        """The host PID of a running container's main process (``containerd://ID`` or ``ID``, from a Pod's
        ``containerStatuses``): what a test signals to freeze or kill a container from outside."""
        wanted = container_id.removeprefix("containerd://")
        for line in (self._ctr("tasks", "list") or "").splitlines()[1:]:
            task, pid, *_ = line.split()
            if task == wanted:
                return int(pid)
        raise NodeError(f"no running task for container {wanted}")

    def import_image(self, archive: Path) -> list[str]:
        """Load an OCI/Docker image archive into the node's runtime (pull policy Never/IfNotPresent); → names."""
        if self.bin_dir is None:
            self.bin_dir = Path(cp.pinned_bin_dir())
        out = self._ctr("images", "import", "--no-unpack=false", "--snapshotter", "overlayfs", str(archive)) or ""
        return [line.split()[1] for line in out.splitlines() if line.startswith("unpacking ")]

    def _write_identities(self) -> None:
        controlplane, pki = self.controlplane, self.controlplane.pki
        server = controlplane.server
        identities = {
            "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
            "kube-scheduler": ("system:kube-scheduler", []),
            "kube-proxy": ("system:kube-proxy", []),
            "coredns": ("system:coredns", []),
        }
        for name, (user, groups) in identities.items():
            cert, key = pki.issue(f"node-{name}", common_name=user, organizations=groups)
            cp.write_kubeconfig(
                self.kubeconfigs[name], server=server, ca_cert=pki.ca_cert, user=user, cert=cert, key=key
            )
        pki.issue("kubelet-serving", common_name=f"system:node:{NODE_NAME}", profile="server", sans=[f"IP:{NODE_IP}"])
        controlplane.kubectl(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": _COREDNS_RBAC})
        )

    def _start_kubelet(self, binaries: dict[str, Path], deadline: float) -> None:
        ports = {"kubelet": cp.free_port(), "kubelet-healthz": cp.free_port()}
        (self.dir / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
        config = self.dir / "kubelet.yaml"
        config.write_text(json.dumps(_kubelet_config(self, ports), indent=2))
        self.processes.spawn("kubelet", binaries["kubelet"], [
            f"--config={config}",
            f"--kubeconfig={self.kubeconfigs['kubelet']}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet-pki'}",  # defaults to /var/lib/kubelet/pki whatever --root-dir says
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",  # kubelet refuses a loopback node IP: the bridge's address
            "--v=1",
        ])  # fmt: skip
        healthz = f"http://127.0.0.1:{ports['kubelet-healthz']}/healthz"
        self.processes.wait("kubelet /healthz", deadline, lambda: _http_ok(healthz))

    def _start_scheduler(self, binaries: dict[str, Path], deadline: float) -> None:
        port = cp.free_port()
        self.processes.spawn("kube-scheduler", binaries["kube-scheduler"], [
            f"--kubeconfig={self.kubeconfigs['kube-scheduler']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.dir / 'kube-scheduler-serving'}",
            "--leader-elect=false",
            "--profiling=false",
        ])  # fmt: skip
        self.processes.wait("kube-scheduler /healthz", deadline, lambda: _http_ok(f"https://127.0.0.1:{port}/healthz"))

    def _start_kube_proxy(self, binaries: dict[str, Path], deadline: float) -> None:
        ports = {"kube-proxy-healthz": cp.free_port(), "kube-proxy-metrics": cp.free_port()}
        config = self.dir / "kube-proxy.yaml"
        config.write_text(json.dumps(_kube_proxy_config(self, ports), indent=2))
        self.processes.spawn("kube-proxy", binaries["kube-proxy"], [f"--config={config}", "--v=1"])
        healthz = f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz"
        self.processes.wait("kube-proxy /healthz", deadline, lambda: _http_ok(healthz))

    def _start_coredns(self, binaries: dict[str, Path], deadline: float) -> None:
        ports = {"coredns-ready": cp.free_port()}
        corefile = self.dir / "Corefile"
        corefile.write_text(_corefile(self, ports))
        self.processes.spawn("coredns", binaries["coredns"], ["-conf", str(corefile)])
        ready = f"http://127.0.0.1:{ports['coredns-ready']}/ready"
        self.processes.wait("CoreDNS /ready", deadline, lambda: _http_ok(ready))

    def _node_ready(self) -> bool:
        out = self.controlplane.kubectl("get", "node", NODE_NAME, "-o", "json")
        node = json.loads(out)
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True" and not node.get("spec", {}).get("taints")

    # -- stop -------------------------------------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> None:
        """Delete every Pod, stop node and control plane, and remove everything they made on this machine."""
        state = self.processes.state()
        if not state:
            self.controlplane.stop()
            return
        running = self.running_processes()
        if {"kubelet", "containerd"} <= running.keys() and self.controlplane.is_running():
            self._delete_pods(timeout)
        for name in reversed(PROCESSES):
            self.processes.stop(name, 20.0)
        self.controlplane.stop()
        self._kill_shims()
        self._cleanup(state)
        self.state_file.unlink(missing_ok=True)
        self.host_ip_file.unlink(missing_ok=True)

    def _delete_pods(self, timeout: float) -> None:
        """Scale nothing, just delete: with the scheduler stopped first, no replacement Pod is ever started."""
        self.processes.stop("kube-scheduler", 20.0)
        with contextlib.suppress(cp.ControlPlaneError, subprocess.TimeoutExpired):
            self.controlplane.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self._ctr("tasks", "list", "--quiet", check=False)
            if tasks is not None and not tasks.strip():
                return
            time.sleep(0.5)

    def _kill_shims(self) -> None:
        """containerd shims outlive containerd by design; ours are the ones started for our socket."""
        marker = str(self.containerd_socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"containerd-shim" in cmdline and marker in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)

    def _cleanup(self, state: dict[str, Any]) -> None:
        # Mounts first (deepest first): kubelet's volumes, the sandboxes' network namespaces, containerd's rootfs.
        roots = (str(self.base_dir) + "/", str(self.run_dir) + "/")
        for _ in range(3):
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
            ours = sorted({m for m in mounts if m.startswith(roots)}, key=len, reverse=True)
            if not ours:
                break
            for mount in ours:
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        if self.bin_dir is not None and (self.bin_dir / "kube-proxy").exists():
            subprocess.run([str(self.bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
        _remove_kubelet_chains()
        if state.get("guard"):
            subprocess.run(["iptables", "-t", "mangle", "-D", "FORWARD", "!", "-o", BRIDGE, "-m", "comment",
                            "--comment", GUARD_COMMENT, "-j", "DROP"], capture_output=True, check=False)  # fmt: skip
        for key, value in state.get("sysctls", {}).items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value)
        if state.get("network") and _link_exists(BRIDGE):
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        # veths left by a sandbox that was never torn down (CNI DEL not called) go with their namespaces above.
        _remove_cgroups("kubepods")
        for path in (*FIXED_PATHS, str(self.run_dir)):
            shutil.rmtree(path, ignore_errors=True)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _http_ok(url: str) -> bool:
    import ssl
    import urllib.request

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)


def _remove_kubelet_chains() -> None:
    """kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...), in both families and every table."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            listing = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
            chains = {line.split()[1] for line in listing.splitlines() if line.startswith("-N KUBE-")}
            for line in listing.splitlines():
                parts = shlex.split(line)
                if line.startswith("-A ") and any(f"-j {chain}" in line for chain in chains) and parts[1] not in chains:
                    subprocess.run([tool, "-t", table, "-D", *parts[1:]], capture_output=True, check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, check=False)


def _remove_cgroups(name: str) -> None:
    """The kubelet's cgroup tree in every v1 controller, deepest first (a cgroup is removed with rmdir)."""
    root = Path("/sys/fs/cgroup")
    for controller in root.iterdir():
        top = controller / name
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
