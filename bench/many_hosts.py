"""Many hosts at once (issue #16 goal 4): 200 hosts crawled by ONE ``kubecrawl worker`` (RabbitMQ + PostgreSQL),
politeness counted at the server.

127.0.0.0/8 is loopback on Linux: one small counting server (aiohttp, in its own process) listens on
127.0.1.1 … 127.0.1.H (one "host" each) and on 127.0.0.1 for the single-host baseline, answers each request
after 20 ms (so that requests in flight overlap at the server, as at a remote host; a file served in no time
would show one in flight whatever the crawler did) and logs it (start, end, address), so that per-host in-flight
requests and request spacing are rebuilt from what the server saw. The
worker runs with the SSRF guard ON and ``KUBECRAWL_ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8"]'`` (docs/security.md).
Runs, one after the other, on the same stack:

    single   one crawl of 127.0.0.1, maxConcurrency 16 (the worker's prefetch): H × P pages.
    hosts    H crawls at once, one per host, P pages each, maxConcurrency C (H × C ≥ 16: the worker's prefetch
             is the total concurrency, as in ``single``). Checks: at most C requests in flight per host;
             throughput ≥ 0.8 × single; fairness: max/min pages per host until the first host runs out of work
             (target ≤ 2).
    delay    D of the hosts, one crawl each, maxConcurrency 1 and delaySeconds S: the gaps between a host's
             request starts must all be ≥ S (and never two at once).
    span     ONE crawl spanning every host (pages link to the same paths on other hosts; ``sameHost: false``),
             maxConcurrency 16, delaySeconds S2 per host: per-host gaps ≥ S2; fairness over the hosts.

Request starts are the server's (when its handler began), so a gap is judged with 2 ms of slack for the
scheduling of the server's own loop; anything shorter is a violation and is reported with its count.

    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/many_hosts.py --quick   # 200 hosts × 20 pages
    flock /tmp/kubecrawl-bench.lock .venv/bin/python bench/many_hosts.py            # 200 hosts × 50 pages
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import crawl_vs_scrapy as crawl_bench
from distributed import Services, http_json, load_average, tree_cpu

PREFETCH = 16
PER_HOST_CONCURRENCY = 2
THROUGHPUT_TARGET = 0.8
FAIRNESS_TARGET = 2.0
SLACK_S = 0.002  # $msec and $request_time are in milliseconds

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")
LATENCY_S = 0.02  # each answer waits this long: requests in flight overlap at the server, as at a remote host


def serve(root: str, span_root: str, port: int, span_port: int, hosts: int, log: str) -> None:
    """The counting web server (run as ``many_hosts.py serve …``): files of ``root`` on 127.0.0.1 and every host
    at ``port``, of ``span_root`` on every host at ``span_port``; each answer after LATENCY_S; one log line per
    request, ``end took address status uri`` (nginx's $msec $request_time $server_addr …), written at exit."""
    import asyncio
    import signal

    from aiohttp import web

    lines: list[str] = []
    cache: dict[tuple[str, str], bytes | None] = {}

    def make(base: str) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            started = time.time()
            await asyncio.sleep(LATENCY_S)
            path = request.path
            key = (base, path)
            if key not in cache:
                file = Path(base) / (path.lstrip("/") or "index.html")
                cache[key] = file.read_bytes() if file.is_file() else None
            body = cache[key]
            status = 200 if body is not None else 404
            address = request.transport.get_extra_info("sockname")[0] if request.transport else "?"
            lines.append(f"{time.time():.4f} {time.time() - started:.4f} {address} {status} {path}")
            kind = "text/plain" if path.endswith(".txt") else "text/html"
            return web.Response(status=status, body=body or b"not found", content_type=kind)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        return app

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        runners = []
        for base, at, addresses in (
            (root, port, ["127.0.0.1", *map(host, range(1, hosts + 1))]),
            (span_root, span_port, list(map(host, range(1, hosts + 1)))),
        ):
            runner = web.AppRunner(make(base), access_log=None)
            await runner.setup()
            runners.append(runner)
            for address in addresses:
                await web.TCPSite(runner, address, at, backlog=1024).start()
        print("ready", flush=True)
        await stop.wait()
        Path(log).write_text("\n".join(lines) + "\n")
        for runner in runners:
            await runner.cleanup()

    asyncio.run(main())


def host(n: int) -> str:
    return f"127.0.1.{n}"


def generate_span_site(root: Path, pages: int, hosts: int, port: int, seed: int = 11) -> None:
    """Pages whose links point at the same site on other hosts (absolute URLs): one crawl spans them all."""
    rng = random.Random(seed)
    for i in range(pages):
        links = "".join(
            f'<li><a href="http://{host(rng.randrange(hosts) + 1)}:{port}{crawl_bench.page_path(rng.randrange(pages))}">x</a></li>'
            for _ in range(crawl_bench.LINKS_PER_PAGE)
        )
        body = " ".join(rng.choices(crawl_bench.WORDS, k=1500))
        path = root / ("index.html" if i == 0 else crawl_bench.page_path(i).lstrip("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"<!doctype html><html><head><title>Span page {i}</title></head><body><ul>{links}</ul><p>{body}</p></body></html>"
        )
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")


def start_server(
    work: Path, root: Path, span_root: Path, port: int, span_port: int, hosts: int
) -> subprocess.Popen[str]:
    args = [str(root), str(span_root), str(port), str(span_port), str(hosts), str(work / "access.log")]
    proc = subprocess.Popen([sys.executable, __file__, "serve", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the counting server did not start")
    return proc


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(30)


def read_log(path: Path) -> list[tuple[str, float, float, str]]:
    """(address, start, end, uri) of every request the server logged."""
    requests = []
    for line in path.read_text().splitlines():
        end, took, address, _status, uri = line.split(" ", 4)
        requests.append((address, float(end) - float(took), float(end), uri))
    return requests


def max_in_flight(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])  # ends first at a tie
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def politeness(requests: list[tuple[str, float, float, str]]) -> dict[str, Any]:
    """Per host: peak requests in flight, the shortest gap between request starts; fairness until the first host's
    last request (every host still had work before then)."""
    by_host: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for address, start, end, uri in requests:
        if uri != "/robots.txt":
            by_host[address].append((start, end))
    peaks = {address: max_in_flight(spans) for address, spans in by_host.items()}
    gaps = []
    for spans in by_host.values():
        starts = sorted(start for start, _ in spans)
        gaps.extend(b - a for a, b in itertools.pairwise(starts))
    # While every host has work: from the last host's first request to the first host's last one.
    all_started = max(min(start for start, _ in spans) for spans in by_host.values())
    first_done = min(max(start for start, _ in spans) for spans in by_host.values())
    counts = [sum(1 for start, _ in spans if all_started <= start <= first_done) for spans in by_host.values()]
    measurable = first_done > all_started
    starts = [start for spans in by_host.values() for start, _ in spans]
    ends = [end for spans in by_host.values() for _, end in spans]
    return {
        "hosts": len(by_host),
        "pages": len(starts),
        "pages_per_s": len(starts) / (max(ends) - min(starts)),
        "max_in_flight_per_host": max(peaks.values()),
        "min_gap_s": min(gaps) if gaps else None,
        "gaps": sorted(gaps),
        "fairness_max_over_min": max(counts) / max(min(counts), 1) if measurable else None,
        "fairness_counts": [min(counts), max(counts)],
        "fairness_window_s": round(first_done - all_started, 3),
    }


def gap_violations(result: dict[str, Any], delay: float) -> int:
    return sum(1 for gap in result.pop("gaps") if gap < delay - SLACK_S)


def crawl_all(api: str, services: Services, specs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    for name, spec in specs.items():
        http_json("PUT", f"{api}/sites/bench/{name}", spec)
    # Triggered 16 at a time, so that the last crawl starts soon after the first (fairness needs them together).
    with ThreadPoolExecutor(16) as pool:
        crawls = list(
            pool.map(lambda name: http_json("POST", f"{api}/sites/bench/{name}/crawls", {"trigger": "manual"}), specs)
        )
    # One crawl is watched at a time, until it is over, then the next: asking for all 200 every 0.5 s was 400
    # requests a second to the API and PostgreSQL, on the cores the worker measured here needs (the single-host
    # run asked for one). The figures come from the server's log, so when a crawl is seen over does not matter.
    deadline = time.monotonic() + 3600
    done: list[dict[str, Any]] = []
    for crawl_id in [crawl["id"] for crawl in crawls]:
        while (crawl := http_json("GET", f"{api}/crawls/{crawl_id}"))["state"] not in FINAL_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(crawls) - len(done)} crawls not finished")
            services.check_processes()
            time.sleep(0.5)
        done.append(crawl)
    return done


def enable_statement_stats(services: Services) -> None:
    """Restart the bench's PostgreSQL with pg_stat_statements loaded (``--pg-statements``)."""
    services.postgres.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    services.postgres.halt()
    services.postgres.resume()


def top_statements(services: Services, database: str, limit: int = 25) -> str:
    """The statements that took the most server time since the last reset, one per line."""
    return services.postgres.psql(
        "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, "
        "left(regexp_replace(query, '\\s+', ' ', 'g'), 160) FROM pg_stat_statements "
        f"ORDER BY total_exec_time DESC LIMIT {limit}",
        database=database,
    )


def run(
    hosts: int, pages: int, delay_hosts: int, delay: float, work: Path, pg_statements: bool = False
) -> dict[str, Any]:
    from tests.support.servers import free_port

    total = hosts * pages
    site, span_site = work / "site", work / "span"
    port, span_port = free_port(), free_port()
    print(f"  generating a {total}-page site and a {pages * 4}-page spanning site …", flush=True)
    crawl_bench.generate_site(site, total)
    generate_span_site(span_site, pages * 4, hosts, span_port)
    log = work / "access.log"
    services = Services(work)
    results: dict[str, Any] = {}
    try:
        print("  starting RabbitMQ and PostgreSQL …", flush=True)
        services.start()
        if pg_statements:
            enable_statement_stats(services)
        env = services.deployment(
            "hosts",
            KUBECRAWL_PREFETCH_COUNT=str(PREFETCH),
            KUBECRAWL_ALLOW_PRIVATE_TARGETS="false",
            KUBECRAWL_ALLOWED_PRIVATE_NETWORKS='["127.0.0.0/8"]',
        )
        api_proc, api = services.start_api(env)
        (worker,) = services.start_workers(env, 1, "kubecrawl.pages")

        def politeness_of(*specs: tuple[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            server = start_server(work, site, span_site, port, span_port, hosts)  # a fresh log per run
            cpu = tree_cpu(worker.pid), tree_cpu(api_proc.pid)
            try:
                crawls = crawl_all(api, services, dict(specs))
            finally:
                stop_server(server)
            figures = politeness(read_log(log))
            figures["worker_cpu_s"] = round(tree_cpu(worker.pid) - cpu[0], 1)
            figures["api_cpu_s"] = round(tree_cpu(api_proc.pid) - cpu[1], 1)
            return figures, crawls

        def spec(url: str, max_pages: int, concurrency: int, delay_s: float = 0.0, **scope: Any) -> dict[str, Any]:
            return {
                "url": url,
                "scope": {"maxPages": max_pages, "maxDepth": 50, **scope},
                "politeness": {"maxConcurrency": concurrency, "delaySeconds": delay_s},
            }

        print(f"  single: one host, {total} pages, maxConcurrency {PREFETCH} …", flush=True)
        results["single"], _ = politeness_of(("single", spec(f"http://127.0.0.1:{port}/", total, PREFETCH)))
        results["single"].pop("gaps")
        if pg_statements:
            services.postgres.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=env["BENCH_DATABASE"])
            services.postgres.psql("SELECT pg_stat_statements_reset()", database=env["BENCH_DATABASE"])
        print(f"  hosts: {hosts} crawls × {pages} pages, maxConcurrency {PER_HOST_CONCURRENCY} …", flush=True)
        results["hosts"], crawls = politeness_of(
            *(
                (f"host-{n:03d}", spec(f"http://{host(n)}:{port}/", pages, PER_HOST_CONCURRENCY))
                for n in range(1, hosts + 1)
            )
        )
        results["hosts"].pop("gaps")
        if pg_statements:
            print("  PostgreSQL during the hosts run (calls, total ms, mean ms, rows, statement):", flush=True)
            print(top_statements(services, env["BENCH_DATABASE"]), flush=True)
        results["hosts"]["crawls_completed"] = sum(1 for crawl in crawls if crawl["state"] == "COMPLETED")
        print(f"  delay: {delay_hosts} crawls, maxConcurrency 1, delaySeconds {delay} …", flush=True)
        results["delay"], _ = politeness_of(
            *(
                (f"delay-{n:03d}", spec(f"http://{host(n)}:{port}/", max(5, pages // 2), 1, delay))
                for n in range(1, delay_hosts + 1)
            )
        )
        results["delay"]["gap_violations"] = gap_violations(results["delay"], delay)
        span_delay = delay / 2
        print(
            f"  span: one crawl over {hosts} hosts, {pages * 4} pages, delaySeconds {span_delay} per host …", flush=True
        )
        results["span"], _ = politeness_of(
            ("span", spec(f"http://{host(1)}:{span_port}/", pages * 4, PREFETCH, span_delay, sameHost=False))
        )
        results["span"]["gap_violations"] = gap_violations(results["span"], span_delay)
    finally:
        services.stop()
    ratio = results["hosts"]["pages_per_s"] / results["single"]["pages_per_s"]
    return {
        "benchmark": "many_hosts",
        "hosts": hosts,
        "pages_per_host": pages,
        "per_host_concurrency": PER_HOST_CONCURRENCY,
        "delay_seconds": delay,
        "runs": results,
        "throughput_ratio": round(ratio, 3),
        "throughput_met": ratio >= THROUGHPUT_TARGET,
        "concurrency_held": results["hosts"]["max_in_flight_per_host"] <= PER_HOST_CONCURRENCY
        and results["delay"]["max_in_flight_per_host"] <= 1,
        "delay_held": results["delay"]["gap_violations"] == 0 and results["span"]["gap_violations"] == 0,
        "fairness_met": (results["hosts"]["fairness_max_over_min"] or float("inf")) <= FAIRNESS_TARGET,
        "load_average": load_average(),
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def print_report(result: dict[str, Any]) -> None:
    runs = result["runs"]
    print(
        f"  {'run':<7} {'hosts':>5} {'pages':>6} {'pages/s':>8} {'max in flight/host':>19} {'min gap s':>10} {'fair max/min':>13} {'worker cpu':>10} {'api cpu':>7}"
    )
    for name, figures in runs.items():
        gap = "-" if figures["min_gap_s"] is None else f"{figures['min_gap_s']:.3f}"
        fair = "-" if figures["fairness_max_over_min"] is None else f"{figures['fairness_max_over_min']:.2f}"
        print(
            f"  {name:<7} {figures['hosts']:>5} {figures['pages']:>6} {figures['pages_per_s']:>8.0f} "
            f"{figures['max_in_flight_per_host']:>19} {gap:>10} {fair:>13} {figures['worker_cpu_s']:>10} "
            f"{figures['api_cpu_s']:>7}"
        )
    ok = {True: "met", False: "NOT met"}
    print(
        f"  hosts / single throughput {result['throughput_ratio']:.2f} (target ≥ {THROUGHPUT_TARGET}): {ok[result['throughput_met']]}"
    )
    print(f"  per-host maxConcurrency held at the server: {ok[result['concurrency_held']]}")
    print(
        f"  per-host delay held (gaps ≥ delay − {SLACK_S * 1000:.0f} ms): {ok[result['delay_held']]} "
        f"(violations: delay {runs['delay']['gap_violations']}, span {runs['span']['gap_violations']})"
    )
    print(f"  fairness max/min pages per host (target ≤ {FAIRNESS_TARGET}): {ok[result['fairness_met']]}")
    print(f"  load average at the end: {result['load_average']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--pages", type=int, default=50, help="pages per host")
    parser.add_argument("--quick", action="store_true", help="20 pages per host")
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--delay-hosts", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="load pg_stat_statements; print the top statements of the hosts run",
    )
    args = parser.parse_args(argv)
    pages = 20 if args.quick else args.pages
    work = Path(tempfile.mkdtemp(prefix="kubecrawl-hostsbench-"))
    work.chmod(0o755)
    try:
        result = run(args.hosts, pages, args.delay_hosts, args.delay, work, args.pg_statements)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(result)
    crawl_bench.save_result(result, args.json, "many-hosts")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    else:
        main()
