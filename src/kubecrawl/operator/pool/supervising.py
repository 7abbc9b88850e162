"""One polling task per CrawlWorkerPool, started and stopped from a live view of the pools (a kopf index).

Why not kopf daemons: kopf keeps a finalizer on every object that has a daemon, so a pool could not be deleted
while the operator is down, and ``helm uninstall`` (which stops the operator in the same step as it deletes the
pool) left the pool and its namespace Terminating for ever. The index needs no finalizer: deleting a pool just
removes it from the view, and its task ends at the next :meth:`PoolSupervisor.sync`.

kopf-free: ``handlers.py`` feeds the index and calls :meth:`~PoolSupervisor.wake` on every pool event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.pool.scaler import PoolRef

log = get_logger(__name__)

# A pool missed by a wake-up (there should be none) is still picked up within this many seconds.
RESYNC_SECONDS = 5.0
# On shutdown a task may finish the poll it is in (its requests time out within the networking settings' 30 s);
# then it is cancelled. The chart's operator.terminationGracePeriodSeconds covers this (tests/e2e/test_helm.py).
STOP_TIMEOUT_SECONDS = 30.0


class Scaler(Protocol):
    interval: float

    async def poll(self, raw_spec: Mapping[str, Any], generation: int | None) -> None: ...

    def forget(self) -> None: ...


# (ref, the pool's snapshot when its task starts: uid, status…) → the scaler that polls it
ScalerFactory = Callable[[PoolRef, Mapping[str, Any]], Scaler]


def pool_snapshot(
    namespace: str, name: str, uid: str, generation: int | None, body: Mapping[str, Any]
) -> dict[str, Any]:
    """What the supervisor keeps of one pool in the index: identity, spec and status (plain copies)."""
    return {
        "ref": PoolRef(namespace, name),
        "uid": uid,
        "generation": generation,
        "spec": _plain(body.get("spec") or {}),
        "status": _plain(body.get("status") or {}),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _report_crash(task: asyncio.Task[None]) -> None:
    """A pool task that ended with an exception (a bug: polls catch their own); the next sync starts it again."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        failures.count(failures.POOL, failures.INTERNAL_ERROR)
        log.error("pool_task_crashed", task=task.get_name(), exc_info=exc)


class PoolSupervisor:
    def __init__(
        self,
        index: Mapping[Any, Iterable[dict[str, Any]]],
        make_scaler: ScalerFactory,
        *,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self._index = index
        self._make_scaler = make_scaler
        self._stop_timeout = stop_timeout
        self._tasks: dict[PoolRef, tuple[str, asyncio.Task[None]]] = {}
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """A pool was added, changed or deleted: sync the tasks now rather than at the next resync."""
        self._changed.set()

    def _current(self) -> dict[PoolRef, dict[str, Any]]:
        return {item["ref"]: item for store in list(self._index.values()) for item in store}

    @property
    def serving(self) -> set[PoolRef]:
        return {ref for ref, (_, task) in self._tasks.items() if not task.done()}

    def sync(self) -> None:
        """Start a task for every pool in the view, cancel the tasks of pools that are gone (or were re-created)."""
        current = self._current()
        for ref, (uid, task) in list(self._tasks.items()):
            item = current.get(ref)
            if item is None or item["uid"] != uid or task.done():
                task.cancel()
                del self._tasks[ref]
        for ref, item in current.items():
            if ref not in self._tasks and not self._stopping.is_set():
                task = asyncio.create_task(self._serve(ref, item["uid"]), name=f"pool {ref}")
                task.add_done_callback(_report_crash)
                self._tasks[ref] = (item["uid"], task)

    async def run(self) -> None:
        """Keep the tasks in line with the view until :meth:`stop`."""
        while not self._stopping.is_set():
            self._changed.clear()
            try:
                self.sync()
            except Exception:  # a bug: loud, and the next wake-up or resync tries again
                failures.count(failures.POOL, failures.INTERNAL_ERROR)
                log.exception("pool_supervision_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RESYNC_SECONDS)

    async def stop(self) -> None:
        """Let every task finish its poll (up to the stop timeout), then cancel what is left."""
        self._stopping.set()
        self._changed.set()
        tasks = [task for _, task in self._tasks.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _serve(self, ref: PoolRef, uid: str) -> None:
        """One pool: poll at a fixed rate, always with the spec the view holds now."""
        item = self._current().get(ref)
        if item is None or item["uid"] != uid:
            return
        scaler = self._make_scaler(ref, item)
        log.info("pool_scaling_started", pool=str(ref))
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while not self._stopping.is_set():
                item = self._current().get(ref)
                if item is None or item["uid"] != uid:
                    break
                try:
                    await scaler.poll(item["spec"], item["generation"])
                except KubecrawlError as exc:
                    # Kubernetes API trouble (the broker's is handled inside the poll): poll again, state kept.
                    failures.count(failures.POOL, failures.POLL_FAILED)
                    log.warning("pool_poll_failed", pool=str(ref), error=exc.detail, code=exc.code)
                except Exception:
                    # A bug: loud (with the traceback), but the pool keeps being served.
                    failures.count(failures.POOL, failures.INTERNAL_ERROR)
                    log.exception("pool_poll_crashed", pool=str(ref))
                # Fixed rate: a slow poll shortens the wait; one that overran starts the next at once, no burst.
                due = max(due + scaler.interval, loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), due - loop.time())
        finally:
            scaler.forget()
            log.info("pool_scaling_stopped", pool=str(ref), stopping=self._stopping.is_set())
