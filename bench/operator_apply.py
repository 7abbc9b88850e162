"""Operator reaction time: create N CrawlSites at once → how long until each one's CronJob exists, and the operator's
CPU seconds for the burst. Peer, measured in the same run on the same API server: the same N CronJobs created
directly (what the operator's latency adds to a bare create + watch round trip).

Everything is real: the local control plane (tools/controlplane), `kubecrawl operator` as the least-privilege
ServiceAccount, `kubecrawl api` on a private PostgreSQL + RabbitMQ. Target: p99 ≤ 1 s for 100 sites.

    .venv/bin/python bench/operator_apply.py [--sites 100] [--json bench/results/operator_apply.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes_asyncio import client, config, watch  # noqa: E402
from tests.support.controlplane import ControlPlane, ensure_built, free_port  # noqa: E402
from tests.support.servers import PostgresServer, RabbitServer  # noqa: E402
from tests.support.stack import (  # noqa: E402
    Kube,
    OperatorProcess,
    install_crds,
    operator_kubeconfig,
    service_env,
    start_api,
    stop_all,
)

from kubecrawl.store.migrating import upgrade  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def measure(api: client.ApiClient, namespace: str, names: list[str], create: Any) -> dict[str, float]:
    """Start a CronJob watch, call ``create(name)`` for every name as fast as possible, and return each
    name's latency from its create call to its CronJob's ADDED event."""
    batch = client.BatchV1Api(api)
    started: dict[str, float] = {}
    seen: dict[str, float] = {}
    listed = await batch.list_namespaced_cron_job(namespace)
    stream = watch.Watch()

    async def watcher() -> None:
        async for event in stream.stream(
            batch.list_namespaced_cron_job, namespace, resource_version=listed.metadata.resource_version
        ):
            name = event["object"].metadata.name
            if event["type"] == "ADDED" and name not in seen:
                seen[name] = time.perf_counter()
                if len(seen) == len(names):
                    return

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0.2)  # the watch is open before the first create
    for name in names:
        started[name] = time.perf_counter()
        await create(name)
    await asyncio.wait_for(task, timeout=120)
    stream.stop()
    await stream.close()  # the Watch owns an ApiClient (and its HTTP session) of its own
    return {name: seen[name] - started[name] for name in names}


def summary(latencies: dict[str, float]) -> dict[str, float]:
    values = list(latencies.values())
    return {
        "p50_s": round(statistics.median(values), 4),
        "p99_s": round(percentile(values, 99), 4),
        "max_s": round(max(values), 4),
    }


async def run(sites: int, cluster_kubeconfig: Path) -> dict[str, Any]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cluster_kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        batch = client.BatchV1Api(api)
        peer_ns, ours_ns = f"bench-direct-{uuid.uuid4().hex[:6]}", f"bench-op-{uuid.uuid4().hex[:6]}"
        for ns in (peer_ns, ours_ns):
            await core.create_namespace({"metadata": {"name": ns}})
        names = [f"site-{i:04d}" for i in range(sites)]

        async def create_cronjob(name: str) -> None:
            await batch.create_namespaced_cron_job(
                peer_ns,
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "metadata": {"name": name},
                    "spec": {
                        "schedule": "0 3 * * *",
                        "jobTemplate": {
                            "spec": {
                                "template": {
                                    "spec": {
                                        "restartPolicy": "Never",
                                        "containers": [{"name": "t", "image": "kubecrawl:bench"}],
                                    }
                                }
                            }
                        },
                    },
                },
            )

        async def create_site(name: str) -> None:
            body = {
                "apiVersion": "kubecrawl.io/v1alpha1",
                "kind": "CrawlSite",
                "metadata": {"name": name},
                "spec": {"url": f"https://{name}.example.com/", "schedule": "0 3 * * *"},
            }
            await custom.create_namespaced_custom_object("kubecrawl.io", "v1alpha1", ours_ns, "crawlsites", body)

        direct = await measure(api, peer_ns, names, create_cronjob)
        return {"direct": direct, "operator": await measure(api, ours_ns, names, create_site), "namespace": ours_ns}


async def wait_ready(kube: Kube, namespace: str, count: int, timeout: float = 120) -> float:
    """Seconds until every CrawlSite reports Ready (CronJob applied AND spec synced to the API)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        items = json.loads((await kube.arun("get", "crawlsites", "-n", namespace, "-o", "json")).stdout)["items"]
        ready = sum(
            any(c["type"] == "Ready" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions", []))
            for i in items
        )
        if ready == count:
            return time.perf_counter() - start
        await asyncio.sleep(0.2)
    raise TimeoutError(f"not all {count} CrawlSites became Ready within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "operator_apply.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kubecrawl-bench-") as tmp:
        base = Path(tmp)
        controlplane = ControlPlane(base / "cp", ensure_built())
        postgres, rabbit = PostgresServer(base / "pg"), RabbitServer(base / "rmq")
        processes = []
        try:
            kube = Kube(Path(controlplane.start()))
            install_crds(kube)
            postgres.start()
            rabbit.start()
            database_url = postgres.create_database("bench")
            upgrade(database_url)
            env = service_env(database_url, rabbit.add_vhost("bench"))
            api_port = free_port()
            processes.append(start_api(env, api_port, base / "api.log"))
            kubeconfig = operator_kubeconfig(
                kube, controlplane.server, controlplane.pki.ca_cert, base / "op.kubeconfig"
            )
            operator = OperatorProcess(kubeconfig, f"http://127.0.0.1:{api_port}", free_port(), base / "operator.log")
            operator.start()
            processes.append(operator)
            time.sleep(2)  # let start-up CPU (imports, discovery, first list) settle before measuring
            cpu_before = operator.cpu_seconds()
            results = asyncio.run(run(args.sites, kube.kubeconfig))
            settle = asyncio.run(wait_ready(kube, results["namespace"], args.sites))
            cpu = operator.cpu_seconds() - cpu_before
        finally:
            stop_all(*reversed(processes))
            rabbit.stop()
            postgres.stop()
            controlplane.stop()

    ours, peer = summary(results["operator"]), summary(results["direct"])
    report = {
        "benchmark": "operator_apply",
        "sites": args.sites,
        "apply_to_cronjob": ours,
        "direct_cronjob_create": peer,
        "ratio_p50": round(ours["p50_s"] / peer["p50_s"], 1),
        "ratio_p99": round(ours["p99_s"] / peer["p99_s"], 1),
        "all_ready_after_s": round(settle, 2),
        "operator_cpu_seconds": round(cpu, 2),
        "target_p99_s": 1.0,
        "target_met": ours["p99_s"] <= 1.0,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"{args.sites} CrawlSites created at once")
    print(f"  apply → CronJob exists     p50 {ours['p50_s']:.3f}s  p99 {ours['p99_s']:.3f}s  max {ours['max_s']:.3f}s")
    print(f"  peer: CronJob created      p50 {peer['p50_s']:.3f}s  p99 {peer['p99_s']:.3f}s  (direct create → watch)")
    print(f"  ratio operator/direct      p50 ×{report['ratio_p50']}  p99 ×{report['ratio_p99']}")
    print(f"  operator CPU for the burst {cpu:.2f}s  (all Ready, API synced, {settle:.1f}s after the last CronJob)")
    print(f"  target p99 ≤ 1 s: {'met' if report['target_met'] else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
