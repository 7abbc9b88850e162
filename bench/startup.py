"""Start-up benchmark: time from a command's exec to its first request, next to a bare interpreter + client.

Issue #16 goal 2: ``kubecrawl crawl URL`` sends its first request at most 0.5 s after the process starts on a warm
machine, and so do ``kubecrawl trigger`` (a CronJob runs it every schedule) and ``kubecrawl worker`` (to ready).
Each command runs as its own process, ``--runs`` times, in turn with the peer, and the clock is this process's
monotonic clock:

    peer     ``python -c 'import httpx; httpx.get(URL)'``: an interpreter, an HTTP client, one request: the least
             a Python command that sends a request can cost here.
    crawl    ``kubecrawl crawl URL --max-pages 1`` on a SQLite file already at the head revision (a first crawl
             before the runs migrated it); the first request is the crawl's robots.txt.
    trigger  ``kubecrawl trigger --site bench/site`` against a local HTTP server standing in for the API (it
             answers POST …/crawls with 202 and a crawl, as the API does).
    worker   ``kubecrawl worker`` on RabbitMQ and PostgreSQL (private servers, as the other benches start them;
             the database migrated before): until its /health/ready answers 200, polled every 5 ms.

For each: the median over the runs of exec → first request (worker: → ready), its ratio to the peer's median, the
0.5 s target, and exec → exit (crawl, trigger; the worker: SIGTERM → exit), which is the start-up plus the work
plus the shutdown. The stand-in server is a thread of this process; a request reaches it in well under a
millisecond.

A warm machine: the page cache holds the files (one unmeasured run of each first) and every module has its
bytecode, as in the image (the Dockerfile compiles it; a pip or uv install does too). The bench compiles what
lacks it first (``compileall``): where ``PYTHONDONTWRITEBYTECODE`` is set and nothing compiled the virtualenv,
each start would otherwise compile some 900 modules from source (about 2 s here, not what a user waits for).

``--baseline REF`` runs each kubecrawl command also from the sources of a git commit (``git archive`` into the
work folder, put first on ``PYTHONPATH`` with the same interpreter and dependencies), in turn with the others:
before and after in one run, on the same machine state.

    .venv/bin/python bench/startup.py [--runs 10] [--only peer,crawl,trigger,worker] [--baseline main] [--quick]
                                      [--current-venv]

The commands run in a virtualenv with what the image installs (``uv sync --locked --no-dev``: no test or bench
extra), made once in ``.cache/startup-venv`` from the same lock, with this checkout installed editable so it
runs the working tree: the bench venv's extras change what the product imports. Twisted (Scrapy's) is the
case in point: structlog imports ``structlog.twisted`` whenever Twisted is installed (about 25 ms per start
here), which no image pays; and pydantic scans every installed distribution's entry points for its plugins.
``--current-venv`` measures in this interpreter's virtualenv instead.

``--quick``: 3 runs, no worker (no RabbitMQ or PostgreSQL to start). Figures are printed and written to
``bench/results/startup-<timestamp>.json`` with the load average at the start and at the end; this shared
machine's figures move with its load, so read the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.servers: the same private servers the test suite uses
sys.path.insert(0, str(ROOT / "bench"))
from crawl_vs_scrapy import save_result  # noqa: E402

PRODUCT_VENV = ROOT / ".cache" / "startup-venv"
TARGET_SECONDS = 0.5
ALL_RUNS = ("peer", "crawl", "trigger", "worker")
PAGE = b"<!doctype html><html><head><title>start-up bench</title></head><body><p>one page</p></body></html>"
CRAWL = b'{"id": "bench-crawl", "state": "PENDING", "counters": {}}'


class Probe(ThreadingHTTPServer):
    """Answers like a one-page site (GET) and like the API's POST …/crawls; remembers when the first request of
    the current run arrived."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.first: float | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self._lock:
            self.first = None

    def arrived(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self.first is None:
                self.first = now


class _Handler(BaseHTTPRequestHandler):
    server: Probe

    def do_GET(self) -> None:
        self.server.arrived()
        if self.path == "/robots.txt":
            self._answer(200, b"User-agent: *\nAllow: /\n", "text/plain")
        else:
            self._answer(200, PAGE, "text/html; charset=utf-8")

    def do_POST(self) -> None:
        self.server.arrived()
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer(202, CRAWL, "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def timed(probe: Probe, args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Exec → the probe's first request, and exec → exit, of one process."""
    probe.reset()
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, timeout=120, check=False)
    ended = time.monotonic()
    if proc.returncode != 0 or probe.first is None:
        raise RuntimeError(f"{args} exited {proc.returncode}, request seen: {probe.first is not None}: {proc.stderr!r}")
    return {"first_request": probe.first - started, "exit": ended - started}


def product_python() -> Path:
    """The interpreter of a virtualenv holding what the image installs (made or brought up to the lock once)."""
    uv = Path(sys.executable).parent / "uv"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(PRODUCT_VENV), UV_SYSTEM_CERTS="1")
    command = [str(uv), "sync", "-q", "--locked", "--no-dev", "--python", sys.executable]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=600)
    return PRODUCT_VENV / "bin" / "python"


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def compile_bytecode(*folders: Path) -> None:
    """Bytecode for every module that lacks it (a no-op once compiled)."""
    for folder in folders:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", str(folder)], check=False, capture_output=True
        )


