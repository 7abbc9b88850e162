"""Private RabbitMQ and PostgreSQL instances for the test session (real servers, throw-away data dirs).

Both bind 127.0.0.1 on free ports, so a test run never touches (or needs) a system-wide service and several
runs can share a machine. A missing binary raises ``ServerUnavailable``: the run fails loudly, never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.polling import eventually_sync

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@dataclass
class RabbitServer:
    """A RabbitMQ node with the management plugin, owned by this test session."""

    base: Path
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"kubecrawl-test-{self.port}@localhost"

    def url(self, vhost: str = "/") -> str:
        quoted = "%2F" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quoted}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "rabbit.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            HOME=str(Path.home()),
        )
        return env

    def start(self) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise ServerUnavailable(
                "rabbitmq-server is not installed: run scripts/test (it installs Debian's rabbitmq-server)"
            )
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
            # the tests fill queues on purpose; keep the disk alarm from blocking publishers on small disks
            "disk_free_limit.absolute = 50MB\n"
            # management stats every second so unacked counts are fresh for the scaler tests
            "collect_statistics_interval = 1000\n"
            # RabbitMQ's default, written out as docs/queues.md ("Leases and the consumer timeout") asks: longer
            # than the longest lease, so the lease sweep hands a hung worker's page on first
            "consumer_timeout = 1800000\n"
        )
        (self.base / "advanced.config").write_text("[].\n")
        log = (self.base / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")], env=self._env(), stdout=log, stderr=subprocess.STDOUT
        )
        self.wait_ready()

    def ctl(self, *args: str, timeout: float = 60) -> str:
        out = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerUnavailable(f"rabbitmq-server exited; see {self.base / 'server.log'}")
            return port_open(self.port)

        eventually_sync(ready, timeout=timeout, interval=0.2, what=f"RabbitMQ on port {self.port}")
        self.ctl("await_startup", timeout=timeout)

    def stop_app(self) -> None:
        """Stop the broker application (closes every connection, stops listening); the node stays up."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        eventually_sync(
            lambda: port_open(self.port), timeout=60, interval=0.2, what="RabbitMQ listener after start_app"
        )

    def add_vhost(self, vhost: str) -> str:
        """A fresh virtual host: each test gets its own queues (fast, through the management API)."""
        self.api(f"/api/vhosts/{vhost}", method="PUT", body={})
        self.api(
            f"/api/permissions/{vhost}/guest",
            method="PUT",
            body={"configure": ".*", "write": ".*", "read": ".*"},
        )
        return self.url(vhost)

    def api(self, path: str, *, method: str = "GET", body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.management_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": "Basic " + b64encode(b"guest:guest").decode(),
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def peek(self, vhost: str, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """Up to ``count`` messages of ``queue``, read through the management API and left in the queue."""
        messages = self.api(
            f"/api/queues/{vhost}/{queue}/get",
            method="POST",
            body={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )
        assert isinstance(messages, list)
        return messages

    def dead_letters(self, vhost: str) -> list[dict[str, Any]]:
        """The messages parked in ``kubecrawl.dead``, left in place."""
        return self.peek(vhost, "kubecrawl.dead")

    def queue(self, vhost: str, name: str) -> dict[str, object]:
        """Queue stats from the management API (ready/unacked counts lag by the stats interval)."""
        info = self.api(f"/api/queues/{vhost}/{name}")
        assert isinstance(info, dict)
        return info

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=60)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            if self.process.poll() is None:
                self.process.kill()


def _pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServerUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl) on a free port, trust auth on loopback."""

    base: Path
    port: int = field(default_factory=free_port)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "kubecrawl") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        bin_dir = _pg_bin()
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.base, *self.base.parents):
                if path == Path("/"):
                    break
                # postgres must be able to traverse to its data dir
                with contextlib.suppress(PermissionError):
                    path.chmod(path.stat().st_mode | 0o111)
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self._run(str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.resume()
        self.create_database("kubecrawl")

    def resume(self) -> None:
        """Start the server on its existing cluster (after ``start`` made it, and ``halt`` stopped it)."""
        bin_dir = _pg_bin()
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "server.log"),
            "-w",
            "start",
        )

    def halt(self) -> None:
        """An outage: stop the server (fast shutdown: every client connection is cut), keeping its data."""
        self._run(str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run one SQL command as the superuser; returns its unaligned, tuples-only output."""
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-tAc", sql)
        return out.stdout.strip()

    def create_database(self, name: str, *, template: str | None = None) -> str:
        self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
