"""The local Kubernetes control plane for e2e tests (etcd, kube-apiserver, kube-controller-manager on loopback).

One copy of the logic: this module loads ``tools/controlplane/controlplane.py`` (stdlib only, also the CLI behind
``tools/controlplane/up``/``down``) and re-exports its API::

    bin_dir = ensure_built()                 # runs tools/controlplane/build (cached per pins) → bin dir
    cp = ControlPlane(base_dir, bin_dir)
    cp.start()                               # → cp.kubeconfig (admin, system:masters)
    path = cp.mint_user("kubecrawl-operator", ["kubecrawl"])   # least-privilege kubeconfig
    cp.bind_cluster_role("kubecrawl-operator", "kubecrawl-operator")
    cp.stop()

    node = Node(base_dir, bin_dir)           # the control plane plus a real node (kubelet, containerd, CNI, DNS)
    node.start(images=[archive])             # → admin kubeconfig; Pods run; node.host_ip reaches this machine
    node.stop()

A missing binary raises ``BinaryMissing`` (a ``ControlPlaneError``) naming ``tools/controlplane/build``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

TOOL_PATH = Path(__file__).resolve().parents[2] / "tools" / "controlplane" / "controlplane.py"
_MODULE_NAME = "kubecrawl_tools_controlplane"


def _load() -> ModuleType:
    """Load the tool by path (``tools`` is not a package, and a ``tools`` package elsewhere must not shadow it)."""
    if (loaded := sys.modules.get(_MODULE_NAME)) is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, TOOL_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {TOOL_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # type checkers and editors see the real signatures (the repo root as a namespace package)
    from tools.controlplane.controlplane import (
        BinaryMissing,
        ControlPlane,
        ControlPlaneError,
        ensure_built,
        free_port,
        pinned_bin_dir,
    )
    from tools.controlplane.node import Node
else:
    _tool = _load()
    BinaryMissing = _tool.BinaryMissing
    ControlPlane = _tool.ControlPlane
    ControlPlaneError = _tool.ControlPlaneError
    ensure_built = _tool.ensure_built
    free_port = _tool.free_port
    pinned_bin_dir = _tool.pinned_bin_dir
    Node = _tool.load_node_module().Node

__all__ = [
    "TOOL_PATH",
    "BinaryMissing",
    "ControlPlane",
    "ControlPlaneError",
    "Node",
    "ensure_built",
    "free_port",
    "pinned_bin_dir",
]