def baseline_sources(ref: str, work: Path) -> Path:
    """The ``src`` folder of commit ``ref``, extracted into ``work``."""
    target = work / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def add_baseline(
    ref: str, work: Path, runs: list[str], commands: dict[str, list[str]], envs: dict[str, dict[str, str]]
) -> None:
    """Each kubecrawl command once more as ``NAME@REF``, from ``ref``'s sources."""
    baseline = baseline_sources(ref, work)
    compile_bytecode(baseline)
    for name in [name for name in runs if name != "peer"]:
        before = f"{name}@{ref}"
        runs.append(before)
        envs[before] = envs[name] | {"PYTHONPATH": str(baseline)}
        if name in commands:
            commands[before] = [*commands[name]]
    if "crawl" in runs:  # its own SQLite file: the baseline migrates it its own way
        commands[f"crawl@{ref}"][-1] = str(work / "crawl-baseline.db")


def timed_worker(kubecrawl: Path, env: dict[str, str]) -> dict[str, float]:
    """Exec → /health/ready 200, then SIGTERM → exit."""
    from tests.support.servers import free_port

    port = free_port()
    ready_url = f"http://127.0.0.1:{port}/health/ready"
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(kubecrawl), "worker", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the worker exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''!r}"
                )
            if time.monotonic() - started > 120:
                raise TimeoutError("the worker was not ready within 120 s")
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as response:
                    if response.status == 200:
                        ready = time.monotonic()
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.005)
        proc.terminate()
        stopping = time.monotonic()
        proc.wait(60)
        stopped = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"first_request": ready - started, "exit": stopped - stopping}


def worker_env(kubecrawl: Path, work: Path, services: dict[str, Any]) -> dict[str, str]:
    """RabbitMQ and PostgreSQL started once; a migrated database and a vhost for the workers."""
    from tests.support.servers import PostgresServer, RabbitServer

    print("  starting RabbitMQ and PostgreSQL …", flush=True)
    services["rabbit"] = RabbitServer(work / "rabbitmq")
    services["postgres"] = PostgresServer(work / "postgres")
    services["rabbit"].start()
    services["postgres"].start()
    services["rabbit"].add_vhost("startup")
    env = dict(
        os.environ,
        KUBECRAWL_DATABASE_URL=services["postgres"].create_database("startup"),
        KUBECRAWL_RABBITMQ_URL=services["rabbit"].url("startup"),
        KUBECRAWL_LOG_FORMAT="json",
        KUBECRAWL_LOG_LEVEL="WARNING",
    )
    subprocess.run([str(kubecrawl), "migrate"], env=env, check=True, capture_output=True, timeout=120)
    return env


