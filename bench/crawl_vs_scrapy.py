"""Crawl benchmark: kubecrawl against Scrapy and against the raw fetch-and-parse limit, in ONE run, one site.

A generated site of ``--pages`` pages (default 2,000; about 12 KB of HTML each, ~25 links per page, a
robots.txt allowing everything) is served by nginx on loopback. Then, one after the other, each in its own
process:

    raw        a bare aiohttp loop, 16 requests in flight, over the known URL list, parsing every page with
               selectolax (lexbor) for its links and title (elements found by tag name: no CSS engine per page):
               no frontier, no storage: the machine's limit.
    raw-uvloop the same loop on uvloop, the event loop kubecrawl's processes run on (for information).
    scrapy     Scrapy (``.[bench]`` extra), default settings except 16 concurrent requests (also per domain)
               and no delay; robots.txt obeyed as by default; follows every same-site link, yields title and
               description per page.
    embedded   ``kubecrawl crawl URL`` (SQLite, in-process broker), concurrency 16.
    dist-1     ``kubecrawl api`` + 1 ``kubecrawl worker`` on RabbitMQ + PostgreSQL, maxConcurrency 16.
    dist-2     the same with 2 worker processes.
    mongo-1    dist-1 on MongoDB: FerretDB on the same PostgreSQL server (``mongodb://``, the MongoDB store).
    mongo-2    the same with 2 worker processes.

mongo-N / dist-N is what the MongoDB path costs on the same storage engine: FerretDB's translation of the wire
protocol into SQL plus the MongoDB store's design. FerretDB 1.24 pushes only equalities down to PostgreSQL, as
``_jsonb->'field' @> value``, which no index serves: every query and every update is a sequential scan of its
collection, and FerretDB decodes in Go every document the scan returns (sorts, ``$in``, ranges are evaluated
there). Until 2026-12-06 each page was a dozen round trips of its own under the crawl's lease
(store/mongo/locking.py, which only FerretDB's non-atomic updates make necessary), the worker's 16 pages in flight
polled the lease document for their turns, and each refill read and sorted all the crawl's PENDING pages: 1,000
pages, load 0.2, mongo-1 14 pages/s against dist-1 807 (0.02); CPU seconds FerretDB 53.9, its PostgreSQL 28.0,
the worker 20.2; in a second run of it (load 5.7, 8 pages/s) PostgreSQL ran 48,000 sequential scans (34,000 of them
on the lease collection, 9,800 on ``crawls``, 3,000 on ``crawl_pages``). Now page
starts and outcomes are group-committed across crawls (store/batching.py), each crawl's part of a batch under one
hold of its lease, callers of one lease in one process queue in memory, and the refill keeps a copy of the PENDING
pages (store/mongo/frontier.py): same command, load 1.9, mongo-1 82 pages/s against dist-1 707 (0.12); CPU seconds
PostgreSQL 6.1, FerretDB 3.7, the worker 2.0; 3.2 requests to FerretDB per page; 4,300 sequential scans (lease
collection 420, ``crawls`` 940, ``crawl_pages`` 2,750, in a run at load 2.7). What limits it now is those scans,
about 3 per page of ``crawl_pages`` (each reads the crawl's ~1,000 rows and decompresses the settled ones, whose
25 outlinks push them past PostgreSQL's 2 KB compression threshold: 2.0 ms a scan against 0.7 ms without them,
measured on 1,000 such rows), and the round trips of a batch, one after the other. mongo-2 (load 2.1): 49 pages/s
against dist-2 551 (0.09), 34-44 at load 3-4.6: two workers wait for each other's lease on the crawl through the
lock document, and each refill after the other worker's reads the PENDING pages again. On MongoDB neither the scans nor the
lease's cost apply; it is not measured here (no MongoDB server installs on these machines).

Every crawler finds the pages through links (no sitemap) and must fetch all of them; a run that does not is
reported as incomplete. Rates are pages fetched / crawl duration (the crawler's own start → finish, without
interpreter start-up). Everything shares the machine's cores with nginx (and RabbitMQ, PostgreSQL): on a
2-core machine the figures are a ratio of CPU costs more than of wall-clock capacity.

Targets (issue #4): embedded ≥ 4 × Scrapy and ≥ 0.4 × raw; dist-1 ≥ 1.5 × Scrapy; dist-2 ≥ 1.3 × dist-1.

    .venv/bin/uv sync --locked --inexact --extra test --extra bench   # Scrapy, py-spy: the versions uv.lock pins
    apt-get install -y nginx-light               # or nginx
    .venv/bin/python bench/crawl_vs_scrapy.py [--pages 2000] [--only raw,scrapy,embedded,dist-1,dist-2,mongo-1] [--rounds 3]

Figures are printed and written to ``bench/results/crawl-<timestamp>.json``. This VM's figures move by a quarter
from run to run; with ``--rounds N`` everything runs N times, in turn, and each ratio is the median of the
ratios measured within one round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.servers: the same private servers the test suite uses
RESULTS = ROOT / "bench" / "results"
KUBECRAWL = Path(sys.executable).parent / "kubecrawl"
CONCURRENCY = 16
LINKS_PER_PAGE = 25
PAGE_BYTES = 12_000
WORDS = [
    *("crawl", "metadata", "schedule", "operator", "queue", "worker", "broker", "frontier", "politeness"),
    *("robots", "sitemap", "canonical", "cluster", "replica", "deployment", "cronjob", "latency", "page"),
    *("throughput", "source", "header", "cookie", "redirect", "charset"),
]
ALL_RUNS = ("raw", "raw-uvloop", "scrapy", "embedded", "dist-1", "dist-2", "mongo-1", "mongo-2")


# --- the site ---------------------------------------------------------------------------------------------------


def save_result(result: dict[str, Any], out: Path | str | None, name: str) -> None:
    """Write a run's figures to ``out``, by default bench/results/<name>-<UTC timestamp>.json."""
    out = Path(out) if out else RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  written to {out}")


