"""Constants and a subprocess server shared by the serving tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY = ["train.epochs=2", "model.max_len=20", "model.hidden=16"]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`lmrec serve` in a subprocess on 127.0.0.1, for tests that need a real server (kill, restart)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-c", "from lmrec.cli import main; main()", "serve", *args,
                   "--port", str(self.port), "--poll", "0", "--log-level", "warning"]  # fmt: skip
        environment = {**os.environ, "LMREC_API_KEYS": KEY, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": "1",
                       **(env or {})}  # fmt: skip
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, env=environment)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until /readyz answers 200 (or fail with the server's log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server was not ready within {timeout} s; see {self.log.name}")

    def stop(self, sig: int = 15) -> None:
        """Send a signal and wait for the process to end."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
