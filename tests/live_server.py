"""``seawall serve`` as a real process for end-to-end tests (smoke, docs, schema fuzz)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_SECONDS = 20.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any SEAWALL_* variable, plus *settings*."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SEAWALL_")}
    env.update(settings)
    return env


@dataclass
class Server:
    """A running ``seawall serve`` process and where its output goes."""

    process: subprocess.Popen[bytes]
    base_url: str
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    def stop(self) -> int:
        """Send SIGTERM and return the exit code (the process is killed if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"seawall serve ignored SIGTERM for {SHUTDOWN_TIMEOUT_SECONDS}s")

    def wait_until_ready(self, correlation_id: str = "live-server-probe") -> None:
        """Poll ``/health/ready`` until it answers 200 (bounded; fails the test otherwise)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, stderr = self.output()
                pytest.fail(f"seawall serve exited with {self.process.returncode}: {stderr}")
            try:
                response = httpx.get(
                    f"{self.base_url}/health/ready",
                    headers={"X-Correlation-Id": correlation_id},
                    timeout=2.0,
                )
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text}"
            time.sleep(POLL_INTERVAL_SECONDS)
        pytest.fail(f"seawall serve was not ready within {STARTUP_TIMEOUT_SECONDS}s ({last_error})")


@contextmanager
def seawall_serve(directory: Path, *, port: int | None = None, **settings: str) -> Iterator[Server]:
    """Run ``seawall serve`` in *directory* with *settings* (SEAWALL_* variables); always stopped.

    The database defaults to a SQLite file in *directory*. The server is not yet
    ready when this yields: call `Server.wait_until_ready`.
    """
    port = port or free_port()
    settings.setdefault("SEAWALL_DATABASE_URL", f"sqlite:///{directory}/seawall.db")
    stdout, stderr = directory / "stdout.log", directory / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "seawall", "serve", "--port", str(port)],
            cwd=directory,
            env=clean_environment(**settings),
            stdout=out,
            stderr=err,
        )
    running = Server(process, f"http://127.0.0.1:{port}", stdout, stderr)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
