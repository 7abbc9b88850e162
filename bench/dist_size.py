"""Flat cost with crawl size, distributed (issue #16 goal 3, the worker side): one crawl of a generated site of
``--pages`` pages by ``kubecrawl api`` + ``--workers`` ``kubecrawl worker`` on a private RabbitMQ + PostgreSQL.

The crawl's counters are sampled (GET /crawls/{id}) every quarter second together with the CPU seconds of each
process tree (/proc: the workers, the API, PostgreSQL's postmaster and backends, RabbitMQ's beam.smp), and cut
into tenths of the crawl by pages fetched (interpolated between samples). Printed:

- pages/s per tenth and an ASCII plot; last tenth / first tenth against 0.9;
- PostgreSQL CPU ms per page per tenth (flat is the target: no per-page cost that grows with the crawl);
- peak RSS (VmHWM) of each worker (target ≤ 250 MB) and of the API (≤ 200 MB);
- database size per page (``pg_database_size`` and ``pg_total_relation_size('crawl_pages')`` over pages);
- CPU ms per page of every component over the whole crawl: the input of docs/scaling.md's model
  (bench/scaling_model.py).

The embedded side of the same goal is the embedded effort's bench; this one never starts ``kubecrawl crawl``.
The site is crawl_vs_scrapy.py's generator (~12 KB, 25 links a page): 100,000 pages take 1.2 GB of disk.

    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/dist_size.py --quick        # 3,000 pages
    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/dist_size.py --pages 100000 # the full run
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import crawl_vs_scrapy as crawl_bench
from distributed import (
    Services,
    http_json,
    load_average,
    machine_busy_seconds,
    peak_rss_mb,
    tree_cpu,
)

CONCURRENCY = 16
TENTHS = 10
FLAT_TARGET = 0.9
WORKER_RSS_MB, API_RSS_MB = 250, 200


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """y at x on the piecewise-linear curve through (xs, ys), xs ascending."""
    i = bisect.bisect_left(xs, x)
    if i <= 0:
        return ys[0]
    if i >= len(xs):
        return ys[-1]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def tenths(samples: list[dict[str, float]], pages: int) -> list[dict[str, float]]:
    """Per tenth of the pages: pages/s and each component's CPU ms per page (samples ascending in time)."""
    # Keep the samples where the count moved on, so that interpolating by pages is well defined.
    rising: list[dict[str, float]] = []
    for sample in samples:
        if not rising or sample["fetched"] > rising[-1]["fetched"]:
            rising.append(sample)
    fetched = [s["fetched"] for s in rising]
    rows = []
    for k in range(TENTHS):
        lo, hi = pages * k / TENTHS, pages * (k + 1) / TENTHS
        span = {
            key: interpolate(fetched, [s[key] for s in rising], hi) - interpolate(fetched, [s[key] for s in rising], lo)
            for key in rising[0]
            if key != "fetched"
        }
        rows.append(
            {
                "tenth": k + 1,
                "pages_per_s": (hi - lo) / span["t"] if span["t"] > 0 else 0.0,
                **{f"{key}_cpu_ms_per_page": 1000 * value / (hi - lo) for key, value in span.items() if key != "t"},
            }
        )
    return rows


def ascii_plot(rows: list[dict[str, float]], width: int = 50) -> list[str]:
    top = max(row["pages_per_s"] for row in rows) or 1.0
    return [
        f"  {row['tenth']:>2}/10 {row['pages_per_s']:8.0f} |{'#' * round(width * row['pages_per_s'] / top)}"
        for row in rows
    ]


