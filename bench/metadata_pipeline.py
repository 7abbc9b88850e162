"""Metadata pipeline throughput (issue #16 goal 5): pages fetched and stored per second by ONE ``kubecrawl worker``
draining a full ``kubecrawl.metadata`` queue, against the raw loop fetching the same URLs, in one run.

1. A generated site of ``--pages`` pages (crawl_vs_scrapy.py's generator, ~12 KB of HTML each) on nginx.
2. ``kubecrawl api`` on a private RabbitMQ + PostgreSQL records and publishes one ``POST /metadata`` per page
   (the API's own path: a QUEUED row, then a confirmed message); no worker runs yet, so the queue fills
   (``KUBECRAWL_METADATA_QUEUE_MAX_LENGTH`` raised above ``--pages`` for the run).
3. ONE ``kubecrawl worker`` (prefetch 16) starts and drains it; the rate is pages over the time from the first
   record fetched to the last one stored (``fetched_at`` / ``updated_at`` in PostgreSQL), and every record must
   end COMPLETED.
4. The raw loop (aiohttp + selectolax, 16 in flight, no storage) fetches the same URLs.

Target: worker ≥ 0.5 × raw. Also printed: CPU seconds per page of the worker, PostgreSQL and RabbitMQ during the
drain, the worker's peak RSS.

    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/metadata_pipeline.py [--pages 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import crawl_vs_scrapy as crawl_bench
from distributed import Services, load_average, peak_rss_mb, tree_cpu

TARGET = 0.5
PREFETCH = 16


async def post_all(api: str, urls: list[str], concurrency: int = 64) -> int:
    """POST /metadata for every URL, ``concurrency`` at a time; the number of 202s."""
    import aiohttp

    accepted = 0
    pending = iter(urls)

    async def poster(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        for url in pending:
            async with session.post(f"{api}/metadata", json={"url": url}) as response:
                if response.status != 202:
                    raise RuntimeError(f"POST /metadata {url}: {response.status} {await response.text()}")
                accepted += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(poster(session) for _ in range(concurrency)))
    return accepted


def drain_figures(services: Services, database: str) -> tuple[int, int, float]:
    """(records done, records COMPLETED, seconds from the first fetch to the last store)."""
    row = services.postgres.psql(
        "SELECT count(*) FILTER (WHERE status IN ('COMPLETED','FAILED_PERMANENT')),"
        " count(*) FILTER (WHERE status = 'COMPLETED'),"
        " coalesce(extract(epoch FROM max(updated_at) - min(fetched_at)), 0) FROM page_metadata",
        database=database,
    )
    done, completed, seconds = row.split("|")
    return int(done), int(completed), float(seconds)


def queue_depth(services: Services, vhost: str, expected: int) -> int:
    """The metadata queue's depth once the management API's statistics (refreshed every second) show it."""
    deadline = time.monotonic() + 30
    depth = -1
    while time.monotonic() < deadline:
        depth = int(services.rabbit.queue(vhost, "kubecrawl.metadata").get("messages", -1))  # type: ignore[call-overload]
        if depth >= expected:
            break
        time.sleep(0.2)
    return depth


def profile_summary(folded: Path, top: int = 25) -> list[str]:
    """The functions most often on the worker's stack (inclusive), from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [f"{100 * count / max(total, 1):5.1f}%  {frame}" for frame, count in ranked]


