"""CrawlWorkerPool reaction time: step a queue's depth up and down N times and measure, for each step, the time from
the depth change (publish confirmed / purge answered) to the Deployment's /scale written (its replicas seen by a
watch on the Deployment), with pollSeconds=1. Target: p99 ≤ 2 s.

Everything is real: the local control plane (tools/controlplane), RabbitMQ with the management plugin, and
`kubecrawl operator` as the least-privilege ServiceAccount. Steps start at a random moment within a poll, so the
figures sample every phase of the poll loop.

Peer: KEDA's RabbitMQ scaler with its documented defaults cannot run here (it needs the HPA controller and KEDA's
metrics API server behind the aggregation layer), so it is modelled from those defaults: the HPA reads the metric
every 15 s (``--horizontal-pod-autoscaler-sync-period``), KEDA polls every 30 s (``pollingInterval``) to leave or
return to zero, and HPA scale-downs wait ``stabilizationWindowSeconds: 300``. For a step at a random moment the
reaction is uniform over a sync period: p50 7.5 s, p99 14.85 s between 1 and N replicas; leaving zero adds KEDA's
30 s poll; scaling down adds the 300 s window. The pool here runs with ``stabilizationSeconds: 0`` so that
down-steps compare like for like with a KEDA configured the same way (both would add their window otherwise).

    .venv/bin/python bench/scaling.py [--steps 20] [--json bench/results/scaling.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
from kubernetes_asyncio import client, config, watch  # noqa: E402
from tests.support.controlplane import ControlPlane, ensure_built, free_port  # noqa: E402
from tests.support.servers import RabbitServer  # noqa: E402
from tests.support.stack import Kube, OperatorProcess, install_crds, operator_kubeconfig, stop_all  # noqa: E402

NAMESPACE = "bench-scaling"
QUEUE = "bench.work"
TARGET_PER_REPLICA = 10
HIGH, LOW = 4, 1  # replicas for the up and down steps: 40 ready messages, then none
POLL_SECONDS = 1
# KEDA/HPA documented defaults (keda.sh ScaledObject spec; kube-controller-manager flags; HPA behaviour).
KEDA_POLLING_INTERVAL_S = 30.0
HPA_SYNC_PERIOD_S = 15.0
HPA_SCALE_DOWN_WINDOW_S = 300.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(values), 3),
        "p99_s": round(percentile(values, 99), 3),
        "max_s": round(max(values), 3),
        "n": len(values),
    }


def keda_model() -> dict[str, dict[str, float]]:
    """Reaction of KEDA + HPA defaults to a step at a uniformly random moment (see the module docstring)."""

    def uniform(period: float, offset: float = 0.0) -> dict[str, float]:
        return {"p50_s": round(offset + period * 0.5, 2), "p99_s": round(offset + period * 0.99, 2)}

    return {
        "up_between_1_and_n": uniform(HPA_SYNC_PERIOD_S),
        "up_from_zero": uniform(KEDA_POLLING_INTERVAL_S, 0.0),  # activation only; the HPA's first sync follows
        "down_with_window_0": uniform(HPA_SYNC_PERIOD_S),
        "down_default_window": uniform(HPA_SYNC_PERIOD_S, HPA_SCALE_DOWN_WINDOW_S),
    }


def manifests() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "bench-workers"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "workers", "namespace": NAMESPACE},
            "spec": {
                "replicas": LOW,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "w", "image": "x"}]}},
            },
        },
        {
            "apiVersion": "kubecrawl.io/v1alpha1",
            "kind": "CrawlWorkerPool",
            "metadata": {"name": "workers", "namespace": NAMESPACE},
            "spec": {
                "deploymentName": "workers",
                "queue": QUEUE,
                "targetPerReplica": TARGET_PER_REPLICA,
                "minReplicas": LOW,
                "maxReplicas": 10,
                "pollSeconds": POLL_SECONDS,
                "scaleDown": {"stabilizationSeconds": 0},
            },
        },
    ]


class ReplicaWatch:
    """The Deployment's spec.replicas as the API server announces it (a watch: milliseconds after the write)."""

    def __init__(self, apps: client.AppsV1Api) -> None:
        self._apps = apps
        self.replicas: int | None = None
        self.changed = asyncio.Condition()
        self._stream = watch.Watch()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self._apps.list_namespaced_deployment(NAMESPACE, field_selector="metadata.name=workers")
        self.replicas = listed.items[0].spec.replicas
        self._task = asyncio.create_task(self._run(listed.metadata.resource_version))

    async def _run(self, version: str) -> None:
        async for event in self._stream.stream(
            self._apps.list_namespaced_deployment,
            NAMESPACE,
            field_selector="metadata.name=workers",
            resource_version=version,
            timeout_seconds=3600,
        ):
            async with self.changed:
                self.replicas = event["object"].spec.replicas
                self.changed.notify_all()

    async def until(self, replicas: int, timeout: float = 60) -> float:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.replicas == replicas), timeout)
        return time.perf_counter()

    def stop(self) -> None:
        self._stream.stop()
        if self._task is not None:
            self._task.cancel()


