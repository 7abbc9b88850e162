"""Run the ``kubecrawl`` command through its real entry point (the console script pip installs), in a subprocess.

Async, so a local test site served by the same event loop keeps answering while the command runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The console script next to this interpreter: what a user runs, not ``python -m``.
KUBECRAWL = str(Path(sys.executable).with_name("kubecrawl"))
# Generous: the machine's two cores are shared with other test runs; no passing command comes close.
TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


async def kubecrawl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``kubecrawl ARGS`` with the environment plus ``env``; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        KUBECRAWL,
        *args,
        env=dict(os.environ, **(env or {})),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_SECONDS)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused at once: bound, never listening, held for the block."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
