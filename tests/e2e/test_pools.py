"""CrawlWorkerPool on a real control plane and a real RabbitMQ (management plugin on): the operator's scaling loop
reads the queue, writes the worker Deployment's /scale, annotates pod deletion costs, posts Events and status.

Setup (module fixture ``pools``; the session fixtures install every CRD): the session's operator is restarted with
its broker settings pointing at a private virtual host through TCP proxies (cutting a proxy makes the broker
unreachable for the operator only) and with a 1 s autoscaler check. Pods of the Deployments stay Pending (no
scheduler, no kubelet); real worker processes stand in for them by running under their names (POD_NAME).

Timing bounds are part of the contract: a scale-up must be written within 2 × pollSeconds + 1 s of the messages
being published. Replicas are observed with kubectl, whose start-up on a loaded 2-core machine adds up to
:data:`OBSERVATION_SLACK` seconds to what is measured.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp import web

from kubecrawl.broker.topology import METADATA_QUEUE, declare_topology
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.operator.pool.costs import BUSY_COST, DELETION_COST_ANNOTATION
from kubecrawl.store.migrating import upgrade
from tests.support.polling import eventually
from tests.support.proxy import TcpProxy
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.sites import Site
from tests.support.stack import Cluster, Kube, OperatorProcess, Process, service_env, stop_all

pytestmark = pytest.mark.e2e

# kubectl is a fresh process per observation; on a loaded 2-core machine one call takes up to about a second.
OBSERVATION_SLACK = 1.5
# Conditions, Events, operator restarts: no timing contract, only "eventually" (loaded machine).
SETTLE = 45.0


@dataclass
class Pools:
    kube: Kube
    rabbit: RabbitServer
    vhost: str
    amqp: TcpProxy
    management: TcpProxy
    operator: OperatorProcess

    @property
    def broker_url(self) -> str:
        """The real broker, straight (what the tests and workers use)."""
        return self.rabbit.url(self.vhost)


@pytest.fixture(scope="module")
def pools(cluster: Cluster, operator: OperatorProcess, rabbit: RabbitServer) -> Iterator[Pools]:
    vhost = "pools_" + uuid.uuid4().hex[:8]
    rabbit.add_vhost(vhost)
    amqp = TcpProxy(rabbit.port).start()
    management = TcpProxy(rabbit.management_port).start()
    # The session's operator (the CRDs are installed by the session fixture) gets the pools' broker settings.
    operator.restart(
        KUBECRAWL_RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{amqp.port}/{vhost}",
        KUBECRAWL_RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{management.port}",
        # HPAs come from the operator's watch; ScaledObjects are listed at a pool's first poll and then hourly, so
        # a conflict found later was found by the watch (test_an_hpa_created_while_a_pool_scales_…).
        KUBECRAWL_OPERATOR_POOL_CONFLICT_CHECK_SECONDS="3600",
        KUBECRAWL_OPERATOR_POOL_BROKER_TIMEOUT_SECONDS="2",
    )
    yield Pools(cluster.admin, rabbit, vhost, amqp, management, operator)
    amqp.stop()
    management.stop()


# aio-pika's connection logs a warning with the traceback of the reset when the broker goes away: expected when a
# test cuts the broker off, a problem anywhere else.
_BROKER_RESET = '"logger": "aiormq.connection"'


@pytest.fixture(autouse=True)
def operator_has_enough_rights(pools: Pools, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test doubles as a least-privilege check: the operator's log shows no refused request, no crash."""
    start = len(pools.operator.output())
    yield
    problems = pools.operator.problems(start)
    if "outage" in request.fixturenames:
        problems = [line for line in problems if _BROKER_RESET not in line]
    assert problems == []


@dataclass
class Outage:
    """The operator's way to the broker (AMQP and management API), which a test can cut and restore."""

    proxies: tuple[TcpProxy, ...]

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()


@pytest.fixture
def outage(pools: Pools) -> Iterator[Outage]:
    """Broker unreachable for the operator only, on ``cut()``; always reachable again after the test."""
    broker_link = Outage((pools.amqp, pools.management))
    yield broker_link
    broker_link.restore()


