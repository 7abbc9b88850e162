"""What the distributed benches (metadata_pipeline.py, dist_size.py, many_hosts.py) share: a private RabbitMQ and
PostgreSQL (tests/support/servers.py, as the test suite starts them), ``kubecrawl api`` / ``kubecrawl worker``
processes on them, and the per-process figures they report: CPU seconds of a process tree and peak RSS (VmHWM)
read from /proc, so that a PostgreSQL or RabbitMQ of another user on the same machine is never counted.

Not a benchmark itself; the site generator, nginx and the raw loop come from crawl_vs_scrapy.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from crawl_vs_scrapy import wait_http  # noqa: E402
from tests.support.servers import PostgresServer, RabbitServer, free_port  # noqa: E402

KUBECRAWL = Path(sys.executable).parent / "kubecrawl"
TICKS = os.sysconf("SC_CLK_TCK")


# --- /proc ---------------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, the exited ones included (their time is
    in their parent's cutime/cstime once reaped): a PostgreSQL's backends, a RabbitMQ's beam.smp."""
    tree = _children()
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields is None:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        todo.extend(tree.get(current, []))
    return total / TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat): with the figures of our own
    processes, what the machine's other users took during a run."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- servers and kubecrawl processes -------------------------------------------------------------------------------


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


@dataclass
class Services:
    """RabbitMQ and PostgreSQL of this bench run, and the kubecrawl processes started on them."""

    work: Path
    rabbit: RabbitServer = field(init=False)
    postgres: PostgresServer = field(init=False)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.rabbit = RabbitServer(self.work / "rabbitmq")
        self.postgres = PostgresServer(self.work / "postgres")
        self.rabbit.start()
        self.postgres.start()

    def stop(self) -> None:
        self.stop_processes()
        self.rabbit.stop()
        self.postgres.stop()

    def postgres_pid(self) -> int:
        return int((self.postgres.data / "postmaster.pid").read_text().split()[0])

    def rabbit_pid(self) -> int:
        assert self.rabbit.process is not None
        return self.rabbit.process.pid

    def server_cpu(self) -> dict[str, float]:
        return {"postgres": tree_cpu(self.postgres_pid()), "rabbitmq": tree_cpu(self.rabbit_pid())}

    def deployment(self, tag: str, **extra: str) -> dict[str, str]:
        """A fresh vhost and database, migrated; the environment of the kubecrawl processes using them."""
        vhost = f"bench-{tag}"
        self.rabbit.add_vhost(vhost)
        env = dict(
            os.environ,
            KUBECRAWL_DATABASE_URL=self.postgres.create_database(f"bench_{tag}"),
            KUBECRAWL_RABBITMQ_URL=self.rabbit.url(vhost),
            KUBECRAWL_ALLOW_PRIVATE_TARGETS="true",
            KUBECRAWL_LOG_FORMAT="json",
            KUBECRAWL_LOG_LEVEL="WARNING",
        )
        env.update(extra)
        env["BENCH_VHOST"], env["BENCH_DATABASE"] = vhost, f"bench_{tag}"
        subprocess.run([str(KUBECRAWL), "migrate"], env=env, check=True, capture_output=True, timeout=300)
        return env

    def _start(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.work / log).open("ab") as out:
            proc = subprocess.Popen([str(KUBECRAWL), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_api(self, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self._start(["api", "--host", "127.0.0.1", "--port", str(port)], env, "api.log")
        api = f"http://127.0.0.1:{port}"
        wait_http(api + "/health/ready", 120, proc)
        return proc, api

    def start_workers(self, env: dict[str, str], count: int, queue: str) -> list[subprocess.Popen[bytes]]:
        workers = [
            self._start(
                ["worker", "--metrics-port", str(free_port())],
                env | {"POD_NAME": f"bench-worker-{n}"},
                f"worker{n}.log",
            )
            for n in range(count)
        ]
        self.wait_consumers(env["BENCH_VHOST"], queue, count)
        return workers

    def wait_consumers(self, vhost: str, queue: str, count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if int(self.rabbit.queue(vhost, queue).get("consumers", 0)) >= count:  # type: ignore[call-overload]
                    return
            except Exception:  # the queue is declared by the first worker; until then the API answers 404
                pass
            self.check_processes()
            time.sleep(0.1)
        raise TimeoutError(f"{count} workers did not start consuming {queue}")

    def check_processes(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}; logs in {self.work}")

    def stop_processes(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
