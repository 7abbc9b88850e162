"""Every figure of issue #16 in one run: each bench in turn (its own process), then one summary of every figure
with its ratio and target.

    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/all.py --quick   # a few minutes
    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/all.py           # the full run (hours: 100,000 pages)

Benches are found by module name in bench/; one that is absent is reported as such and skipped, one that fails
is reported and the others still run. ``--only a,b`` runs a subset. Each bench writes its figures to a JSON file
this script names (``--json PATH``), and the summary at the end reads them back: one line per goal, its figure, its
ratio and whether its target is met.

| bench | goal | quick | full |
|---|---|---|---|
| startup | 2: first request ≤ 0.5 s after start | 3 runs, the worker included | its default |
| crawl_size | 1 and 3, embedded: the embedded crawl vs raw, its size curve | its own ``--quick`` | its default |
| crawl_vs_scrapy | the issue's table: raw, Scrapy, embedded, 1 and 2 workers | 1,000 pages | 2,000 pages |
| metadata_pipeline | 5: one worker draining kubecrawl.metadata vs raw | 1,000 records | 20,000 records |
| dist_size | 3, 1 worker: size curve, RSS, PostgreSQL CPU and bytes per page | 3,000 pages, 1 and 2 workers | 100,000 pages (2 workers: 20,000) |
| many_hosts | 4: 200 hosts, politeness at the server, fairness, throughput | 10 pages a host | 50 pages a host |
| scaling_model | 6: the model of docs/scaling.md checked against dist_size's 1- and 2-worker runs | | |
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def plan(quick: bool, stamp: str) -> list[tuple[str, str, list[str]]]:
    """(label, module, arguments) in the order they run."""

    def out(name: str) -> str:
        return str(RESULTS / f"all-{stamp}-{name}.json")

    q = ["--quick"] if quick else []
    return [
        # --runs 3, not startup's own --quick: that leaves the worker out (no servers), and goal 2 includes it.
        ("startup", "startup", [*(["--runs", "3"] if quick else []), "--json", out("startup")]),
        ("crawl_size", "crawl_size", [*q, "--json", out("crawl-size")]),
        ("crawl_vs_scrapy", "crawl_vs_scrapy", ["--pages", "1000" if quick else "2000", "--json", out("crawl")]),
        ("metadata_pipeline", "metadata_pipeline", [*(q or ["--pages", "20000"]), "--json", out("metadata")]),
        ("dist_size-1", "dist_size", [*(q or ["--pages", "100000"]), "--json", out("size-1")]),
        ("dist_size-2", "dist_size", [*(q or ["--pages", "20000"]), "--workers", "2", "--json", out("size-2")]),
        ("many_hosts", "many_hosts", [*q, "--json", out("hosts")]),
        ("scaling_model", "scaling_model", [out("size-1"), out("size-2"), "--json", out("model")]),
    ]


def single_process(read: Callable[[str], dict[str, Any] | None], ok: dict[bool, str]) -> None:
    """Goals 1, 2 and 3 embedded: the benches that run kubecrawl's processes on their own (no servers)."""
    if (crawl := read("crawl")) and "embedded / raw" in crawl["ratios"]:
        ratios, label = crawl["ratios"], "embedded / raw"
        print(
            f"  goal 1  embedded crawl {ratios[label]:.2f} × raw (≥ {crawl['targets'][label]}) "
            f"{ok[crawl['met'][label]]}; {ratios.get('embedded / scrapy', 0):.2f} × Scrapy"
        )
    if startup := read("startup"):
        for name, figure in startup["results"].items():
            if name != "peer" and "@" not in name:
                print(
                    f"  goal 2  {name}: {figure['median_seconds']:.3f} s to {figure['measured']} "
                    f"({figure['ratio_to_peer']:.2f} × the peer) (≤ 0.5 s) {ok[figure['target_met']]}"
                )
    if size := read("crawl-size"):
        print(
            f"  goal 3  embedded, {size['fetched']} pages: last/first tenth {size['last_over_first']:.2f} (≥ 0.9) "
            f"{ok[size['flat_met']]}; RSS {size['max_rss_mb']:.0f} MB (≤ 300) {ok[size['rss_met']]}; "
            f"{size['db_bytes_per_page']:.0f} DB bytes/page"
        )


def summary(stamp: str, outcomes: dict[str, str]) -> None:
    def read(name: str) -> dict[str, Any] | None:
        path = RESULTS / f"all-{stamp}-{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    ok = {True: "met", False: "NOT met"}
    print("\n=== summary ===")
    for label, outcome in outcomes.items():
        print(f"  {label:<18} {outcome}")
    single_process(read, ok)
    if meta := read("metadata"):
        print(
            f"  goal 5  metadata pipeline: 1 worker {meta['worker_pages_per_s']:.0f} pages/s, raw "
            f"{meta['raw_pages_per_s']:.0f}: ratio {meta['ratio_vs_raw']:.2f} (≥ 0.5) {ok[meta['target_met']]}"
        )
    for name in ("size-1", "size-2"):
        if size := read(name):
            rss = size["peak_rss_mb"]
            print(
                f"  goal 3  {size['workers']} worker(s), {size['fetched']} pages: {size['pages_per_s']:.0f} pages/s; "
                f"last/first tenth {size['last_over_first']:.2f} (≥ 0.9) {ok[size['flat_met']]}; "
                f"PostgreSQL CPU/page last/first {size['postgres_cpu_last_over_first']:.2f}; "
                f"RSS worker {max(rss['workers']):.0f} MB (≤ 250), API {rss['api']:.0f} MB (≤ 200) "
                f"{ok[size['rss_met']]}; {size['database_bytes_per_page']} DB bytes/page"
            )
    if model := read("model"):
        for check in model["checks"]:
            print(
                f"  goal 6  model, {check['workers']} worker(s): predicted {check['predicted']:.0f} pages/s, measured "
                f"{check['measured']:.0f} ({check['error']:+.0%}; bound: {check['bound']})"
            )
    if hosts := read("hosts"):
        print(
            f"  goal 4  {hosts['hosts']} hosts: throughput {hosts['throughput_ratio']:.2f} × single host (≥ 0.8) "
            f"{ok[hosts['throughput_met']]}; maxConcurrency {ok[hosts['concurrency_held']]}; delay "
            f"{ok[hosts['delay_held']]}; fairness {hosts['runs']['hosts']['fairness_max_over_min']:.2f} (≤ 2) "
            f"{ok[hosts['fairness_met']]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated labels (startup, dist_size-1, …)")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, str] = {}
    for label, module, arguments in plan(args.quick, stamp):
        if only and label not in only:
            continue
        script = BENCH / f"{module}.py"
        if not script.exists():
            outcomes[label] = f"absent (no bench/{module}.py)"
            continue
        print(f"\n=== {label}: {module}.py {' '.join(arguments)} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *arguments], check=False).returncode
        took = time.perf_counter() - started
        outcomes[label] = f"ran in {took:.0f} s" if code == 0 else f"FAILED (exit {code}) after {took:.0f} s"
    summary(stamp, outcomes)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"  load average at the end: {load}")


if __name__ == "__main__":
    main()
