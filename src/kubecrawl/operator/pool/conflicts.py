"""Other autoscalers on a pool's Deployment: an HPA or a KEDA ScaledObject would fight the pool over replicas, so
the pool refuses to scale while one targets the same Deployment (KEDA also creates an HPA of its own; both show)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _targets(ref: Any, deployment: str) -> bool:
    if not isinstance(ref, dict):
        return False
    # KEDA defaults an absent kind/apiVersion to apps/v1 Deployment; an HPA always spells them out.
    kind = ref.get("kind") or "Deployment"
    group = str(ref.get("apiVersion") or "apps/v1").split("/", 1)[0]
    return kind == "Deployment" and group == "apps" and ref.get("name") == deployment


def autoscalers_of(
    deployment: str, hpas: Iterable[dict[str, Any]], scaled_objects: Iterable[dict[str, Any]]
) -> list[str]:
    """``Kind/name`` of each HPA and ScaledObject (as JSON dicts) whose scale target is the Deployment."""
    found = [
        f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        for hpa in hpas
        if _targets((hpa.get("spec") or {}).get("scaleTargetRef"), deployment)
    ]
    found += [
        f"ScaledObject/{obj['metadata']['name']}"
        for obj in scaled_objects
        if _targets((obj.get("spec") or {}).get("scaleTargetRef"), deployment)
    ]
    return sorted(found)
