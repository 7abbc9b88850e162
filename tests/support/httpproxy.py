"""A real HTTP forward proxy for tests: Debian's tinyproxy (scripts/install-deps installs it), run in the foreground
on a loopback address and free port with its own configuration and log. Answers plain ``GET http://…`` requests and
``CONNECT`` tunnels like an egress proxy would, and adds a ``Via`` header to what it forwards.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.polling import eventually_sync
from tests.support.servers import ServerUnavailable, free_port


class TinyProxy:
    def __init__(self, base: Path, host: str = "127.0.0.1") -> None:
        self.base = base
        self.host = host
        self.port = free_port()
        self.log = base / "tinyproxy.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TinyProxy:
        binary = shutil.which("tinyproxy")
        if binary is None:
            raise ServerUnavailable("tinyproxy is missing: scripts/install-deps installs Debian's tinyproxy")
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\n"
            f"Listen {self.host}\n"
            "Timeout 30\n"
            f'LogFile "{self.log}"\n'
            "LogLevel Info\n"
            "MaxClients 20\n"
            # Any client on this machine; CONNECT to any port (tests' sites listen on free ports).
            "Allow 127.0.0.0/8\n"
        )
        self._process = subprocess.Popen(
            [binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        eventually_sync(
            lambda: "Accepting connections" in self.log_text(), timeout=20, interval=0.2, what="tinyproxy listening"
        )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged (``GET http://host:port/path HTTP/1.1``, ``CONNECT host:port …``)."""
        return [line.split("): ", 1)[1] for line in self.log_text().splitlines() if "Request (file descriptor" in line]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
