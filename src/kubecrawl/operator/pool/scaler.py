"""One CrawlWorkerPool's poll: read the Deployment's /scale and the queue, decide (``deciding.py``), annotate
pod deletion costs before a scale-down, write /scale, then report (Events, status, metrics).

kopf-free: a pool's task (``supervising.py``) calls :meth:`PoolScaler.poll` every ``pollSeconds``, and
``handlers.py`` gives it a function that posts Events. The scaler's memory (the stabilisation window, the
rate-limit history, the failure count) starts from the Deployment's current replicas when the task starts, so an
operator restart never makes the replicas jump: scale-ups still happen at once, scale-downs wait for a full window.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from kubernetes_asyncio import client

from kubecrawl.core import metrics
from kubecrawl.core.clock import utcnow
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator import failures, kube
from kubecrawl.operator.conditions import Event, Outcome, status_patch
from kubecrawl.operator.kube import KubernetesUnavailable
from kubecrawl.operator.pool.costs import cost_changes, deletion_costs
from kubecrawl.operator.pool.deciding import Decision, Observation, ScalerState, decide, initial_state
from kubecrawl.operator.pool.probing import AmqpDepth, BrokerProbe, ManagementApi, MetricsUnavailable, vhost_of
from kubecrawl.operator.pool.reporting import ACTIVE, LastScale, active, activity_events, desired_status
from kubecrawl.operator.pool.spec import DEFAULT_POLL_SECONDS, InvalidPoolSpec, PoolSpec, pool_spec
from kubecrawl.operator.pool.workloads import Pod, PoolObject, Scale, ScaleConflict, Workloads
from kubecrawl.operator.settings import OperatorSettings

log = get_logger(__name__)

PostEvent = Callable[[Event], Awaitable[None]]
_WRITE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class PoolRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _previous_activity(status: Mapping[str, Any]) -> Outcome | None:
    """The Active condition the pool already shows (after an operator restart: no Event for the same state)."""
    for item in status.get("conditions") or []:
        if item.get("type") == ACTIVE and item.get("status") in {"True", "False", "Unknown"}:
            return Outcome(item["status"], str(item.get("reason") or ""), str(item.get("message") or ""))
    return None


class PoolScaler:
    """The polls of one CrawlWorkerPool (one instance per pool task)."""

    def __init__(
        self,
        ref: PoolRef,
        *,
        workloads: Workloads,
        probe: BrokerProbe,
        post: PostEvent,
        status: Mapping[str, Any],
        conflict_check_seconds: float,
        known_hpas: Callable[[str, str], list[str]] = lambda _namespace, _deployment: [],
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ref = ref
        self._workloads = workloads
        self._probe = probe
        self._post = post
        self._status: dict[str, Any] = dict(status)
        self._conflict_check_seconds = conflict_check_seconds
        # (namespace, deployment) → the HPAs scaling it, from the operator's watch (a kopf index): read right
        # before deciding to write, so an HPA created a moment ago is known before the next /scale write.
        self._known_hpas = known_hpas
        self._clock = clock
        self._wallclock = wallclock
        self._state: ScalerState | None = None
        self._activity = _previous_activity(status)
        self._scaled_objects: list[str] = []
        self._scaled_objects_checked: tuple[str, float] | None = None  # (deployment, when)
        self._last_scale: LastScale | None = None
        # Seconds between polls, from the last valid spec.
        self.interval = DEFAULT_POLL_SECONDS

    async def poll(self, raw_spec: Mapping[str, Any], generation: int | None) -> None:
        """One poll; Kubernetes API failures propagate (the task logs them and polls again)."""
        try:
            spec = pool_spec(raw_spec)
        except InvalidPoolSpec as exc:
            await self._report(generation, active(None, spec_error=exc.detail))
            return
        self.interval = spec.poll_seconds
        scale = await self._workloads.read_scale(self.ref.namespace, spec.deployment_name)
        if scale is None:
            self._state = None  # a Deployment created later starts with a fresh window
            await self._report(generation, active(spec, deployment_found=False))
            return
        if self._state is None:
            self._state = initial_state(scale.replicas, self._clock())
        scaled_objects = await self._check_scaled_objects(spec)
        pods = await self._workloads.pods(self.ref.namespace, scale.selector) if self._probe.knows_unacked else []
        observation, error = await self._observe(spec, pods)
        decision = decide(
            spec, self._state, current=scale.replicas, observation=observation, now=self._clock(), error=error
        )
        self._state = decision.state
        # No await between this read of the watched HPAs and the decision to write below.
        autoscalers = sorted([*self._known_hpas(self.ref.namespace, spec.deployment_name), *scaled_objects])
        activity = active(spec, autoscalers=autoscalers)
        events = list(decision.events)
        current = scale.replicas
        if activity.ok and decision.replicas != current and await self._apply(spec, scale, decision, pods, observation):
            current = decision.replicas
            events.append(decision.change_event())
        await self._report(generation, activity, current=current, observation=observation, decision=decision)
        for event in events:
            await self._post(event)

    async def _check_scaled_objects(self, spec: PoolSpec) -> list[str]:
        """KEDA ScaledObjects on the Deployment, listed every ``conflict_check_seconds`` (conflicts.py: why not
        watched)."""
        now = self._clock()
        checked = self._scaled_objects_checked
        if checked is None or checked[0] != spec.deployment_name or now - checked[1] >= self._conflict_check_seconds:
            try:
                self._scaled_objects = await self._workloads.scaled_objects(self.ref.namespace, spec.deployment_name)
            except KubernetesUnavailable as exc:
                # Keep the last answer: a pool that was refusing keeps refusing until a list succeeds.
                log.warning("pool_autoscaler_check_failed", pool=str(self.ref), error=exc.detail)
            self._scaled_objects_checked = (spec.deployment_name, now)
        return self._scaled_objects

    async def _observe(self, spec: PoolSpec, pods: list[Pod]) -> tuple[Observation | None, str]:
        try:
            observation = await self._probe.observe(spec.queue, {pod.name for pod in pods})
        except MetricsUnavailable as exc:
            metrics.POOL_METRIC_ERRORS.labels(self.ref.namespace, self.ref.name).inc()
            log.warning("pool_metrics_unavailable", pool=str(self.ref), queue=spec.queue, error=exc.detail)
            return None, exc.detail
        gauge = metrics.POOL_QUEUE_MESSAGES
        gauge.labels(self.ref.namespace, self.ref.name, "ready").set(observation.ready)
        if observation.unacked is not None:
            gauge.labels(self.ref.namespace, self.ref.name, "unacked").set(observation.unacked)
        return observation, ""

    async def _apply(
        self, spec: PoolSpec, scale: Scale, decision: Decision, pods: list[Pod], observation: Observation | None
    ) -> bool:
        """Annotate deletion costs (before a scale-down), write /scale; False when the write did not happen."""
        namespace = self.ref.namespace
        try:
            if decision.replicas < scale.replicas and observation is not None and observation.unacked is not None:
                wanted = deletion_costs([pod.name for pod in pods], observation.busy)
                changes = cost_changes({pod.name: pod.deletion_cost for pod in pods}, wanted)
                if changes:
                    await self._workloads.set_deletion_costs(namespace, changes)
            await self._write(spec, scale, decision.replicas)
        except KubernetesUnavailable as exc:
            if not isinstance(exc, ScaleConflict):  # someone else scaled meanwhile: the next poll decides again
                failures.count(failures.POOL, failures.SCALE_FAILED)
            log.warning("pool_scale_failed", pool=str(self.ref), replicas=decision.replicas, error=exc.detail)
            return False
        written = self._clock()
        self._state = decision.state.after_change(scale.replicas, decision.replicas, written)
        direction = decision.direction or "none"
        metrics.POOL_SCALE.labels(namespace, self.ref.name, direction, decision.cause).inc()
        if decision.seen_at is not None:
            metrics.POOL_REACTION.labels(direction).observe(max(0.0, written - decision.seen_at))
        self._last_scale = LastScale(self._wallclock(), decision.message)
        log.info(
            "pool_scaled",
            pool=str(self.ref),
            deployment=spec.deployment_name,
            replicas_from=scale.replicas,
            replicas_to=decision.replicas,
            cause=decision.cause,
            detail=decision.message,
        )
        return True

    async def _report(
        self,
        generation: int | None,
        activity: Outcome,
        *,
        current: int | None = None,
        observation: Observation | None = None,
        decision: Decision | None = None,
    ) -> None:
        for event in activity_events(self._activity, activity):
            await self._post(event)
        self._activity = activity
        labels = (self.ref.namespace, self.ref.name)
        if current is not None:
            metrics.POOL_CURRENT_REPLICAS.labels(*labels).set(current)
        if decision is not None:
            metrics.POOL_DESIRED_REPLICAS.labels(*labels).set(decision.replicas)
        desired = desired_status(
            self._status,
            generation=generation,
            activity=activity,
            current=current,
            observation=observation,
            decision=decision,
            last_scale=self._last_scale,
            now=self._wallclock(),
        )
        patch = status_patch(self._status, desired)
        if patch and await self._workloads.patch_status(self.ref.namespace, self.ref.name, patch):
            self._status.update(patch)

    async def _write(self, spec: PoolSpec, scale: Scale, replicas: int) -> None:
        """Write /scale with the resourceVersion read. That version is the whole Deployment's, so the Deployment
        controller updating its status makes it stale often while pods come and go: then re-read, and write again
        if the replicas are still those the decision started from (otherwise someone else scaled: give up, the
        next poll decides again). Three tries; a conflict every time means a busy writer, not our business."""
        for _ in range(_WRITE_ATTEMPTS - 1):
            try:
                await self._workloads.write_replicas(
                    self.ref.namespace, spec.deployment_name, replicas, scale.resource_version
                )
            except ScaleConflict:
                fresh = await self._workloads.read_scale(self.ref.namespace, spec.deployment_name)
                if fresh is None or fresh.replicas != scale.replicas:
                    raise
                scale = fresh
            else:
                return
        await self._workloads.write_replicas(self.ref.namespace, spec.deployment_name, replicas, scale.resource_version)

    def forget(self) -> None:
        """Drop this pool's metric series (the pool is gone or the operator is stopping)."""
        labels = (self.ref.namespace, self.ref.name)
        for gauge in (metrics.POOL_CURRENT_REPLICAS, metrics.POOL_DESIRED_REPLICAS):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for state in ("ready", "unacked"):
            with contextlib.suppress(KeyError):
                metrics.POOL_QUEUE_MESSAGES.remove(*labels, state)