def page_path(i: int) -> str:
    return "/" if i == 0 else f"/docs/{i // 100}/page-{i}.html"


def generate_site(root: Path, pages: int, seed: int = 7) -> None:
    """``pages`` HTML pages, each reachable from the home page (page i links to i+1), plus random links."""
    rng = random.Random(seed)
    for i in range(pages):
        targets = {(i + 1) % pages, *(rng.randrange(pages) for _ in range(LINKS_PER_PAGE - 1))}
        links = "\n".join(f'<li><a href="{page_path(t)}">Page {t}</a></li>' for t in sorted(targets))
        head = (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Page {i} of the bench site</title>"
            f'<meta name="description" content="Benchmark page {i}: {" ".join(rng.choices(WORDS, k=12))}">'
            f'<link rel="canonical" href="{page_path(i)}"><meta property="og:title" content="Page {i}">'
            "<meta name='viewport' content='width=device-width'></head><body><header><nav><ul>"
            f"{links}</ul></nav></header><main><h1>Page {i}</h1>"
        )
        body: list[str] = []
        size = len(head)
        while size < PAGE_BYTES:
            paragraph = f"<p>{' '.join(rng.choices(WORDS, k=60))}.</p>\n"
            body.append(paragraph)
            size += len(paragraph)
        path = root / page_path(i).lstrip("/")
        if i == 0:
            path = root / "index.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + "".join(body) + "</main><footer>kubecrawl bench</footer></body></html>")
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type text/html;
    types {{ text/html html; text/plain txt; }}
    client_body_temp_path {base}/tmp; proxy_temp_path {base}/tmp; fastcgi_temp_path {base}/tmp;
    uwsgi_temp_path {base}/tmp; scgi_temp_path {base}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.html;
    }}
}}
"""


def start_nginx(base: Path, root: Path, port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed (Debian: apt-get install -y nginx-light)")
    (base / "tmp").mkdir(exist_ok=True)
    conf = base / "nginx.conf"
    conf.write_text(NGINX_CONF.format(base=base, root=root, port=port))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(base)], stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/robots.txt", 30, proc)
    return proc


def stop_site(nginx: subprocess.Popen[bytes], work: Path, *, keep: bool) -> None:
    """Stop the site's nginx and remove the work folder (the site, databases, logs) unless asked to keep it."""
    nginx.terminate()
    nginx.wait(10)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


