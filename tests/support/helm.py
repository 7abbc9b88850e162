"""The helm binary built by tools/controlplane, with a private home (never the user's caches or repositories)."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import ensure_built

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubecrawl"


def values_file(directory: Path, values: dict[str, Any]) -> str:
    """``values`` written to a new YAML file in ``directory``, for ``helm … -f``."""
    path = directory / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@dataclass(frozen=True)
class Helm:
    binary: Path
    env: dict[str, str]

    @classmethod
    def private(cls, home: Path, kubeconfig: Path | None = None) -> Helm:
        """helm keeping its caches and repository config under ``home``; no cluster unless ``kubeconfig``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
        env.update(
            HELM_CACHE_HOME=str(home / "cache"),
            HELM_CONFIG_HOME=str(home / "config"),
            HELM_DATA_HOME=str(home / "data"),
            KUBECONFIG=str(kubeconfig or home / "no-cluster"),
        )
        return cls(ensure_built() / "helm", env)

    def command(self, args: tuple[str, ...]) -> list[str]:
        return [str(self.binary), *args]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(args), env=self.env, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def with_kubeconfig(self, kubeconfig: Path) -> Helm:
        return Helm(self.binary, {**self.env, "KUBECONFIG": str(kubeconfig)})
