"""`spawn_fake`: a fake provider in a child process, as a `SpawnedServer`.

The child runs ``python -m seawall.testing <provider>`` and prints one
``listening on <url>`` line once bound; the parent steers it through the
admin endpoints every `FakeServer` has (``POST /_chaos``, ``GET /_stats``) and
stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from typing import Any, Self

from seawall.testing._runner import PROVIDERS

__all__ = ["SpawnedServer", "spawn_fake"]


class SpawnedServer:
    """A fake running in a child process (``python -m seawall.testing <provider>``).

    Steer it through its admin endpoints with `configure_chaos` and `stats`.
    Made by `spawn_fake`; ``with`` stops it on exit.

    Attributes:
        provider: the provider name.
        url: the base URL, such as ``http://127.0.0.1:41234``.
        process: the child process.
    """

    def __init__(self, provider: str, url: str, process: subprocess.Popen[bytes]) -> None:
        self.provider = provider
        self.url = url
        self.process = process

    def __repr__(self) -> str:
        return f"<SpawnedServer {self.provider} {self.url} pid={self.process.pid}>"

    @property
    def port(self) -> int:
        """The port the child listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def configure_chaos(self, **knobs: Any) -> dict[str, Any]:
        """Set chaos knobs of the child through ``POST /_chaos``.

        ``configure_chaos(fail_next={"n": 3, "status": 503})``, ``configure_chaos(reset=True)``:
        the keyword arguments form the JSON body read by `ServerChaos.configure`.

        Returns:
            The answer: ``{"ok": true, "pending": ..., "injected": {...}}``.
        """
        return self._call("POST", "/_chaos", knobs)

    def stats(self) -> dict[str, Any]:
        """The child's counters from ``GET /_stats``."""
        return self._call("GET", "/_stats", None)

    def _call(self, method: str, path: str, document: object) -> dict[str, Any]:
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is our own child's loopback address
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - as above
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def stop(self, *, timeout: float = 5.0) -> int:
        """Stop the child with SIGTERM (then SIGKILL after *timeout* seconds).

        Returns:
            The exit code (negative: the signal that ended it).
        """
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def spawn_fake(
    provider: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    record: bool = True,
    seed: int | None = None,
    startup_timeout: float = 10.0,
) -> SpawnedServer:
    """Run fake *provider* in a child process and wait until it listens.

    Args:
        provider: a name from `PROVIDERS` (``"payments"``, ``"crm"``,
            ``"notifications"``, ``"github"``, ``"echo"``, ``"smtp"``).
        port: the port to bind; 0 picks a free one.
        host: the address to bind.
        record: keep a log of requests in the child (off for benchmarks).
        seed: seeds the child's chaos random source.
        startup_timeout: seconds to wait for the ``listening on`` line.

    Raises:
        ValueError: an unknown provider.
        TimeoutError: the child did not listen within *startup_timeout*.
        RuntimeError: the child exited before listening.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown fake provider {provider!r}; known: {sorted(PROVIDERS)}")
    command = [sys.executable, "-m", "seawall.testing", provider, "--host", host]
    command += ["--port", str(port)]
    if not record:
        command.append("--no-record")
    if seed is not None:
        command += ["--seed", str(seed)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # noqa: S603 - our own module, fixed argv
    try:
        url = _read_listening_line(process, startup_timeout)
    except BaseException:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        raise
    return SpawnedServer(provider, url, process)


def _read_listening_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None  # Popen was given stdout=PIPE
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the fake did not print 'listening on' within {timeout}s")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = process.wait()
                raise RuntimeError(f"the fake exited with code {code} before listening")
            received += chunk
    line = received.split(b"\n", 1)[0].decode().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        raise RuntimeError(f"the fake printed {line!r} instead of 'listening on <url>'")
    return line.removeprefix(prefix)