@dataclass(frozen=True, slots=True)
class PoolRuntime:
    """What every pool's scaler shares in one operator process (kept in kopf's memo)."""

    workloads: Workloads
    probe: BrokerProbe
    options: OperatorSettings
    api_client: client.ApiClient
    # (namespace, deployment) → the HPAs scaling it (the kopf index of HPAs, handlers.py)
    known_hpas: Callable[[str, str], list[str]]

    @classmethod
    async def open(
        cls, shared: Settings, options: OperatorSettings, known_hpas: Callable[[str, str], list[str]]
    ) -> PoolRuntime:
        api_client = await kube.connect()
        amqp_url = shared.rabbitmq_url.get_secret_value()
        timeout = options.pool_broker_timeout_seconds
        management = None
        if options.rabbitmq_management_url is not None:
            management = ManagementApi(
                options.rabbitmq_management_url.get_secret_value(),
                vhost=vhost_of(amqp_url),
                default_credentials=_credentials(amqp_url),
                timeout=timeout,
            )
        probe = BrokerProbe(AmqpDepth(amqp_url, timeout=timeout), management)
        return cls(Workloads(api_client), probe, options, api_client, known_hpas)

    def scaler(self, ref: PoolRef, pool: Mapping[str, Any]) -> PoolScaler:
        """The scaler of one pool, from its index snapshot (``supervising.pool_snapshot``: uid, status)."""
        involved = PoolObject(ref.namespace, ref.name, pool["uid"])
        return PoolScaler(
            ref,
            workloads=self.workloads,
            probe=self.probe,
            post=functools.partial(self.workloads.post_event, involved),
            status=pool["status"],
            conflict_check_seconds=self.options.pool_conflict_check_seconds,
            known_hpas=self.known_hpas,
        )

    async def close(self) -> None:
        await self.probe.close()
        await self.api_client.close()


def _credentials(amqp_url: str) -> tuple[str, str]:
    parts = urlsplit(amqp_url)
    return unquote(parts.username or "guest"), unquote(parts.password or "guest")
