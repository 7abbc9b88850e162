"""Other autoscalers on a pool's Deployment: an HPA or a KEDA ScaledObject would fight the pool over replicas, so
the pool refuses to scale while one targets the same Deployment (KEDA also creates an HPA of its own; both show).

HPAs are watched (``handlers.py`` keeps a kopf index of them by ``hpa_index_entry``), so one is known the moment
the API server has it, before the pool's next ``/scale`` write; ScaledObjects are listed every
``pool_conflict_check_seconds`` (KEDA's CRD may be installed after the operator started, which a watch set up at
start-up would miss; and KEDA's own HPA for each ScaledObject shows in the index anyway)."""

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


def scaled_objects_of(deployment: str, scaled_objects: Iterable[dict[str, Any]]) -> list[str]:
    """``ScaledObject/name`` of each ScaledObject (as JSON dicts) whose scale target is the Deployment."""
    return sorted(
        f"ScaledObject/{obj['metadata']['name']}"
        for obj in scaled_objects
        if _targets((obj.get("spec") or {}).get("scaleTargetRef"), deployment)
    )


def hpa_index_entry(namespace: str, name: str, spec: Any) -> dict[tuple[str, str], str]:
    """The HPA index's entry for one HPA: (namespace, Deployment it scales) → ``HorizontalPodAutoscaler/name``;
    nothing for an HPA of anything but a Deployment."""
    ref = (spec or {}).get("scaleTargetRef") if isinstance(spec, dict) else None
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not _targets(ref, ref["name"]):
        return {}
    return {(namespace, ref["name"]): f"HorizontalPodAutoscaler/{name}"}
