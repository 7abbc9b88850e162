"""CrawlWorkerPool handlers: a kopf index of the pools and one :class:`~kubecrawl.operator.pool.supervising.
PoolSupervisor` that polls each of them every ``pollSeconds`` through
:class:`~kubecrawl.operator.pool.scaler.PoolScaler`.

:func:`register` adds them to the operator's registry (called from ``main.create_registry``). No handler here needs
a finalizer (see ``supervising.py`` for why not a kopf daemon), so a pool can be deleted whether or not the
operator runs. Deleting a pool leaves the Deployment's replicas and its pods' annotations as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from kubecrawl.core.backoff import Backoff, retry_with_backoff
from kubecrawl.core.errors import PermanentError, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator.group import GROUP, VERSION
from kubecrawl.operator.pool import deadletters
from kubecrawl.operator.pool.conflicts import hpa_index_entry
from kubecrawl.operator.pool.provisioning import ChartPools
from kubecrawl.operator.pool.scaler import PoolRef, PoolRuntime
from kubecrawl.operator.pool.supervising import PoolSupervisor, pool_snapshot
from kubecrawl.operator.pool.workloads import PLURAL
from kubecrawl.operator.settings import ChartPool, OperatorSettings

log = get_logger(__name__)
INDEX = "crawlworkerpool_index"
HPA_INDEX = "hpa_index"


def index_pool(body: kopf.Body, meta: kopf.Meta, **_: Any) -> dict[PoolRef, dict[str, Any]]:
    """kopf index: every pool's identity, spec and status; kopf drops the entry when the pool is deleted."""
    snapshot = pool_snapshot(meta["namespace"], meta["name"], meta["uid"], meta.get("generation"), body)
    return {snapshot["ref"]: snapshot}


def index_hpa(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    """kopf index: (namespace, Deployment) → the HPAs scaling it; kopf drops the entry when the HPA goes."""
    return hpa_index_entry(namespace or "", name, dict(spec))


def known_hpas(index: Mapping[tuple[str, str], Iterable[str]]) -> Callable[[str, str], list[str]]:
    """A pool scaler's view of the HPA index (read without an await, right before it decides to write)."""

    def lookup(namespace: str, deployment: str) -> list[str]:
        return sorted(set(index.get((namespace, deployment), ())))

    return lookup


def wake(memo: kopf.Memo, **_: Any) -> None:
    """Any pool event: kopf runs event handlers after it updated the indexes, so the supervisor sees the change."""
    supervisor: PoolSupervisor | None = getattr(memo, "pool_supervisor", None)
    if supervisor is not None:
        supervisor.wake()


# The chart's pool: 1 s doubling to 30 s, until it is in place (the worker Deployment of the same release may not
# be there yet, the API server may be restarting); a spec the API server refuses is logged once and left.
CHART_POOL_BACKOFF = Backoff(initial=1.0, maximum=30.0, attempts=None)


async def keep_chart_pool(pools: ChartPools, pool: ChartPool) -> None:
    def failed(attempt: int, error: BaseException, delay: float) -> None:
        log.warning("worker_pool_apply_failed", pool=f"{pool.namespace}/{pool.name}", attempt=attempt,
                    error=str(error), retry_in=round(delay, 1))  # fmt: skip

    try:
        done = await retry_with_backoff(
            lambda: pools.keep(pool), CHART_POOL_BACKOFF, retry_on=TransientError, on_failure=failed
        )
    except PermanentError as exc:  # the API server refused the spec: say so, the operator goes on
        refused: PermanentError | None = exc
    else:
        refused = None
        if done is not None:
            log.info("worker_pool_kept", pool=f"{pool.namespace}/{pool.name}", outcome=done[0])
    if refused is not None:
        log.error("worker_pool_rejected", pool=f"{pool.namespace}/{pool.name}", error=str(refused))


def register(registry: kopf.OperatorRegistry, shared: Settings, options: OperatorSettings) -> None:
    """Add the CrawlWorkerPool handlers (and the broker/API clients they share) to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def open_pools(memo: kopf.Memo, **kwargs: Any) -> None:
        runtime = await PoolRuntime.open(shared, options, known_hpas(kwargs[HPA_INDEX]))
        memo.pool_runtime = runtime
        # kopf passes every index to start-up handlers by its id, as a live view. (The pools' Events are posted by
        # our own client, workloads.py: kopf.event only works inside kopf's per-object handler context.)
        memo.pool_supervisor = PoolSupervisor(kwargs[INDEX], runtime.scaler)
        memo.pool_supervision = asyncio.create_task(memo.pool_supervisor.run(), name="pool supervisor")
        memo.dead_letters = asyncio.create_task(
            deadletters.watch(runtime.probe, options.dead_letter_queue, options.dead_letter_poll_seconds),
            name="dead-letter depth",
        )
        memo.chart_pool = None
        if options.worker_pool is not None:
            pools = ChartPools(runtime.api_client)
            memo.chart_pool = asyncio.create_task(keep_chart_pool(pools, options.worker_pool), name="chart pool")
        log.info(
            "pool_scaling_configured",
            management_api=options.rabbitmq_management_url is not None,
            conflict_check_seconds=options.pool_conflict_check_seconds,
        )

    @kopf.on.cleanup(registry=registry)
    async def close_pools(memo: kopf.Memo, **_: Any) -> None:
        memo.dead_letters.cancel()
        if memo.chart_pool is not None:
            memo.chart_pool.cancel()
        await memo.pool_supervisor.stop()
        await memo.pool_supervision
        await memo.pool_runtime.close()

    kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=INDEX)(index_pool)
    # HPAs on any Deployment, so a pool knows one on its own before its next /scale write (conflicts.py).
    kopf.index("autoscaling", "v2", "horizontalpodautoscalers", registry=registry, id=HPA_INDEX)(index_hpa)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="wake")(wake)
