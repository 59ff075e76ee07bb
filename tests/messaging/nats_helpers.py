"""Helpers for the NATS tests: a private nats-server, stream clean-up and polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors

T = TypeVar("T")

NATS_URL = os.environ.get("SEAWALL_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_SERVER = os.environ.get("SEAWALL_TEST_NATS_SERVER") or shutil.which(
    "nats-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/bin"
)

# Long enough for a loaded CI machine; the tests poll, they never assert a duration.
WAIT_SECONDS = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateNatsServer:
    """A nats-server with JetStream of this test's own, on *port*, storing under *store*.

    Stopping and starting it again on the same port and store is a broker restart:
    file-backed streams come back.
    """

    def __init__(self, binary: str, store: Path, *, port: int | None = None) -> None:
        self.binary = binary
        self.store = store
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.store.mkdir(parents=True, exist_ok=True)
        log = (self.store.parent / f"nats-{self.port}.log").open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        raise RuntimeError(f"nats-server did not listen on {self.port}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self._process.pid}/stat")
        deadline = time.monotonic() + WAIT_SECONDS
        # The signal is delivered a moment later; a publish before that is answered.
        while stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "T":
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not stop")
            time.sleep(0.001)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server (SIGKILL, paused or not) and wait for it to exit: a crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def nats_reachable(url: str) -> str | None:
    """None when a NATS server with JetStream answers at *url*, else why not."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    except (OSError, nats.errors.Error) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    try:
        await nc.jetstream().account_info()
    except (OSError, nats.errors.Error) as exc:
        return f"{url}: JetStream unavailable: {type(exc).__name__}: {exc}"
    finally:
        await nc.close()
    return None


async def delete_streams(url: str, *names: str) -> None:
    """Delete the streams *names* at *url*; missing ones are fine."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = WAIT_SECONDS,
    interval: float = 0.05,
) -> T:
    """Call *probe* until *until* holds for its result; return that result.

    Raises:
        AssertionError: the condition did not hold within *timeout* (the last result is shown).
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {result!r}")
        await asyncio.sleep(interval)
