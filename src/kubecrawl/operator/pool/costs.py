"""Pod deletion costs: which pods the ReplicaSet removes first when the scaler lowers replicas.

The ReplicaSet controller ranks pods before deleting (unscheduled before scheduled, pending before running, not
ready before ready, then the ``controller.kubernetes.io/pod-deletion-cost`` annotation, lowest first). Before a
scale-down the scaler annotates every pod of the Deployment: idle pods get :data:`IDLE_COST`, pods whose AMQP
connection holds unacked messages get :data:`BUSY_COST` plus the number they hold, so the idle ones go first and,
among busy ones, the one with the least work in hand. Workers drain on SIGTERM anyway; this avoids waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = 0
# Far above any idle pod, with room to order busy pods by the messages they hold.
BUSY_COST = 1000
_MAX_COST = 2**31 - 1  # the annotation is an int32


def deletion_costs(pods: Iterable[str], busy: Mapping[str, int]) -> dict[str, int]:
    """The cost each pod should carry (``busy``: pod → unacked messages its connection holds)."""
    return {pod: min(_MAX_COST, BUSY_COST + busy[pod]) if pod in busy else IDLE_COST for pod in pods}


def cost_changes(current: Mapping[str, str | None], wanted: Mapping[str, int]) -> dict[str, str]:
    """Annotation values to write: only for pods whose annotation differs (``current``: pod → annotation or None)."""
    return {pod: str(cost) for pod, cost in wanted.items() if pod in current and current[pod] != str(cost)}
