"""`kubecrawl api` (or another serving role, e.g. ``standalone``) as a real process on a free port (uvicorn, as
deployed), for tests that talk to it over TCP: memory ceilings (tests/security), schemathesis and the generated
client (tests/integration/test_openapi_*), SIGTERM (tests/integration/test_api_shutdown.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.polling import eventually
from tests.support.servers import free_port


class ApiProcess:
    def __init__(self, env: dict[str, str], log: Path, role: Sequence[str] = ("api",)) -> None:
        self.port = free_port()
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubecrawl.cli", *role, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(self.log_path.read_text())
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(self.url + "/health/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=timeout, what="kubecrawl api ready")

    def peak_rss_mib(self) -> float:
        """The process's peak resident set so far (``VmHWM``), in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def logged_events(log: Path) -> list[str]:
    """The ``event`` of each JSON log line a process wrote, in order."""
    return [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
