"""CrawlWorkerPool handlers: one kopf daemon per pool, polling every ``pollSeconds`` through
:class:`~kubecrawl.operator.pools.scaler.PoolScaler`.

:func:`register` adds them to the operator's registry (called from ``main.create_registry``). kopf starts a daemon
when it first sees a pool (also after an operator restart) and stops it when the pool is deleted; kopf keeps its
finalizer on the pool meanwhile, so the daemon always ends before the pool is gone. Deleting a pool leaves the
Deployment's replicas and its pods' annotations as they are.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator import failures
from kubecrawl.operator.pools.scaler import PoolRef, PoolRuntime
from kubecrawl.operator.pools.workloads import PLURAL
from kubecrawl.operator.reconcile.naming import GROUP, VERSION
from kubecrawl.operator.scaling.deciding import Event
from kubecrawl.operator.settings import OperatorSettings

log = get_logger(__name__)

# A stopping daemon may finish the poll it is in (its requests time out within the networking settings' 30 s);
# after that it is cancelled, with 5 s more to unwind. The chart's operator.terminationGracePeriodSeconds covers
# both (tests/e2e/test_helm.py checks it).
CANCELLATION_BACKOFF_SECONDS = 30.0
CANCELLATION_TIMEOUT_SECONDS = 5.0


async def scale_pool(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """The daemon: poll at a fixed rate until the pool is deleted or the operator stops."""
    runtime: PoolRuntime = memo.pool_runtime
    ref = PoolRef(meta["namespace"], meta["name"])

    def post(event: Event) -> None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    scaler = runtime.scaler(ref, status=dict(body.get("status") or {}), post=post)
    log.info("pool_daemon_started", pool=str(ref))
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        while not stopped:
            try:
                # ``body`` is kopf's live view: a spec change applies from the next poll on.
                await scaler.poll(dict(body.get("spec") or {}), meta.get("generation"))
            except KubecrawlError as exc:
                # Kubernetes API trouble (the broker's is handled inside the poll): poll again, state kept.
                failures.count(failures.POOL, failures.POLL_FAILED)
                log.warning("pool_poll_failed", pool=str(ref), error=exc.detail, code=exc.code)
            except Exception:
                # A bug: loud (with the traceback), but the pool keeps being served.
                failures.count(failures.POOL, failures.INTERNAL_ERROR)
                log.exception("pool_poll_crashed", pool=str(ref))
            # Fixed rate: a slow poll shortens the wait; one that overran starts the next at once, no burst after.
            due = max(due + scaler.interval, loop.time())
            await stopped.wait(due - loop.time())
    finally:
        scaler.forget()
        log.info("pool_daemon_stopped", pool=str(ref), reason=str(stopped.reason) if stopped else "cancelled")


def register(registry: kopf.OperatorRegistry, shared: Settings, options: OperatorSettings) -> None:
    """Add the CrawlWorkerPool handlers (and the broker/API clients they share) to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def open_pools(memo: kopf.Memo, **_: Any) -> None:
        memo.pool_runtime = await PoolRuntime.open(shared, options)
        log.info(
            "pool_scaling_configured",
            management_api=options.rabbitmq_management_url is not None,
            conflict_check_seconds=options.pool_conflict_check_seconds,
        )

    @kopf.on.cleanup(registry=registry)
    async def close_pools(memo: kopf.Memo, **_: Any) -> None:
        await memo.pool_runtime.close()

    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="scale",
        cancellation_backoff=CANCELLATION_BACKOFF_SECONDS,
        cancellation_timeout=CANCELLATION_TIMEOUT_SECONDS,
    )(scale_pool)