def run(pages: int, work: Path, *, profile: bool = False) -> dict[str, Any]:
    site = work / "site"
    crawl_bench.generate_site(site, pages)
    from tests.support.servers import free_port

    port = free_port()
    nginx = crawl_bench.start_nginx(work, site, port)
    base_url = f"http://127.0.0.1:{port}"
    urls = [base_url + crawl_bench.page_path(i) for i in range(pages)]
    services = Services(work)
    try:
        print("  starting RabbitMQ and PostgreSQL …", flush=True)
        services.start()
        env = services.deployment(
            "metadata",
            KUBECRAWL_METADATA_QUEUE_MAX_LENGTH=str(pages + 1000),
            KUBECRAWL_PREFETCH_COUNT=str(PREFETCH),
        )
        api_proc, api = services.start_api(env)
        print(f"  filling kubecrawl.metadata with {pages} requests through POST /metadata …", flush=True)
        started = time.perf_counter()
        accepted = asyncio.run(post_all(api, urls))
        fill_seconds = time.perf_counter() - started
        depth = queue_depth(services, env["BENCH_VHOST"], accepted)
        print(f"  {accepted} accepted in {fill_seconds:.1f} s ({accepted / fill_seconds:.0f} req/s); depth {depth}")
        cpu_before = services.server_cpu()
        print("  one worker drains it …", flush=True)
        (worker,) = services.start_workers(env, 1, "kubecrawl.metadata")
        # Start-up (imports, connections) is not the pipeline's cost; the records done before this reading are
        # left out of the CPU per page (the management API shows the consumer up to a second late).
        worker_cpu_before = tree_cpu(worker.pid)
        done_before = drain_figures(services, env["BENCH_DATABASE"])[0]
        spy = None
        if profile:  # py-spy (the bench extra): sampled stacks of the worker while it drains
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    str(work / "worker.folded"),
                    "--pid",
                    str(worker.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 1800
        while (done := drain_figures(services, env["BENCH_DATABASE"]))[0] < pages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done[0]} of {pages} records done")
            services.check_processes()
            time.sleep(0.25)
        worker_cpu = tree_cpu(worker.pid) - worker_cpu_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        cpu_after = services.server_cpu()
        _, completed, seconds = done
        worker_rss = peak_rss_mb(worker.pid)
        api_rss = peak_rss_mb(api_proc.pid)
        services.stop_processes()
        print("  raw loop over the same URLs …", flush=True)
        raw = crawl_bench.run_child(["raw", base_url, str(pages), "raw"])
    finally:
        nginx.terminate()
        nginx.wait(10)
        services.stop()
    worker_rate = pages / seconds
    raw_rate = raw["pages"] / raw["seconds"]
    # A fast worker may settle most records before the management API shows its consumer (a quiet machine drained
    # --quick's 1,000 in 0.9 s): its CPU over the few left would read as 0, so it is not reported then.
    measured = pages - done_before
    per_page: dict[str, float | None] = {
        "worker": worker_cpu / measured if measured >= pages // 2 else None,
        **{name: (cpu_after[name] - cpu_before[name]) / pages for name in cpu_before},
    }
    profiled = profile_summary(work / "worker.folded") if profile and (work / "worker.folded").exists() else []
    return {
        "benchmark": "metadata_pipeline",
        "profile": profiled,
        "pages": pages,
        "completed": completed,
        "worker_seconds": round(seconds, 3),
        "worker_pages_per_s": round(worker_rate, 1),
        "raw_pages_per_s": round(raw_rate, 1),
        "ratio_vs_raw": round(worker_rate / raw_rate, 3),
        "target": TARGET,
        "target_met": worker_rate / raw_rate >= TARGET and completed == pages,
        "cpu_ms_per_page": {
            name: None if value is None else round(value * 1000, 3) for name, value in per_page.items()
        },
        "records_done_before_worker_cpu_reading": done_before,
        "fill_requests_per_s": round(accepted / fill_seconds, 1),
        "peak_rss_mb": {"worker": round(worker_rss, 1), "api": round(api_rss, 1)},
        "load_average": load_average(),
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def print_report(result: dict[str, Any]) -> None:
    verdict = "met" if result["target_met"] else "NOT met"
    print(
        f"  metadata pipeline: 1 worker {result['worker_pages_per_s']:.0f} pages/s "
        f"({result['completed']}/{result['pages']} COMPLETED in {result['worker_seconds']:.1f} s), "
        f"raw loop {result['raw_pages_per_s']:.0f} pages/s"
    )
    print(f"  ratio worker / raw {result['ratio_vs_raw']:.2f} (target ≥ {result['target']}): {verdict}")
    cpu = ", ".join(
        f"{name} {ms:.2f}" if ms is not None else f"{name} not measured"
        for name, ms in result["cpu_ms_per_page"].items()
    )
    print(f"  CPU ms per page: {cpu}; peak RSS worker {result['peak_rss_mb']['worker']:.0f} MB")
    if result["cpu_ms_per_page"]["worker"] is None:
        print(
            f"  (the worker settled {result['records_done_before_worker_cpu_reading']} of {result['pages']} records"
            " before its start-up was over: more --pages measure its CPU)"
        )
    print(f"  load average at the end: {result['load_average']}")
    if result["profile"]:
        print("  worker profile (share of samples with the function on the stack):")
        for line in result["profile"]:
            print("    " + line)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1,000 pages")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="py-spy the worker while it drains")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, site)")
    args = parser.parse_args(argv)
    pages = 1000 if args.quick else args.pages
    work = Path(tempfile.mkdtemp(prefix="kubecrawl-metabench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the site
    try:
        result = run(pages, work, profile=args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(result)
    crawl_bench.save_result(result, args.json, "metadata")
    return result


if __name__ == "__main__":
    main()