# --- raw: aiohttp + selectolax, run as `python bench/crawl_vs_scrapy.py raw BASE PAGES` ------------------------


def run_raw(base_url: str, pages: int, *, on_uvloop: bool = False) -> None:
    import aiohttp
    from selectolax.lexbor import LexborHTMLParser

    async def main() -> dict[str, Any]:
        urls = [base_url + page_path(i) for i in range(pages)]
        queue: asyncio.Queue[str] = asyncio.Queue()
        for url in urls:
            queue.put_nowait(url)
        fetched = links = 0

        async def fetcher(session: aiohttp.ClientSession) -> None:
            nonlocal fetched, links
            while not queue.empty():
                url = queue.get_nowait()
                async with session.get(url) as response:
                    body = await response.read()
                tree = LexborHTMLParser(body)
                # By tag name, as kubecrawl's extraction does: a CSS selector sets up lexbor's CSS engine for each
                # parsed page, which cost more than the parse (until 2026-12-06 this loop used css()).
                titles = tree.tags("title")
                _ = titles[0].text() if titles else None
                links += sum(1 for node in tree.tags("a") if node.attributes.get("href"))
                fetched += 1

        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            started = time.perf_counter()
            await asyncio.gather(*(fetcher(session) for _ in range(CONCURRENCY)))
            elapsed = time.perf_counter() - started
        return {"pages": fetched, "seconds": elapsed, "links_seen": links}

    if on_uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(main())
    else:
        result = asyncio.run(main())
    print(json.dumps(result | {"max_rss_mb": max_rss_mb()}))


# --- scrapy, run as `python bench/crawl_vs_scrapy.py scrapy BASE` ------------------------------------------------


def run_scrapy(base_url: str) -> None:
    import scrapy
    from scrapy.crawler import CrawlerProcess

    stats: dict[str, Any] = {}

    class BenchSpider(scrapy.Spider):  # type: ignore[misc]
        name = "bench"
        start_urls: ClassVar[list[str]] = [base_url + "/"]
        allowed_domains: ClassVar[list[str]] = ["127.0.0.1"]

        def parse(self, response: Any) -> Any:
            yield {
                "url": response.url,
                "title": response.css("title::text").get(),
                "description": response.css('meta[name="description"]::attr(content)').get(),
            }
            yield from response.follow_all(css="a")

        def closed(self, reason: str) -> None:
            stats.update(self.crawler.stats.get_stats())
            stats["reason"] = reason
            stats["finished"] = time.perf_counter()

    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": CONCURRENCY,
            "CONCURRENT_REQUESTS_PER_DOMAIN": CONCURRENCY,
            "DOWNLOAD_DELAY": 0,
            "ROBOTSTXT_OBEY": True,
            "LOG_LEVEL": "WARNING",
            "TELNETCONSOLE_ENABLED": False,
        }
    )
    process.crawl(BenchSpider)
    started = time.perf_counter()  # the reactor starts the crawl at once; imports and settings are done
    process.start()
    elapsed = stats["finished"] - started
    pages = int(stats.get("item_scraped_count", 0))
    print(json.dumps({"pages": pages, "seconds": elapsed, "reason": stats["reason"], "max_rss_mb": max_rss_mb()}))


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process, summed per program (nginx, beam.smp, postgres, kubecrawl …)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        if name.startswith(("python", "kubecrawl")) and len(cmdline) > 2:  # kubecrawl <role>
            name = "kubecrawl " + cmdline[2].decode(errors="replace") if b"kubecrawl" in cmdline[1] else name
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    return {name: seconds for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]) if seconds >= 0.05}


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["wall_seconds"] = time.perf_counter() - started
    return result