async def run(steps: int, kubeconfig: Path, broker_url: str) -> dict[str, list[float]]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    connection = await aio_pika.connect(broker_url)
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(QUEUE, durable=True)
    results: dict[str, list[float]] = {"up": [], "down": []}
    async with client.ApiClient(configuration) as api:
        replicas = ReplicaWatch(client.AppsV1Api(api))
        await replicas.start()
        await replicas.until(LOW)
        rng = random.Random(5)  # a phase for each step: reproducible, not a secret
        for step in range(steps):
            up = step % 2 == 0
            await asyncio.sleep(rng.uniform(0.0, POLL_SECONDS))  # a random phase against the operator's polls
            if up:
                for _ in range(HIGH * TARGET_PER_REPLICA):
                    await channel.default_exchange.publish(aio_pika.Message(b"x", delivery_mode=2), routing_key=QUEUE)
            else:
                await queue.purge()
            changed = time.perf_counter()
            seen = await replicas.until(HIGH if up else LOW)
            results["up" if up else "down"].append(seen - changed)
            print(f"  step {step + 1:2d} {'up  ' if up else 'down'} {seen - changed:6.3f}s", flush=True)
        replicas.stop()
    await connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / f"scaling-{stamp}.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kubecrawl-bench-") as tmp:
        base = Path(tmp)
        controlplane = ControlPlane(base / "cp", ensure_built())
        rabbit = RabbitServer(base / "rmq")
        processes = []
        try:
            kube = Kube(Path(controlplane.start()))
            install_crds(kube)
            rabbit.start()
            broker_url = rabbit.add_vhost("bench")
            kubeconfig = operator_kubeconfig(
                kube, controlplane.server, controlplane.pki.ca_cert, base / "op.kubeconfig"
            )
            operator = OperatorProcess(
                kubeconfig,
                "http://127.0.0.1:9",  # no CrawlSites here: the API is never called
                free_port(),
                base / "operator.log",
                KUBECRAWL_RABBITMQ_URL=broker_url,
                KUBECRAWL_RABBITMQ_MANAGEMENT_URL=rabbit.management_url,
            )
            operator.start()
            processes.append(operator)
            kube.run("create", "namespace", NAMESPACE)
            kube.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()}))
            cpu_before = operator.cpu_seconds()
            started = time.perf_counter()
            print(f"{args.steps} depth steps (0 ↔ {HIGH * TARGET_PER_REPLICA} ready), pollSeconds={POLL_SECONDS}")
            results = asyncio.run(run(args.steps, kube.kubeconfig, broker_url))
            cpu = operator.cpu_seconds() - cpu_before
            wall = time.perf_counter() - started
        finally:
            stop_all(*reversed(processes))
            rabbit.stop()
            controlplane.stop()

    everything = results["up"] + results["down"]
    ours = {"all": summary(everything), "up": summary(results["up"]), "down": summary(results["down"])}
    keda = keda_model()
    report = {
        "benchmark": "scaling",
        "steps": args.steps,
        "poll_seconds": POLL_SECONDS,
        "reaction": ours,
        "keda_defaults_model": keda,
        "ratio_p50_vs_keda": round(keda["up_between_1_and_n"]["p50_s"] / ours["all"]["p50_s"], 1),
        "ratio_p99_vs_keda": round(keda["up_between_1_and_n"]["p99_s"] / ours["all"]["p99_s"], 1),
        "operator_cpu_seconds": round(cpu, 2),
        "operator_cpu_share": round(cpu / wall, 3),
        "target_p99_s": 2.0,
        "target_met": ours["all"]["p99_s"] <= 2.0,
        "samples_s": {k: [round(v, 4) for v in vs] for k, vs in results.items()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"depth change → /scale written (pollSeconds={POLL_SECONDS}, {args.steps} steps)")
    for name, figures in ours.items():
        print(f"  {name:4s} p50 {figures['p50_s']:.3f}s  p99 {figures['p99_s']:.3f}s  max {figures['max_s']:.3f}s")
    print(
        f"  peer, KEDA defaults (model): 1→N p50 {keda['up_between_1_and_n']['p50_s']}s p99 "
        f"{keda['up_between_1_and_n']['p99_s']}s; from zero +{KEDA_POLLING_INTERVAL_S:g}s poll; "
        f"down p50 {keda['down_default_window']['p50_s']}s with its default 300 s window"
    )
    print(f"  ratio KEDA/kubecrawl  p50 ×{report['ratio_p50_vs_keda']}  p99 ×{report['ratio_p99_vs_keda']}")
    print(f"  operator CPU {cpu:.2f}s over {wall:.0f}s ({report['operator_cpu_share']:.1%} of a core)")
    print(f"  target p99 ≤ 2 s: {'met' if report['target_met'] else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  written to {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")


if __name__ == "__main__":
    main()