@pytest.fixture
async def broker(pools: Pools) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(pools.broker_url)
    channel = await connection.channel()
    yield channel
    await connection.close()


# ---------------------------------------------------------------------------------------------------- helpers


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "kubecrawl:e2e"}]},
            },
        },
    }


def pool(name: str, deployment_name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubecrawl.io/v1alpha1",
        "kind": "CrawlWorkerPool",
        "metadata": {"name": name},
        "spec": {"deploymentName": deployment_name, "queue": queue, "pollSeconds": 1, **spec},
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


async def replicas(kube: Kube, namespace: str, name: str) -> int:
    found = await kube.aget("deployment", name, namespace)
    assert found is not None, f"Deployment {namespace}/{name} is gone"
    return int(found["spec"]["replicas"])


async def wait_replicas(kube: Kube, namespace: str, name: str, expected: int, *, timeout: float = SETTLE) -> float:
    """Poll until the Deployment has ``expected`` replicas; returns the monotonic time it was seen."""

    async def probe() -> float | None:
        return time.monotonic() if await replicas(kube, namespace, name) == expected else None

    seen: float = await eventually(probe, timeout=timeout, interval=0.05, what=f"{name} at {expected} replicas")
    return seen


async def wait_pool(kube: Kube, namespace: str, name: str, check: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.aget("crawlworkerpool", name, namespace)
        return obj if obj is not None and check(obj) else None

    found: dict[str, Any] = await eventually(probe, timeout=SETTLE, interval=0.2, what=what)
    return found


async def wait_condition(
    kube: Kube, namespace: str, name: str, kind: str, *, status: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """Poll until the pool's ``kind`` condition has the given status and/or reason; returns the pool."""

    def shows(pool: dict[str, Any]) -> bool:
        found = condition(pool, kind)
        return (status is None or found.get("status") == status) and (reason is None or found.get("reason") == reason)

    return await wait_pool(kube, namespace, name, shows, f"{name} {kind} status={status} reason={reason}")


async def pool_events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},involvedObject.kind=CrawlWorkerPool"
    result = await kube.arun("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


async def wait_event(kube: Kube, namespace: str, name: str, reason: str, contains: str = "") -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        events = await pool_events(kube, namespace, name)
        return next((e for e in events if e["reason"] == reason and contains in e["message"]), None)

    found: dict[str, Any] = await eventually(probe, timeout=SETTLE, interval=0.3, what=f"{reason} event on {name}")
    return found


async def active(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """Wait until the pool's task has polled at least once and reports itself Active."""
    return await wait_condition(kube, namespace, name, "Active", status="True")


async def declare(channel: aio_pika.abc.AbstractChannel, queue: str) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(queue, durable=True)


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    for i in range(count):
        await channel.default_exchange.publish(aio_pika.Message(f"task {i}".encode()), routing_key=queue)


def log_records(operator: OperatorProcess, since: int = 0) -> list[dict[str, Any]]:
    """The operator's JSON log records, parsed (so the renderer's spacing and key order do not matter)."""
    records = []
    for line in operator.output()[since:].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_lines(operator: OperatorProcess, event: str, pool_ref: str, since: int = 0) -> list[dict[str, Any]]:
    """The records with this event for this pool."""
    return [r for r in log_records(operator, since) if r.get("event") == event and r.get("pool") == pool_ref]


# ------------------------------------------------------------------------------------------------------ tests


async def test_published_messages_scale_replicas_to_ceil_n_over_target_within_two_polls(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube, queue, poll_seconds = pools.kube, f"{namespace}.work", 2
    await declare(broker, queue)
    await kube.aapply(deployment("workers", 1), namespace)
    spec = {"targetPerReplica": 5, "minReplicas": 1, "maxReplicas": 10, "pollSeconds": poll_seconds}
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await active(kube, namespace, "workers")

    await publish(broker, queue, 23)
    # A deadline, not a measured gap: scaled within two polls and a patch, plus the time kubectl takes to see it.
    bound = 2 * poll_seconds + 1
    await wait_replicas(kube, namespace, "workers", math.ceil(23 / 5), timeout=bound + OBSERVATION_SLACK)
    status = (await wait_pool(kube, namespace, "workers", lambda p: p["status"].get("desiredReplicas") == 5, "status"))[
        "status"
    ]
    assert status["observed"]["ready"] == 23
    assert status["observed"]["unacked"] == 0
    assert status["currentReplicas"] == 5
    assert status["lastScaleReason"].startswith("1 → 5 replicas")
    event = await wait_event(kube, namespace, "workers", "ScaledUp")
    assert "1 → 5 replicas" in event["message"]
    scraped = await asyncio.to_thread(fetch_text, pools.operator.metrics_url)
    assert f'kubecrawl_pool_desired_replicas{{namespace="{namespace}",pool="workers"}} 5.0' in scraped
    assert "kubecrawl_pool_reaction_seconds_bucket" in scraped


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_draining_the_queue_scales_down_only_after_the_stabilisation_window(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube, queue, window = pools.kube, f"{namespace}.work", 8
    work = await declare(broker, queue)
    await kube.aapply(deployment("workers", 1), namespace)
    spec = {"targetPerReplica": 5, "minReplicas": 1, "maxReplicas": 10, "scaleDown": {"stabilizationSeconds": window}}
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await publish(broker, queue, 20)
    await wait_replicas(kube, namespace, "workers", 4)

    await work.purge()
    # What the operator saw, not a measured gap: a poll found the queue empty and the window held the replicas.
    held = await wait_pool(
        kube,
        namespace,
        "workers",
        lambda p: (
            p["status"].get("observed", {}).get("ready") == 0
            and condition(p, "ScalingLimited").get("reason") == "ScaleDownStabilized"
        ),
        "the empty queue seen and the scale-down held by the window",
    )
    assert held["status"]["desiredReplicas"] == 4
    counts: list[int] = []

    async def scaled_down() -> bool:
        counts.append(await replicas(kube, namespace, "workers"))
        return counts[-1] == 1

    await eventually(scaled_down, timeout=window + SETTLE, interval=0.2, what="scale-down after the window")
    assert all(n in (4, 1) for n in counts)  # straight from 4 to 1, no steps
    await wait_event(kube, namespace, "workers", "ScaledDown")


async def test_min_and_max_replicas_bound_the_scaling(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube, queue = pools.kube, f"{namespace}.work"
    work = await declare(broker, queue)
    await kube.aapply(deployment("workers", 0), namespace)
    spec = {"targetPerReplica": 1, "minReplicas": 2, "maxReplicas": 3, "scaleDown": {"stabilizationSeconds": 0}}
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await wait_replicas(kube, namespace, "workers", 2)  # raised to minReplicas with an empty queue

    await publish(broker, queue, 10)
    await wait_replicas(kube, namespace, "workers", 3)
    limited = await wait_condition(kube, namespace, "workers", "ScalingLimited", reason="TooManyReplicas")
    assert condition(limited, "ScalingLimited")["status"] == "True"
    assert "asks for 10 replicas, maxReplicas is 3" in condition(limited, "ScalingLimited")["message"]

    await work.purge()
    await wait_replicas(kube, namespace, "workers", 2)
    limited = await wait_condition(kube, namespace, "workers", "ScalingLimited", reason="TooFewReplicas")
    assert await replicas(kube, namespace, "workers") == 2


async def test_scales_from_zero_only_past_activation_and_back_to_zero_after_the_cooldown(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube, queue = pools.kube, f"{namespace}.work"
    work = await declare(broker, queue)
    await kube.aapply(deployment("workers", 0), namespace)
    spec = {
        "targetPerReplica": 5,
        "minReplicas": 0,
        "maxReplicas": 5,
        "activation": 3,
        "cooldownToZeroSeconds": 8,  # long enough for the test to see the cooldown hold the last replica
        "scaleDown": {"stabilizationSeconds": 0},
    }
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await publish(broker, queue, 3)
    seen = await wait_pool(
        kube, namespace, "workers", lambda p: (p.get("status") or {}).get("observed", {}).get("ready") == 3, "ready 3"
    )
    assert seen["status"]["desiredReplicas"] == 0
    assert await replicas(kube, namespace, "workers") == 0  # 3 is not more than the activation

    await publish(broker, queue, 9)
    await wait_replicas(kube, namespace, "workers", 3)  # ceil(12 / 5), in one step from zero

    await work.purge()
    # 3 → 1 at once (the window is 0); 1 → 0 only after the cooldown, which the status shows holding the last one
    await wait_replicas(kube, namespace, "workers", 1)
    held = await wait_condition(kube, namespace, "workers", "ScalingLimited", reason="CooldownToZero")
    assert held["status"]["desiredReplicas"] == 1
    await wait_replicas(kube, namespace, "workers", 0)
    await wait_event(kube, namespace, "workers", "ScaledDown", "3 → 1 replicas")
    await wait_event(kube, namespace, "workers", "ScaledDown", "1 → 0 replicas")


class HoldingSite:
    """A local site whose pages answer only when released: workers fetching them hold their messages unacked."""

    def __init__(self) -> None:
        self.site = Site()
        self.release = asyncio.Event()
        self.arrived = 0

    async def _held(self, _: web.Request) -> web.StreamResponse:
        self.arrived += 1
        await self.release.wait()
        return web.Response(text="<html><head><title>held</title></head></html>", content_type="text/html")

    async def start(self, pages: int) -> list[str]:
        for i in range(pages):
            self.site.handlers[f"/hold/{i}"] = self._held
        await self.site.start()
        return [self.site.url(f"/hold/{i}") for i in range(pages)]


@pytest.fixture
async def holding_site() -> AsyncIterator[HoldingSite]:
    held = HoldingSite()
    yield held
    held.release.set()
    await held.site.stop()


@pytest.fixture
def worker_database(postgres: PostgresServer) -> str:
    url = postgres.create_database("pools_" + uuid.uuid4().hex[:8])
    upgrade(url)
    return url


async def test_scale_down_keeps_busy_pods_and_gives_them_the_high_deletion_cost(
    pools: Pools,
    namespace: str,
    broker: aio_pika.abc.AbstractChannel,
    holding_site: HoldingSite,
    worker_database: str,
    tmp_path: Path,
) -> None:
    kube, target, held = pools.kube, 2, 8
    await declare_topology(broker, metadata_max_length=1000, pages_max_length=100_000)
    urls = await holding_site.start(held)
    await kube.aapply(deployment("workers", 0), namespace)
    spec = {"targetPerReplica": target, "minReplicas": 1, "maxReplicas": 6, "scaleDown": {"stabilizationSeconds": 6}}
    await kube.aapply(pool("workers", "workers", METADATA_QUEUE, **spec), namespace)
    for url in urls:
        body = MetadataTask(url=url).model_dump_json().encode()
        await broker.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=METADATA_QUEUE)
    await wait_replicas(kube, namespace, "workers", held // target)  # 4 Pending pods

    async def pod_names() -> list[str]:
        names = [p["metadata"]["name"] for p in await kube.alist("pods", namespace, "app.kubernetes.io/name=workers")]
        return names if len(names) == held // target else []

    names = sorted(await eventually(pod_names, timeout=SETTLE, what="4 pods"))
    busy_names = names[:2]
    workers: list[Process] = []
    try:
        # Two of the four pods come to life at once (one would leave the other's pod idle long enough to go);
        # each takes 4 messages (prefetch 4) and holds them: the site answers only when released.
        for name in busy_names:
            env = service_env(
                worker_database,
                pools.broker_url,
                POD_NAME=name,
                KUBECRAWL_PREFETCH_COUNT="4",
                KUBECRAWL_FETCH__TIMEOUT_SECONDS="120",
            )
            workers.append(Process(["worker", "--metrics-port", "0"], env, tmp_path / f"{name}.log"))
            workers[-1].start()
        await eventually(
            lambda: all("worker_started" in w.output() for w in workers), timeout=SETTLE, what="workers started"
        )
        await eventually(
            lambda: holding_site.arrived >= held, timeout=SETTLE, what="all messages held by the two workers"
        )

        # ready 0, 8 unacked on 2 pods: the window passes, then 4 → 2 (never below the busy pods), idle pods first
        await wait_replicas(kube, namespace, "workers", 2)
        deferred = await wait_event(kube, namespace, "workers", "ScaleDownDeferred")
        assert "2 pods hold unacked messages: keeping 2 replicas, the queue alone needs 1" in deferred["message"]

        async def survivors() -> dict[str, str] | None:
            pods = await kube.alist("pods", namespace, "app.kubernetes.io/name=workers")
            live = {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}
            if sorted(live) != busy_names:
                return None
            return {
                n: (p["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION, "") for n, p in live.items()
            }

        costs = await eventually(survivors, timeout=SETTLE, what="only the busy pods left")
        assert all(int(cost) >= BUSY_COST + 4 for cost in costs.values()), costs
        status = (await kube.aget("crawlworkerpool", "workers", namespace) or {})["status"]
        assert status["observed"]["busyPods"] == 2
        assert status["observed"]["unacked"] == held

        # the workers finish: nothing is busy any more and the pool goes down to minReplicas
        holding_site.release.set()
        await wait_replicas(kube, namespace, "workers", 1)
    finally:
        stop_all(*workers)


async def test_broker_unreachable_keeps_replicas_sets_metrics_unavailable_and_warns(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel, outage: Outage
) -> None:
    kube, queue, ref = pools.kube, f"{namespace}.work", f"{namespace}/workers"
    await declare(broker, queue)
    await kube.aapply(deployment("workers", 1), namespace)
    spec = {"targetPerReplica": 5, "maxReplicas": 10, "scaleDown": {"stabilizationSeconds": 0}}
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await publish(broker, queue, 15)
    await wait_replicas(kube, namespace, "workers", 3)

    since = len(pools.operator.output())
    outage.cut()
    try:
        unavailable = await wait_condition(kube, namespace, "workers", "MetricsAvailable", status="False")
        assert condition(unavailable, "MetricsAvailable")["reason"] == "MetricsUnavailable"
        event = await wait_event(kube, namespace, "workers", "MetricsUnavailable")
        assert event["type"] == "Warning"
        assert "keeping 3 replicas" in event["message"]
        # the queue drains meanwhile; the operator, unable to read the depth, must not notice, and keeps polling without scaling
        await (await declare(broker, queue)).purge()
        await eventually(
            lambda: len(log_lines(pools.operator, "pool_metrics_unavailable", ref, since)) >= 4,
            timeout=SETTLE,
            what="4 failed polls",
        )
        assert await replicas(kube, namespace, "workers") == 3
        assert log_lines(pools.operator, "pool_scaled", ref, since) == []
    finally:
        outage.restore()
    await wait_condition(kube, namespace, "workers", "MetricsAvailable", status="True")


async def test_fallback_replicas_apply_after_the_failure_threshold(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel, outage: Outage
) -> None:
    kube, queue, ref = pools.kube, f"{namespace}.work", f"{namespace}/workers"
    await declare(broker, queue)
    await kube.aapply(deployment("workers", 1), namespace)
    spec = {"targetPerReplica": 5, "maxReplicas": 10, "fallback": {"failureThreshold": 3, "replicas": 4}}
    await kube.aapply(pool("workers", "workers", queue, **spec), namespace)
    await active(kube, namespace, "workers")

    since = len(pools.operator.output())
    outage.cut()
    try:
        await wait_replicas(kube, namespace, "workers", 4)
        fallback = await wait_condition(kube, namespace, "workers", "FallbackActive", status="True")
        assert "3 failed depth reads in a row" in condition(fallback, "FallbackActive")["message"]
        event = await wait_event(kube, namespace, "workers", "FallbackApplied")
        assert "1 → 4 replicas" in event["message"]
        # not before the third failed read in a row
        records = [r for r in log_records(pools.operator, since) if r.get("pool") == ref]
        events = [r.get("event") for r in records]
        before_scaling = events[: events.index("pool_scaled")]
        assert before_scaling.count("pool_metrics_unavailable") >= 3
    finally:
        outage.restore()
    await wait_condition(kube, namespace, "workers", "FallbackActive", status="False")


HPA_REF = {"apiVersion": "apps/v1", "kind": "Deployment"}


async def test_a_pool_refuses_to_scale_a_deployment_an_hpa_or_scaled_object_scales(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube = pools.kube
    for name in ("contested", "clock"):
        await declare(broker, f"{namespace}.{name}")
        await kube.aapply(deployment(name, 1), namespace)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "cpu"},
        "spec": {
            "scaleTargetRef": {**HPA_REF, "name": "contested"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }
            ],
        },
    }
    await kube.aapply(hpa, namespace)
    for name in ("contested", "clock"):
        await kube.aapply(pool(name, name, f"{namespace}.{name}", targetPerReplica=5, maxReplicas=10), namespace)

    refused = await wait_condition(kube, namespace, "contested", "Active", reason="AutoscalerConflict")
    assert condition(refused, "Active")["status"] == "False"
    assert "HorizontalPodAutoscaler/cpu" in condition(refused, "Active")["message"]
    event = await wait_event(kube, namespace, "contested", "AutoscalerConflict")
    assert event["type"] == "Warning"

    # both queues fill; the clock pool scaling proves the operator polled, the contested one stays put
    await publish(broker, f"{namespace}.contested", 30)
    await publish(broker, f"{namespace}.clock", 30)
    await wait_replicas(kube, namespace, "clock", 6)
    await wait_pool(
        kube, namespace, "contested", lambda p: p["status"].get("observed", {}).get("ready") == 30, "contested read"
    )
    assert await replicas(kube, namespace, "contested") == 1

    # the HPA goes: the pool takes over
    await kube.arun("delete", "hpa", "cpu", "-n", namespace)
    await wait_replicas(kube, namespace, "contested", 6)
    await wait_event(kube, namespace, "contested", "Resumed")


async def test_an_hpa_created_while_a_pool_scales_is_known_before_its_next_write(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube = pools.kube
    await declare(broker, f"{namespace}.late")
    await kube.aapply(deployment("late", 1), namespace)
    await kube.aapply(pool("late", "late", f"{namespace}.late", targetPerReplica=5, maxReplicas=20), namespace)
    await publish(broker, f"{namespace}.late", 15)
    await wait_replicas(kube, namespace, "late", 3)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "late-cpu"},
        "spec": {"scaleTargetRef": {**HPA_REF, "name": "late"}, "minReplicas": 1, "maxReplicas": 5},
    }
    await kube.aapply(hpa, namespace)
    # The pool lists autoscalers hourly here (the fixture): only its watch of HPAs can tell it in time.
    refused = await wait_condition(kube, namespace, "late", "Active", reason="AutoscalerConflict")
    assert "HorizontalPodAutoscaler/late-cpu" in condition(refused, "Active")["message"]
    await publish(broker, f"{namespace}.late", 30)
    await wait_pool(
        kube, namespace, "late", lambda p: p["status"].get("observed", {}).get("ready") == 45, "the larger backlog"
    )
    assert await replicas(kube, namespace, "late") == 3  # 45 messages would ask for 9: nothing was written


SCALED_OBJECT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "scope": "Namespaced",
        "names": {
            "kind": "ScaledObject",
            "plural": "scaledobjects",
            "singular": "scaledobject",
            "listKind": "ScaledObjectList",
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


async def test_a_keda_scaled_object_on_the_deployment_is_refused_too(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube = pools.kube
    await kube.arun("apply", "-f", "-", stdin=json.dumps(SCALED_OBJECT_CRD))
    try:
        await kube.arun("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")
        await declare(broker, f"{namespace}.work")
        await kube.aapply(deployment("workers", 1), namespace)
        scaled = {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "rabbit"},
            "spec": {"scaleTargetRef": {"name": "workers"}, "triggers": [{"type": "rabbitmq"}]},
        }
        await kube.aapply(scaled, namespace)
        await kube.aapply(
            pool("workers", "workers", f"{namespace}.work", targetPerReplica=5, maxReplicas=10), namespace
        )
        refused = await wait_condition(kube, namespace, "workers", "Active", reason="AutoscalerConflict")
        assert "ScaledObject/rabbit" in condition(refused, "Active")["message"]
    finally:
        await kube.arun("delete", "crd", "scaledobjects.keda.sh", "--wait=false", check=False)


async def test_deleting_a_pool_touches_nothing_else(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube = pools.kube
    for name in ("orphan", "clock"):
        await declare(broker, f"{namespace}.{name}")
        await kube.aapply(deployment(name, 1), namespace)
        spec = {"targetPerReplica": 5, "maxReplicas": 10, "scaleDown": {"stabilizationSeconds": 0}}
        await kube.aapply(pool(name, name, f"{namespace}.{name}", **spec), namespace)
    await publish(broker, f"{namespace}.orphan", 15)
    await wait_replicas(kube, namespace, "orphan", 3)
    before = await kube.aget("deployment", "orphan", namespace)
    assert before is not None

    await kube.arun("delete", "crawlworkerpool", "orphan", "-n", namespace, "--timeout=60s")
    assert await kube.aget("crawlworkerpool", "orphan", namespace) is None

    # both queues change; the clock pool reacting proves the operator polled after the deletion
    await (await declare(broker, f"{namespace}.orphan")).purge()
    await publish(broker, f"{namespace}.clock", 20)
    await wait_replicas(kube, namespace, "clock", 4)
    after = await kube.aget("deployment", "orphan", namespace)
    assert after is not None
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert (await declare(broker, f"{namespace}.orphan")).declaration_result.message_count == 0  # queue still there


async def test_a_pool_carries_no_finalizer_so_it_can_be_deleted_while_the_operator_is_down(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    # What `helm uninstall` does: the operator stops in the same step as its pool is deleted.
    kube = pools.kube
    await declare(broker, f"{namespace}.gone")
    await kube.aapply(deployment("gone", 1), namespace)
    await kube.aapply(pool("gone", "gone", f"{namespace}.gone", targetPerReplica=5, maxReplicas=3), namespace)
    polled = await active(kube, namespace, "gone")
    assert polled["metadata"].get("finalizers", []) == []
    pools.operator.kill()
    try:
        await kube.arun("delete", "crawlworkerpool", "gone", "-n", namespace, "--timeout=30s")
        assert await kube.aget("crawlworkerpool", "gone", namespace) is None
    finally:
        pools.operator.start()


async def test_an_operator_restart_does_not_make_replicas_jump(
    pools: Pools, namespace: str, broker: aio_pika.abc.AbstractChannel
) -> None:
    kube, window = pools.kube, 30
    for name in ("steady", "clock"):
        await declare(broker, f"{namespace}.{name}")
        await kube.aapply(deployment(name, 1), namespace)
        spec = {"targetPerReplica": 5, "maxReplicas": 10, "scaleDown": {"stabilizationSeconds": window}}
        await kube.aapply(pool(name, name, f"{namespace}.{name}", **spec), namespace)
    await publish(broker, f"{namespace}.steady", 20)
    await wait_replicas(kube, namespace, "steady", 4)
    await (await declare(broker, f"{namespace}.steady")).purge()  # the recommendation is now 1, the window holds 4
    before = await wait_pool(
        kube, namespace, "steady", lambda p: p["status"].get("observed", {}).get("ready") == 0, "drained"
    )

    since = len(pools.operator.output())
    pools.operator.restart()
    await eventually(
        lambda: bool(log_lines(pools.operator, "pool_scaling_started", f"{namespace}/steady", since)),
        timeout=SETTLE,
        what="restart",
    )
    await publish(broker, f"{namespace}.clock", 30)
    await wait_replicas(kube, namespace, "clock", 6)  # the new process polls and scales up at once

    assert await replicas(kube, namespace, "steady") == 4  # no jump down (nor up) across the restart
    after = await kube.aget("crawlworkerpool", "steady", namespace)
    assert after is not None
    assert after["status"]["lastScaleTime"] == before["status"]["lastScaleTime"]
    assert condition(after, "Active")["lastTransitionTime"] == condition(before, "Active")["lastTransitionTime"]
    assert log_lines(pools.operator, "pool_scaled", f"{namespace}/steady", since) == []
    assert not [e for e in await pool_events(kube, namespace, "steady") if e["reason"] in {"Resumed", "ScaledDown"}]
    assert re.search(r"highest recommendation of the last 30s is 4", condition(after, "ScalingLimited")["message"])
