"""The scaling model of docs/scaling.md, computed from measured CPU seconds per page (bench/dist_size.py's JSON).

Each component's throughput limit is the cores it may use over its CPU cost per page; a deployment's predicted
rate is the smallest limit, and that component saturates first:

    worker     N processes, each one asyncio loop: ≤ 1 core each          → N / c_worker
    database   K cores                                                    → K / c_postgres
    broker     a classic queue is one Erlang process, so one core per queue however big the cluster:
               min(B, Q) / c_rabbitmq (B broker cores, Q queues carrying the pages; today Q = 1)
    API        A cores answering the progress reads (polls or SSE); 4 here  → A / c_api
    window     per crawl: maxConcurrency pages in flight / page latency   → crawls × maxConcurrency / latency
    machine    everything on S shared cores (this bench machine) less the cores its other users took during
               the run (/proc/stat minus our processes): S' / Σ c

The check: the same formulas with this machine's numbers (2 cores shared by workers, PostgreSQL, RabbitMQ, the
API and nginx) against the 1- and 2-worker runs of bench/dist_size.py.

    .venv/bin/python bench/scaling_model.py bench/results/dist-size-1w-*.json bench/results/dist-size-2w-*.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

COMPONENTS = ("worker", "postgres", "rabbitmq", "api")


def limits(
    cost_ms: dict[str, float],
    *,
    workers: int,
    db_cores: float,
    broker_cores: float,
    queues: int = 1,
    api_cores: float = 4.0,  # the API is stateless: it scales out like the workers
) -> dict[str, float]:
    """pages/s each component allows (cost_ms: CPU ms per page per component)."""
    return {
        "worker": workers * 1000 / cost_ms["worker"],
        "postgres": db_cores * 1000 / cost_ms["postgres"],
        "rabbitmq": min(broker_cores, queues) * 1000 / cost_ms["rabbitmq"],
        "api": api_cores * 1000 / max(cost_ms.get("api", 0.0), 1e-6),
    }


def predict(cost_ms: dict[str, float], **deployment: Any) -> tuple[float, str]:
    found = limits(cost_ms, **deployment)
    first = min(found, key=found.__getitem__)
    return found[first], first


def on_this_machine(run: dict[str, Any], cost_ms: dict[str, float], cores: float) -> tuple[float, str]:
    """Everything on ``cores`` shared cores, less what the machine's other users took during the run (when the
    run measured it): the sum of the costs bounds the rate; a worker still has ≤ 1 core."""
    measured = run["cpu_ms_per_page"]
    ours = sum(measured.get(name, 0.0) for name in (*COMPONENTS, "nginx"))
    others_cores = max(0.0, measured["machine"] - ours) * run["pages_per_s"] / 1000 if "machine" in measured else 0.0
    shared = (cores - others_cores) * 1000 / (sum(cost_ms[name] for name in COMPONENTS) + measured.get("nginx", 0.15))
    single = run["workers"] * 1000 / cost_ms["worker"]
    return (
        (shared, f"the machine's cores less {others_cores:.2f} taken by others")
        if shared < single
        else (single, "the worker's one core")
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench/dist_size.py JSON results (1 and 2 workers)")
    parser.add_argument("--json", type=Path, default=None, help="write the predictions here")
    args = parser.parse_args(argv)
    runs = sorted((json.loads(path.read_text()) for path in args.runs), key=lambda run: run["workers"])
    base = runs[0]
    # The 1-worker run's costs (several workers' CPU is summed in the JSON: per page it barely depends on N).
    cost = {name: base["cpu_ms_per_page"][name] for name in COMPONENTS}
    print("measured CPU ms per page (1-worker run):", ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))
    print(f"\ncheck against this machine ({os.cpu_count() or 2} cores shared by everything):")
    checks = []
    for run in runs:
        predicted, bound = on_this_machine(run, cost, os.cpu_count() or 2)
        error = predicted / run["pages_per_s"] - 1
        checks.append(
            {
                "workers": run["workers"],
                "measured": run["pages_per_s"],
                "predicted": round(predicted, 1),
                "bound": bound,
                "error": round(error, 3),
            }
        )
        print(
            f"  {run['workers']} worker(s): measured {run['pages_per_s']:.0f} pages/s, predicted {predicted:.0f} "
            f"({bound}), error {error:+.0%}"
        )
    print("\npredicted pages/s of a deployment (workers 1 core each, a 3-node broker with 2 cores a node):")
    table = []
    print(f"  {'workers':>7} {'db cores':>8} {'page queues':>11} {'pages/s':>8}  saturates first")
    for workers in (1, 4, 16, 64):
        for db_cores in (4, 16):
            for queues in (1, 8):
                rate, first = predict(cost, workers=workers, db_cores=db_cores, broker_cores=6, queues=queues)
                row = {"workers": workers, "db_cores": db_cores, "queues": queues, "pages_per_s": round(rate)}
                table.append(row | {"first": first})
                print(f"  {workers:>7} {db_cores:>8} {queues:>11} {rate:>8.0f}  {first}")
    need = {name: 10_000 * cost[name] / 1000 for name in COMPONENTS}
    print("\ncores needed for 10,000 pages/s at today's costs:", ", ".join(f"{k} {v:.1f}" for k, v in need.items()))
    print(
        f"  one classic queue carries at most {1000 / cost['rabbitmq']:.0f} pages/s (one core): "
        f"{max(1, round(10_000 * cost['rabbitmq'] / 1000 + 0.5))} queues (or shards) needed"
    )
    result = {"cost_ms": cost, "checks": checks, "table": table, "cores_for_10k": need}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