def measure(
    probe: Probe, name: str, commands: dict[str, list[str]], envs: dict[str, dict[str, str]]
) -> dict[str, float]:
    if name.startswith("worker"):
        return timed_worker(Path(commands["peer"][0]).parent / "kubecrawl", envs[name])
    return timed(probe, commands[name], envs[name])


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs of each command; figures are medians")
    parser.add_argument("--only", default=",".join(ALL_RUNS), help=f"comma-separated subset of {ALL_RUNS}")
    parser.add_argument("--quick", action="store_true", help="3 runs, no worker (no RabbitMQ or PostgreSQL)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (databases, server data)")
    parser.add_argument("--baseline", metavar="REF", help="also run the commands from this git commit's sources")
    parser.add_argument("--current-venv", action="store_true", help="run in this virtualenv, extras and all")
    parser.add_argument("--json", metavar="PATH", help="write the figures here (default: bench/results/startup-….json)")
    args = parser.parse_args()
    runs = [name.strip() for name in args.only.split(",") if name.strip()]
    if args.quick:
        args.runs = 3
        runs = [name for name in runs if name != "worker"]
    unknown = set(runs) - set(ALL_RUNS)
    if unknown:
        parser.error(f"unknown runs: {sorted(unknown)}")
    if "peer" not in runs:
        runs.insert(0, "peer")

    work = Path(tempfile.mkdtemp(prefix="kubecrawl-startupbench-"))
    python = Path(sys.executable) if args.current_venv else product_python()
    kubecrawl = python.parent / "kubecrawl"
    print(f"in {python.parent.parent}; compiling bytecode where it is missing …", flush=True)
    compile_bytecode(site_packages(python), ROOT / "src")
    probe = Probe()
    threading.Thread(target=probe.serve_forever, daemon=True).start()
    env = dict(os.environ, KUBECRAWL_ALLOW_PRIVATE_TARGETS="true")
    commands = {
        "peer": [str(python), "-c", f"import httpx; httpx.get({probe.url + '/'!r})"],
        "crawl": [str(kubecrawl), "crawl", probe.url + "/", "--max-pages", "1", "--db", str(work / "crawl.db")],
        "trigger": [str(kubecrawl), "trigger", "--site", "bench/site"],
    }
    envs = dict.fromkeys(commands, env) | {"trigger": env | {"KUBECRAWL_API_URL": probe.url}}
    services: dict[str, Any] = {}
    load_before = load()
    try:
        if "worker" in runs:
            envs["worker"] = worker_env(kubecrawl, work, services)
        if args.baseline:
            add_baseline(args.baseline, work, runs, commands, envs)
        times: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        # Warm-up, not counted: the page cache, the .pyc files, the crawl's SQLite file migrated to head.
        for name in runs:
            measure(probe, name, commands, envs)
        for run in range(1, args.runs + 1):
            print(f"run {run} of {args.runs} …", flush=True)
            for name in runs:
                times[name].append(measure(probe, name, commands, envs))
    finally:
        probe.shutdown()
        for server in reversed(services.values()):
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(times, venv=str(python.parent.parent), load_before=load_before, load_after=load(), out=args.json)


def report(
    times: dict[str, list[dict[str, float]]], *, venv: str, load_before: str, load_after: str, out: str | None = None
) -> None:
    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in times.items()
    }
    peer = medians["peer"]["first_request"]
    print(f"\nload average {load_before} at the start, {load_after} at the end; median of {len(times['peer'])} runs")
    print(f"{'command':<16} {'first request':>14} {'× peer':>7} {'≤ 0.5 s':>8} {'range':>15} {'exit':>8}")
    summary: dict[str, Any] = {}
    for name, runs in times.items():
        first = medians[name]["first_request"]
        firsts = [run["first_request"] for run in runs]
        label = "ready" if name.startswith("worker") else "first request"
        met = first <= TARGET_SECONDS
        exit_label = "SIGTERM → exit" if name.startswith("worker") else "exec → exit"
        print(
            f"{name:<16} {first:>12.3f} s {first / peer:>7.2f} {'met' if met else 'NOT met':>8} "
            f"{min(firsts):>6.3f}-{max(firsts):.3f} s {medians[name]['exit']:>6.3f} s"
        )
        summary[name] = {
            "measured": label,
            "median_seconds": round(first, 4),
            "ratio_to_peer": round(first / peer, 3),
            "target_seconds": TARGET_SECONDS,
            "target_met": met,
            "runs_seconds": [round(value, 4) for value in firsts],
            "exit_measured": exit_label,
            "exit_median_seconds": round(medians[name]["exit"], 4),
        }
    print("(worker: exec → /health/ready 200, and SIGTERM → exit)")
    save_result(
        {
            "benchmark": "startup",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "virtualenv": venv,
            "load_average": {"start": load_before, "end": load_after},
            "results": summary,
        },
        out,
        "startup",
    )


if __name__ == "__main__":
    main()
