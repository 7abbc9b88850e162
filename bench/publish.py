"""API publish benchmark: ``POST /metadata`` against its two ceilings, measured in ONE run on one broker.

    (a) raw aio-pika: persistent publishes to a queue declared like ``kubecrawl.metadata``, publisher confirms
        on, 64 in flight: the broker's ceiling for what the API does per request.
    (b) a trivial FastAPI endpoint: the same route, served the same way (``PlainRoute``, orjson body), answering
        202 without a database or a publish, served by uvicorn exactly as ``kubecrawl api`` serves (one
        process, uvloop, httptools): the HTTP ceiling.
    (c) ``kubecrawl api`` POST /metadata: store upsert in PostgreSQL + confirmed publish to RabbitMQ.
    (d) the same on MongoDB: FerretDB on that PostgreSQL server (``mongodb://``; the MongoDB store).
    (e) the same on MongoDB: FerretDB on SQLite (what the tests run on).
    (d) / (c) is what the MongoDB path costs on the same storage engine: FerretDB's translation of the wire
    protocol into SQL plus the MongoDB store's design (a batch is one bulk write; FerretDB runs it as one
    update per document). ``--no-mongodb`` skips (d) and (e). First figures (3 s phases, 32 connections, the
    httpx generator, load 6 on 2 CPUs: rates depressed, compare ratios): (c) 603/s, (d) 462/s (0.77 of (c)),
    (e) 47/s (0.08: FerretDB's SQLite backend writes one document at a time under SQLite's single writer).

(b) and (c) get the same load: 64 connections from one load generator in another process — ``wrk`` when it
is installed (Debian: ``apt-get install wrk``; C, so it leaves the CPU to the server), else an async httpx
client. On a small machine the Python generator saturates before the trivial endpoint does (measured here on
2 CPUs: about 500 requests/s against wrk's 2,700), so (b) is then the generator's ceiling, not the server's,
and the ratio flatters (c): install wrk for figures worth recording. Every (c) request carries a new URL, so
each one is a real insert and a real publish.

(b) runs with the product's FastAPI options (``api.app.framework_options``: native OpenTelemetry off) and the
product's way of serving the route, so the ceiling is FastAPI as ``kubecrawl api`` runs it. (Until the batched
version it used FastAPI's body model, as the product did; the "before" (b) figures below are that.)

Measured on the 2-CPU benchmark machine, runs of the two versions interleaved (the machine's speed drifts by
up to 2x over an hour, which moves (a) more than (c): compare ratios of one run, not rates across runs):

    before (one upsert + one publish per request)    (a) 4,068–4,272  (b)  5,106–6,869   (c)   725–954    0.18–0.22
    after (batched record-then-publish, docs/api.md)  (a) 4,012–4,362  (b) 12,676–13,472  (c) 2,774–2,816  0.65–0.69

(a) is the smaller ceiling in both, so (b)'s change of route does not move the ratio; six more runs of the
batched version against the old (b) gave 0.58–0.81.

Prints the three rates, p50/p99 latencies and (c) / min(a, b) (target ≥ 0.5), and writes the figures to
``bench/results/publish-<timestamp>.json``. Starts its own RabbitMQ and PostgreSQL (``tests/support/servers``)
and runs ``kubecrawl migrate``, so it needs nothing running beforehand:

    .venv/bin/python bench/publish.py [--seconds 10] [--concurrency 64] [--generator auto|wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.servers: the same private servers the test suite uses
RESULTS = ROOT / "bench" / "results"
KUBECRAWL = Path(sys.executable).parent / "kubecrawl"
# The API queue bound is lifted for the run: a bounded queue with no consumer would answer 503 after 1,000.
QUEUE_BOUND = 10_000_000
# Short warm-up so JIT-less Python still fills caches, pools and connections before the clock starts.
WARMUP_SECONDS = 2.0

WRK_SCRIPT = r"""
-- POST /metadata with a URL no other request used; prints one JSON line with the summary.
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local body = '{"url":"https://bench.example/' .. prefix .. '/' .. tid .. '/' .. counter .. '"}'
  return wrk.format("POST", "/metadata", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f,' ..
    '"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


# --- (b): the trivial endpoint, run as `python bench/publish.py serve-trivial PORT` -----------------------------


def serve_trivial(port: int) -> None:
    import orjson
    import uvicorn
    from fastapi import FastAPI, Request, Response

    from kubecrawl.api.app import framework_options
    from kubecrawl.api.routes.metadata import PlainRoute, json_object

    # FastAPI as `kubecrawl api` runs it: the product's options (native OpenTelemetry off), and POST /metadata
    # served the way the product serves it (a PlainRoute registered first, the body read with orjson), minus
    # the database and the publish. A leaner route in (c) than in (b) would make (b) no ceiling at all.
    app = FastAPI(**framework_options())

    async def post_metadata(request: Request) -> Response:
        body = await json_object(request)
        answer = {"status": "QUEUED", "url": body.get("url"), "request_id": uuid.uuid4().hex}
        return Response(orjson.dumps(answer), 202, media_type="application/json")

    app.router.add_api_route("/metadata", post_metadata, methods=["POST"], route_class_override=PlainRoute)

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    # The same uvicorn settings as `kubecrawl api` (cli._serve): no access log, lifespan on.
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")


# --- load generators ---------------------------------------------------------------------------------------------


def generate_load(url: str, seconds: float, concurrency: int, generator: str, prefix: str) -> dict[str, Any]:
    """Run the load generator in its own process; returns rate, latencies and error counts."""
    if generator == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(f'prefix = "{prefix}"\n' + WRK_SCRIPT)
        try:
            out = subprocess.run(
                [
                    "wrk",
                    f"-t{min(concurrency, 2)}",
                    f"-c{concurrency}",
                    f"-d{max(1, round(seconds))}s",
                    "--timeout",
                    "10s",
                    "-s",
                    script.name,
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=seconds + 60,
            ).stdout
        finally:
            Path(script.name).unlink()
        line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
        raw = json.loads(line.removeprefix("WRK_JSON "))
        duration = raw["duration_us"] / 1e6
        errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
        return {
            "requests": raw["requests"],
            "seconds": duration,
            "rate": raw["requests"] / duration,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "non_2xx": raw["non_2xx"],
            "socket_errors": errors,
        }
    out = subprocess.run(
        [sys.executable, __file__, "httpx-load", url, str(seconds), str(concurrency), prefix],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return dict(json.loads(out.splitlines()[-1]))


def httpx_load(url: str, seconds: float, concurrency: int, prefix: str) -> None:
    """The fallback generator: ``concurrency`` keep-alive connections, each sending one request at a time.

    httpx with the aiohttp transport, as the fetcher uses it: httpx's default transport spends milliseconds of
    client CPU per request and, with 64 connections, collapses to tens of requests per second on this machine.
    """
    import aiohttp
    import httpx
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        non_2xx = errors = 0
        async with httpx.AsyncClient(transport=AiohttpTransport(client=session), timeout=10) as client:
            deadline = time.perf_counter() + seconds

            async def user(n: int) -> None:
                nonlocal non_2xx, errors
                i = 0
                while time.perf_counter() < deadline:
                    i += 1
                    started = time.perf_counter()
                    try:
                        response = await client.post(url, json={"url": f"https://bench.example/{prefix}/{n}/{i}"})
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    if not 200 <= response.status_code < 300:
                        non_2xx += 1

            began = time.perf_counter()
            await asyncio.gather(*(user(n) for n in range(concurrency)))
            elapsed = time.perf_counter() - began
        return {
            "requests": len(latencies),
            "seconds": elapsed,
            "rate": len(latencies) / elapsed,
            **percentiles(latencies),
            "non_2xx": non_2xx,
            "socket_errors": errors,
        }

    print(json.dumps(asyncio.run(main())))


def percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


# --- (a): raw aio-pika --------------------------------------------------------------------------------------------


async def raw_publish(amqp_url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import aio_pika

    from kubecrawl.broker.topology import METADATA_QUEUE, declare_topology
    from kubecrawl.core.contracts import MetadataTask

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, metadata_max_length=QUEUE_BOUND, pages_max_length=QUEUE_BOUND)
        exchange = channel.default_exchange

        async def run(duration: float, latencies: list[float] | None) -> int:
            deadline = time.perf_counter() + duration
            sent = 0

            async def publisher(n: int) -> None:
                nonlocal sent
                i = 0
                while time.perf_counter() < deadline:
                    i += 1
                    # The same message the API publishes: a MetadataTask, persistent, with a message id.
                    task = MetadataTask(url=f"https://bench.example/raw/{n}/{i}", request_id=uuid.uuid4().hex)
                    message = aio_pika.Message(
                        task.model_dump_json().encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        message_id=task.request_id,
                    )
                    started = time.perf_counter()
                    await exchange.publish(message, METADATA_QUEUE)
                    if latencies is not None:
                        latencies.append(time.perf_counter() - started)
                    sent += 1

            await asyncio.gather(*(publisher(n) for n in range(concurrency)))
            return sent

        await run(WARMUP_SECONDS, None)
        latencies: list[float] = []
        began = time.perf_counter()
        sent = await run(seconds, latencies)
        elapsed = time.perf_counter() - began
    return {"requests": sent, "seconds": elapsed, "rate": sent / elapsed, **percentiles(latencies)}


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages in ``queue`` from a passive declare (exact, unlike the management API's sampled figure)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def count_rows(postgres: Any) -> int:
    return int(postgres.psql("SELECT count(*) FROM page_metadata", database="kubecrawl"))


# --- orchestration --------------------------------------------------------------------------------------------------


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s; see {log}")


def start_server(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health/ready", 120, proc, log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure_http(name: str, url: str, args: argparse.Namespace, generator: str) -> dict[str, Any]:
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    generate_load(url, WARMUP_SECONDS, args.concurrency, generator, prefix + "-warm")
    return generate_load(url, args.seconds, args.concurrency, generator, prefix)


def measure_mongodb(
    args: argparse.Namespace,
    generator: str,
    base: Path,
    rabbit: Any,
    postgres: Any,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
) -> dict[str, dict[str, Any]]:
    """(d) and (e): ``kubecrawl api`` on FerretDB, on PostgreSQL then on SQLite, each on a fresh vhost."""
    from tests.support.ferretdb import FerretServer
    from tests.support.servers import free_port

    results: dict[str, dict[str, Any]] = {}
    postgres.create_database("ferretdb")
    backends = {
        "(d) kubecrawl api on FerretDB on PostgreSQL": postgres.url("ferretdb").replace("+asyncpg", ""),
        "(e) kubecrawl api on FerretDB on SQLite": None,
    }
    for label, storage in backends.items():
        name = "pg" if storage else "sqlite"
        ferret = FerretServer(base / f"ferretdb-{name}", postgresql_url=storage)
        ferret.start()
        try:
            vhost = f"bench-mongo-{name}"
            rabbit.add_vhost(vhost)
            url = ferret.url("kubecrawl")
            menv = dict(env, KUBECRAWL_DATABASE_URL=url, KUBECRAWL_RABBITMQ_URL=rabbit.url(vhost))
            subprocess.run([str(KUBECRAWL), "migrate"], env=menv, check=True, capture_output=True, timeout=120)
            print(f"{label}, {generator}, {args.concurrency} connections …", flush=True)
            port = free_port()
            cmd = [str(KUBECRAWL), "api", "--host", "127.0.0.1", "--port", str(port)]
            api = start_server(cmd, menv, port, base / f"api-{name}.log")
            procs.append(api)
            result = measure_http(f"api-{name}", f"http://127.0.0.1:{port}/metadata", args, generator)
            stop(api)
            result["messages_queued"] = asyncio.run(queue_depth(rabbit.url(vhost), "kubecrawl.metadata"))
            result["rows"] = asyncio.run(count_documents(url))
            results[label] = result
        finally:
            ferret.stop()
    return results


async def count_documents(url: str) -> int:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        return await client.get_default_database().page_metadata.count_documents({})
    finally:
        await client.close()


def show(label: str, result: dict[str, Any]) -> None:
    extra = ""
    if result.get("non_2xx") or result.get("socket_errors"):
        extra = f"  (non-2xx {result.get('non_2xx', 0)}, socket errors {result.get('socket_errors', 0)})"
    print(
        f"  {label:<44} {result['rate']:>9.0f} /s   p50 {result['p50_ms']:>7.2f} ms   "
        f"p99 {result['p99_ms']:>7.2f} ms{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="in-flight publishes / open connections")
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' data and logs")
    parser.add_argument("--no-mongodb", action="store_true", help="skip (d) and (e), the MongoDB variants")
    args = parser.parse_args()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    if generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk); use --generator httpx")

    from tests.support.servers import PostgresServer, RabbitServer, free_port

    load_before = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="kubecrawl-bench-"))
    rabbit = RabbitServer(base / "rabbitmq")
    postgres = PostgresServer(base / "postgres")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"starting RabbitMQ and PostgreSQL in {base} …", flush=True)
        rabbit.start()
        postgres.start()
        rabbit.add_vhost("bench-raw")
        rabbit.add_vhost("bench-api")
        env = dict(os.environ)
        env.update(
            KUBECRAWL_DATABASE_URL=postgres.url("kubecrawl"),
            KUBECRAWL_RABBITMQ_URL=rabbit.url("bench-api"),
            KUBECRAWL_METADATA_QUEUE_MAX_LENGTH=str(QUEUE_BOUND),
            KUBECRAWL_LOG_FORMAT="json",
        )
        subprocess.run([str(KUBECRAWL), "migrate"], env=env, check=True, capture_output=True, timeout=120)

        print(f"(a) raw aio-pika, {args.concurrency} confirmed publishes in flight, {args.seconds:.0f} s …", flush=True)
        raw = asyncio.run(raw_publish(rabbit.url("bench-raw"), args.seconds, args.concurrency))
        rabbit.api("/api/vhosts/bench-raw", method="DELETE")  # free the broker's memory before (c)

        print(f"(b) trivial FastAPI 202 endpoint, {generator}, {args.concurrency} connections …", flush=True)
        port = free_port()
        trivial = start_server([sys.executable, __file__, "serve-trivial", str(port)], env, port, base / "trivial.log")
        procs.append(trivial)
        ceiling = measure_http("trivial", f"http://127.0.0.1:{port}/metadata", args, generator)
        stop(trivial)

        print(f"(c) kubecrawl api POST /metadata, {generator}, {args.concurrency} connections …", flush=True)
        port = free_port()
        api = start_server(
            [str(KUBECRAWL), "api", "--host", "127.0.0.1", "--port", str(port)], env, port, base / "api.log"
        )
        procs.append(api)
        product = measure_http("api", f"http://127.0.0.1:{port}/metadata", args, generator)
        stop(api)
        queued = asyncio.run(queue_depth(rabbit.url("bench-api"), "kubecrawl.metadata"))
        rows = count_rows(postgres)
        mongodb: dict[str, dict[str, Any]] = {}
        if not args.no_mongodb:
            mongodb = measure_mongodb(args, generator, base, rabbit, postgres, env, procs)
    finally:
        for proc in procs:
            stop(proc)
        rabbit.stop()
        postgres.stop()
        if not args.keep_logs:
            shutil.rmtree(base, ignore_errors=True)

    ratio = product["rate"] / min(raw["rate"], ceiling["rate"])
    print()
    show("(a) raw aio-pika confirmed publish", raw)
    show("(b) trivial FastAPI 202 (HTTP ceiling)", ceiling)
    show("(c) kubecrawl api POST /metadata", product)
    print(f"\n  ratio (c) / min(a, b) = {ratio:.2f}   (target ≥ 0.5)")
    # Every 202 is one row and one confirmed message (warm-up included): a mismatch would be a lost request.
    print(f"  (c) answered 202 and left {rows} database rows and {queued} messages in kubecrawl.metadata")
    for label, result in mongodb.items():
        show(label, result)
        print(
            f"      / (c) = {result['rate'] / product['rate']:.2f}; left {result['rows']} documents and "
            f"{result['messages_queued']} messages"
        )
    load_after = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if generator == "httpx":
        print("  note: the Python load generator may be the ceiling of (b); install wrk for comparable figures")
    if max(load_before, load_after) > cpus:
        # Other work on the machine takes CPU from all three phases, unevenly: compare ratios, not rates.
        print(f"  note: load average {load_before:.1f} → {load_after:.1f} on {cpus} CPUs; rates are depressed")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"publish-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "publish",
                "timestamp": stamp,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_1m_before": load_before,
                    "load_average_1m_after": load_after,
                },
                "parameters": {"seconds": args.seconds, "concurrency": args.concurrency, "generator": generator},
                "raw_aio_pika": raw,
                "trivial_fastapi": ceiling,
                "kubecrawl_api": {**product, "messages_queued": queued, "rows": rows},
                "kubecrawl_api_mongodb": mongodb,
                "ratio": ratio,
                "target_ratio": 0.5,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"  results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-trivial":
        serve_trivial(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "httpx-load":
        httpx_load(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
