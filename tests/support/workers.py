"""`kubecrawl worker` as a real process, for signal tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubecrawl.core.settings import Settings
from tests.support.environment import env_for
from tests.support.polling import eventually_sync


class WorkerProcess:
    """`kubecrawl worker` as a real process, for signal tests."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubecrawl.cli", "worker", "--metrics-port", "0"],
            env=env_for(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            return "worker_started" in self.output()

        eventually_sync(started, timeout=timeout, interval=0.2, what="worker_started")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