def run(pages: int, workers: int, work: Path) -> dict[str, Any]:
    from tests.support.servers import free_port

    site = work / "site"
    print(f"  generating a {pages}-page site …", flush=True)
    crawl_bench.generate_site(site, pages)
    port = free_port()
    nginx = crawl_bench.start_nginx(work, site, port)
    base_url = f"http://127.0.0.1:{port}"
    services = Services(work)
    try:
        print("  starting RabbitMQ and PostgreSQL …", flush=True)
        services.start()
        env = services.deployment(f"size{workers}", KUBECRAWL_PREFETCH_COUNT=str(CONCURRENCY))
        api_proc, api = services.start_api(env)
        worker_procs = services.start_workers(env, workers, "kubecrawl.pages")
        spec = {
            "url": base_url + "/",
            "scope": {"maxPages": pages, "maxDepth": 50},
            "politeness": {"maxConcurrency": CONCURRENCY},
        }
        http_json("PUT", f"{api}/sites/bench/size", spec)

        def sample(fetched: int) -> dict[str, float]:
            return {
                "t": time.perf_counter(),
                "fetched": float(fetched),
                "worker": sum(tree_cpu(proc.pid) for proc in worker_procs),
                "api": tree_cpu(api_proc.pid),
                **services.server_cpu(),
                "nginx": tree_cpu(nginx.pid),
                "machine": machine_busy_seconds(),
            }

        samples = [sample(0)]
        crawl = http_json("POST", f"{api}/sites/bench/size/crawls", {"trigger": "manual"})
        print(f"  crawling with {workers} worker(s) …", flush=True)
        deadline = time.monotonic() + 6 * 3600
        last_print = time.monotonic()
        while crawl["state"] not in ("COMPLETED", "FAILED", "CANCELLED"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"crawl {crawl['id']} not finished: {crawl['counters']}")
            services.check_processes()
            time.sleep(0.25)
            crawl = http_json("GET", f"{api}/crawls/{crawl['id']}")
            samples.append(sample(crawl["counters"]["fetched"]))
            if time.monotonic() - last_print > 30:
                print(f"    {crawl['counters']['fetched']} pages …", flush=True)
                last_print = time.monotonic()
        fetched = crawl["counters"]["fetched"]
        database = env["BENCH_DATABASE"]
        sizes = services.postgres.psql(
            f"SELECT pg_database_size('{database}'), pg_total_relation_size('crawl_pages')", database=database
        ).split("|")
        rss = {
            "workers": [round(peak_rss_mb(proc.pid), 1) for proc in worker_procs],
            "api": round(peak_rss_mb(api_proc.pid), 1),
        }
    finally:
        nginx.terminate()
        nginx.wait(10)
        services.stop()
    rows = tenths(samples, fetched)
    first, last = rows[0]["pages_per_s"], rows[-1]["pages_per_s"]
    seconds = samples[-1]["t"] - samples[0]["t"]
    total = {
        key: 1000 * (samples[-1][key] - samples[0][key]) / fetched for key in samples[0] if key not in ("t", "fetched")
    }
    pg_per_page = [row["postgres_cpu_ms_per_page"] for row in rows]
    return {
        "benchmark": "dist_size",
        "pages": pages,
        "fetched": fetched,
        "state": crawl["state"],
        "workers": workers,
        "seconds": round(seconds, 2),
        "pages_per_s": round(fetched / seconds, 1),
        "tenths": [{key: round(value, 3) for key, value in row.items()} for row in rows],
        "last_over_first": round(last / first, 3) if first else 0.0,
        "flat_target": FLAT_TARGET,
        "flat_met": first > 0 and last / first >= FLAT_TARGET,
        "postgres_cpu_last_over_first": round(pg_per_page[-1] / pg_per_page[0], 3) if pg_per_page[0] else 0.0,
        "cpu_ms_per_page": {key: round(value, 3) for key, value in total.items()},
        "peak_rss_mb": rss,
        "rss_met": max(rss["workers"]) <= WORKER_RSS_MB and rss["api"] <= API_RSS_MB,
        "database_bytes_per_page": round(int(sizes[0]) / fetched),
        "crawl_pages_bytes_per_page": round(int(sizes[1]) / fetched),
        "load_average": load_average(),
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def print_report(result: dict[str, Any]) -> None:
    print(
        f"  {result['workers']} worker(s): {result['fetched']} of {result['pages']} pages ({result['state']}) in "
        f"{result['seconds']:.1f} s = {result['pages_per_s']:.0f} pages/s"
    )
    print("  pages/s per tenth of the crawl:")
    for line in ascii_plot(result["tenths"]):
        print(line)
    verdict = "met" if result["flat_met"] else "NOT met"
    print(f"  last tenth / first tenth {result['last_over_first']:.2f} (target ≥ {FLAT_TARGET}): {verdict}")
    pg = " ".join(f"{row['postgres_cpu_ms_per_page']:.2f}" for row in result["tenths"])
    print(f"  PostgreSQL CPU ms per page per tenth: {pg}  (last/first {result['postgres_cpu_last_over_first']:.2f})")
    rss = result["peak_rss_mb"]
    print(
        f"  peak RSS: worker {max(rss['workers']):.0f} MB (≤ {WORKER_RSS_MB}), API {rss['api']:.0f} MB "
        f"(≤ {API_RSS_MB}): {'met' if result['rss_met'] else 'NOT met'}"
    )
    print(
        f"  database size per page: {result['database_bytes_per_page']} bytes "
        f"(crawl_pages with its indexes {result['crawl_pages_bytes_per_page']})"
    )
    cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in result["cpu_ms_per_page"].items())
    print(f"  CPU ms per page over the crawl: {cpu}")
    print(f"  load average at the end: {result['load_average']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="3,000 pages")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site)")
    args = parser.parse_args(argv)
    pages = 3000 if args.quick else args.pages
    work = Path(tempfile.mkdtemp(prefix="kubecrawl-sizebench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the site
    try:
        result = run(pages, args.workers, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(result)
    crawl_bench.save_result(result, args.json, f"dist-size-{args.workers}w")
    return result


if __name__ == "__main__":
    main()
