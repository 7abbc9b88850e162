"""A private FerretDB (a MongoDB wire-protocol server) for the test session: the tests' MongoDB.

FerretDB v1 keeps its data in SQLite files in a throw-away folder here; the binary is built from the Go module
proxy by ``tools/ferretdb/build`` into a cache outside the tree (scripts/test builds it before pytest; a cached
build answers in milliseconds). It listens on a free loopback port, its debug/metrics listener on a port of
its own (the default, 8088, collides between instances), without telemetry. A build or start that fails raises
``ServerUnavailable``: the run fails loudly, never skips. Each test takes a database of its own (``database``).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.polling import eventually_sync
from tests.support.servers import ServerUnavailable, free_port, port_open

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "ferretdb" / "build"


def ensure_built() -> Path:
    """The FerretDB binary, built first if this version has no cached build yet."""
    result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ServerUnavailable(f"tools/ferretdb/build failed (exit {result.returncode}); see its output above")
    return Path(lines[-1])


@dataclass
class FerretServer:
    """One FerretDB process on SQLite in ``base``, on a free loopback port."""

    base: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # FerretDB's PostgreSQL backend instead of SQLite (bench/: FerretDB's own cost next to PostgreSQL's).
    postgresql_url: str | None = None

    def url(self, database: str = "kubecrawl") -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """The URL of a fresh database (FerretDB creates it, one SQLite file, on its first write)."""
        return self.url(f"kc_{uuid.uuid4().hex[:16]}")

    def start(self) -> None:
        binary = ensure_built()
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = self.base / "server.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    *(
                        ["--handler=postgresql", f"--postgresql-url={self.postgresql_url}"]
                        if self.postgresql_url
                        else ["--handler=sqlite", f"--sqlite-url=file:{data}/"]
                    ),
                    f"--state-dir={self.base}",  # state.json; the current directory otherwise
                    f"--listen-addr=127.0.0.1:{self.port}",
                    "--debug-addr=127.0.0.1:0",
                    "--telemetry=disable",
                    "--log-level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
            )

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerUnavailable(f"ferretdb exited {self.process.returncode}: {log.read_text()[-2000:]}")
            return port_open(self.port)

        try:
            eventually_sync(up, timeout=30, interval=0.2, what=f"ferretdb on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise ServerUnavailable(f"{exc}; log: {log.read_text()[-2000:]}") from exc

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
                return
            self.process.kill()
            self.process.wait()