# --- kubecrawl -----------------------------------------------------------------------------------------------------


def crawl_seconds(crawl: dict[str, Any]) -> float:
    started = datetime.fromisoformat(crawl["started_at"] or crawl["created_at"])
    return (datetime.fromisoformat(crawl["finished_at"]) - started).total_seconds()


def run_embedded(base_url: str, pages: int, work: Path, tag: str) -> dict[str, Any]:
    env = dict(os.environ, KUBECRAWL_ALLOW_PRIVATE_TARGETS="true")
    db = work / f"embedded-{tag}.db"  # a fresh database: a second crawl of a site would be conditional
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [
            str(KUBECRAWL),
            "crawl",
            base_url + "/",
            "--max-pages",
            str(pages),
            "--max-depth",
            "50",
            "--concurrency",
            str(CONCURRENCY),
            "--db",
            str(db),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubecrawl crawl failed ({out.returncode}):\n{out.stderr[-3000:]}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    cpu = {"kubecrawl crawl (whole process, start-up included)": round(own, 2)}
    crawl = json.loads(out.stdout)
    return {
        "cpu_seconds": cpu,
        "pages": crawl["counters"]["fetched"],
        "failed": crawl["counters"]["failed"],
        "seconds": crawl_seconds(crawl),
        "wall_seconds": time.perf_counter() - started,
        "state": crawl["state"],
    }


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def run_distributed(
    base_url: str, pages: int, workers: int, work: Path, services: dict[str, Any], tag: str
) -> dict[str, Any]:
    from tests.support.servers import free_port

    rabbit, postgres = services["rabbit"], services["postgres"]
    vhost, database = f"bench-{workers}-{tag}", f"bench_{workers}_{tag}"
    rabbit.add_vhost(vhost)
    # mongo-N: a database of the FerretDB in front of the same PostgreSQL.
    ferret = services.get("ferretdb")
    database_url = ferret.url(database) if ferret is not None else postgres.create_database(database)
    env = dict(
        os.environ,
        KUBECRAWL_DATABASE_URL=database_url,
        KUBECRAWL_RABBITMQ_URL=rabbit.url(vhost),
        KUBECRAWL_ALLOW_PRIVATE_TARGETS="true",
        KUBECRAWL_LOG_FORMAT="json",
        KUBECRAWL_LOG_LEVEL="WARNING",
        KUBECRAWL_PREFETCH_COUNT=str(CONCURRENCY),
    )
    subprocess.run([str(KUBECRAWL), "migrate"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [(work / f"dist{workers}-{tag}-{name}.log").open("wb") for name in ["api", *map(str, range(workers))]]
    try:
        procs.append(
            subprocess.Popen(
                [str(KUBECRAWL), "api", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        api = f"http://127.0.0.1:{port}"
        wait_http(api + "/health/ready", 120, procs[0])
        procs.extend(
            subprocess.Popen(
                [str(KUBECRAWL), "worker", "--metrics-port", str(free_port())],
                env=env | {"POD_NAME": f"bench-worker-{n}"},
                stdout=logs[n + 1],
                stderr=subprocess.STDOUT,
            )
            for n in range(workers)
        )
        wait_consumers(rabbit, vhost, workers)
        spec = {
            "url": base_url + "/",
            "scope": {"maxPages": pages, "maxDepth": 50},
            "politeness": {"maxConcurrency": CONCURRENCY},
        }
        http_json("PUT", f"{api}/sites/bench/site-{workers}-{tag}", spec)
        cpu_before = cpu_by_program()
        crawl = http_json("POST", f"{api}/sites/bench/site-{workers}-{tag}/crawls", {"trigger": "manual"})
        deadline = time.monotonic() + 1800
        while crawl["state"] not in ("COMPLETED", "FAILED", "CANCELLED"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"crawl {crawl['id']} not finished: {crawl}")
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args} exited with {proc.returncode}; logs in {work}")
            time.sleep(0.2)
            crawl = http_json("GET", f"{api}/crawls/{crawl['id']}")
        cpu = cpu_used(cpu_before, cpu_by_program())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    return {
        "pages": crawl["counters"]["fetched"],
        "failed": crawl["counters"]["failed"],
        "seconds": crawl_seconds(crawl),
        "state": crawl["state"],
        "cpu_seconds": cpu,
    }


def wait_consumers(rabbit: Any, vhost: str, workers: int) -> None:
    """Start the clock only once every worker consumes the pages queue."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            queue = rabbit.api(f"/api/queues/{vhost}/kubecrawl.pages")
            if int(queue.get("consumers", 0)) >= workers:
                return
        except Exception:  # the queue is declared by the first worker; until then the API answers 404
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{workers} workers did not start consuming")


# --- orchestration ---------------------------------------------------------------------------------------------


def distributed_services(name: str, services: dict[str, Any], work: Path) -> dict[str, Any]:
    """The servers a distributed run uses, started the first time one needs them: RabbitMQ and PostgreSQL, and for
    mongo-N FerretDB storing in that PostgreSQL."""
    from tests.support.ferretdb import FerretServer
    from tests.support.servers import PostgresServer, RabbitServer

    if "rabbit" not in services:
        print("  starting RabbitMQ and PostgreSQL …", flush=True)
        services["rabbit"] = RabbitServer(work / "rabbitmq")
        services["postgres"] = PostgresServer(work / "postgres")
        services["rabbit"].start()
        services["postgres"].start()
    if not name.startswith("mongo"):
        return {key: value for key, value in services.items() if key != "ferretdb"}
    if "ferretdb" not in services:
        print("  starting FerretDB on PostgreSQL …", flush=True)
        storage = services["postgres"].create_database("ferretdb").replace("+asyncpg", "")
        services["ferretdb"] = FerretServer(work / "ferretdb", postgresql_url=storage)
        services["ferretdb"].start()
    return services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--only", default=",".join(ALL_RUNS), help=f"comma-separated subset of {ALL_RUNS}")
    parser.add_argument("--keep", action="store_true", help="keep the site, databases and logs")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run everything this many times; ratios are medians of each round's"
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures here (default: bench/results/crawl-….json)")
    args = parser.parse_args()
    runs = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(runs) - set(ALL_RUNS)
    if unknown:
        parser.error(f"unknown runs: {sorted(unknown)}")

    from tests.support.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="kubecrawl-crawlbench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the site
    site = work / "site"
    print(f"generating a {args.pages}-page site in {site} …", flush=True)
    generate_site(site, args.pages)
    port = free_port()
    nginx = start_nginx(work, site, port)
    base_url = f"http://127.0.0.1:{port}"
    rounds: list[dict[str, dict[str, Any]]] = []
    services: dict[str, Any] = {}
    try:
        for round_ in range(1, args.rounds + 1):
            results: dict[str, dict[str, Any]] = {}
            rounds.append(results)
            for name in runs:
                print(f"{name} (round {round_} of {args.rounds}) …", flush=True)
                if name.startswith("raw"):
                    results[name] = run_child(["raw", base_url, str(args.pages), name])
                elif name == "scrapy":
                    results[name] = run_child(["scrapy", base_url])
                elif name == "embedded":
                    results[name] = run_embedded(base_url, args.pages, work, str(round_))
                else:
                    tag = f"{name[:1]}{round_}"
                    dist = distributed_services(name, services, work)
                    results[name] = run_distributed(base_url, args.pages, int(name[-1]), work, dist, tag)
                result = results[name]
                result["rate"] = result["pages"] / result["seconds"]
                print(
                    f"  {result['pages']} pages in {result['seconds']:.2f} s = {result['rate']:.0f} pages/s", flush=True
                )
    finally:
        nginx.terminate()
        nginx.wait(10)
        for server in reversed(services.values()):  # FerretDB before the PostgreSQL it stores in
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report(rounds, args.pages, args.json)


def report(rounds: list[dict[str, dict[str, Any]]], pages: int, path: str | None = None) -> None:
    """Each run's pages/s (median, and the range over rounds), its CPU seconds (last round), and each ratio as
    the median of the ratios measured within one round: both sides of a ratio shared the machine's state."""
    print(f"\n  {'run':<10} {'pages':>6} {'seconds':>8} {'pages/s':>9}   note")
    for name in rounds[0]:
        runs_ = [results[name] for results in rounds]
        rates = sorted(result["rate"] for result in runs_)
        short = [result["pages"] for result in runs_ if result["pages"] < pages]
        note = f"INCOMPLETE: {min(short)} of {pages} fetched" if short else ""
        if len(rounds) > 1:
            note = (f"range {rates[0]:.0f}-{rates[-1]:.0f} over {len(rounds)} rounds  " + note).strip()
        if "max_rss_mb" in runs_[-1]:
            note = (note + f"  max RSS {runs_[-1]['max_rss_mb']:.0f} MB").strip()
        seconds = statistics.median(result["seconds"] for result in runs_)
        print(f"  {name:<10} {runs_[-1]['pages']:>6} {seconds:>8.2f} {statistics.median(rates):>9.0f}   {note}")
    for name, result in rounds[-1].items():
        if result.get("cpu_seconds"):
            spent = ", ".join(f"{program} {seconds:.1f}" for program, seconds in result["cpu_seconds"].items())
            print(f"  {name:<10} CPU seconds: {spent}")
    ratios: dict[str, float] = {}
    checks: list[tuple[str, str, str, float | None]] = [
        ("embedded / scrapy", "embedded", "scrapy", 4.0),
        ("embedded / raw", "embedded", "raw", 0.4),
        # kubecrawl's processes run on uvloop (as its API does under uvicorn): the same raw loop on uvloop, for
        # information, so that the target's comparison with the plain-asyncio raw loop is not flattered unseen.
        ("embedded / raw-uvloop", "embedded", "raw-uvloop", None),
        ("dist-1 / scrapy", "dist-1", "scrapy", 1.5),
        ("dist-2 / dist-1", "dist-2", "dist-1", 1.3),
        # The MongoDB store on FerretDB on the same PostgreSQL: what the MongoDB path costs (no target).
        ("mongo-1 / dist-1", "mongo-1", "dist-1", None),
        ("mongo-2 / dist-2", "mongo-2", "dist-2", None),
    ]
    print()
    for label, top, bottom, target in checks:
        if top in rounds[0] and bottom in rounds[0]:
            each = sorted(results[top]["rate"] / results[bottom]["rate"] for results in rounds)
            ratios[label] = statistics.median(each)
            spread = f"  (range {each[0]:.2f}-{each[-1]:.2f})" if len(each) > 1 else ""
            if target is None:
                print(f"  {label:<22} {ratios[label]:>6.2f}   (no target){spread}")
                continue
            verdict = "ok" if ratios[label] >= target else "MISSED"
            print(f"  {label:<22} {ratios[label]:>6.2f}   (target ≥ {target})  {verdict}{spread}")
    targets = {label: target for label, _top, _bottom, target in checks if label in ratios and target is not None}
    print()
    save_result(
        {
            "pages": pages,
            "rounds": rounds,
            "ratios": ratios,
            "targets": targets,
            "met": {label: ratios[label] >= target for label, target in targets.items()},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        },
        path,
        "crawl",
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "raw":
        run_raw(sys.argv[2], int(sys.argv[3]), on_uvloop=sys.argv[4:] == ["raw-uvloop"])
    elif len(sys.argv) > 1 and sys.argv[1] == "scrapy":
        run_scrapy(sys.argv[2])
    else:
        main()
