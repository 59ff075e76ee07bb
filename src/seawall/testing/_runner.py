"""`ThreadedServer`: a loopback TCP server run in a background thread, or in the current loop.

The machinery every fake shares, whatever protocol it speaks (`FakeServer`
for HTTP, `FakeSMTPServer` for SMTP): binding, a thread with its own event
loop, tracking connections, and closing them all on stop. Subclasses that
name a ``provider_name`` join `PROVIDERS`, which ``python -m seawall.testing``
and `spawn_fake` run by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Final, Self

__all__ = ["PROVIDERS", "ThreadedServer"]

# A line or request head longer than this ends the connection (a 431 for HTTP).
_HEAD_LIMIT: Final = 64 * 1024
_STARTUP_TIMEOUT_SECONDS: Final = 10.0
_STOP_TIMEOUT_SECONDS: Final = 10.0

PROVIDERS: dict[str, type[ThreadedServer]] = {}
"""Servers runnable by name (``python -m seawall.testing <name>``, `spawn_fake`)."""


class ThreadedServer:
    """A loopback TCP server run in a background thread with its own event loop.

    The shared machinery of `FakeServer` and `FakeSMTPServer`: subclasses
    implement `_serve_connection`. ``with server:`` and ``async with server:``
    start it and stop it; stopping closes every connection and cancels what
    their handlers were doing. A stopped server can start again and binds the
    port it had, so a test can take a provider down and bring it back.

    Args:
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
    """

    provider_name: ClassVar[str | None] = None
    """The name ``python -m seawall.testing`` and `spawn_fake` know the server by."""
    scheme: ClassVar[str] = "http"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("provider_name")
        if isinstance(name, str):
            PROVIDERS[name] = cls

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        self.host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._connections: set[asyncio.Task[Any]] = set()
        self._connections_total = 0
        self._connections_changed = threading.Condition()

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not started"
        return f"<{type(self).__name__} {where}>"

    # --- where ----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: the server has never been started.
        """
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use `with fake:` first")
        return self._bound_port

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:41234`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._loop is not None and not self._stopping

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    def wait_for_connections(self, at_most: int = 0, *, timeout: float = 5.0) -> int:
        """Block until at most *at_most* connections are open (a client closed its pool).

        In an async test, run it with ``await asyncio.to_thread(...)``.

        Returns:
            The number of connections open.

        Raises:
            TimeoutError: more were still open after *timeout* seconds.
        """
        with self._connections_changed:
            done = self._connections_changed.wait_for(
                lambda: len(self._connections) <= at_most, timeout
            )
        if not done:
            raise TimeoutError(
                f"{len(self._connections)} connections still open after {timeout}s;"
                f" expected at most {at_most}"
            )
        return len(self._connections)

    # --- running in a background thread ----------------------------------------

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound.

        Raises:
            RuntimeError: already running, or the server did not start in time.
            OSError: the port could not be bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.url}")
        ready = threading.Event()
        errors: list[BaseException] = []
        thread = threading.Thread(
            target=self._thread_main,
            args=(ready, errors),
            name=f"seawall-{type(self).__name__}",
            daemon=True,
        )
        thread.start()
        if not ready.wait(_STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError(f"{type(self).__name__} did not start within 10s")
        if errors:
            thread.join()
            raise errors[0]
        self._thread = thread
        self._thread_errors = errors
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and every connection, then join the thread.

        Hanging handlers are cancelled. Does nothing when not running.

        Raises:
            RuntimeError: the server thread did not finish within 10 s, or it failed.
        """
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop within 10s")
        self._thread = None
        if self._thread_errors:
            error = self._thread_errors[0]
            raise RuntimeError(f"{type(self).__name__} failed: {error!r}") from error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # The server still runs in its own thread: a slow or blocked test loop never stalls it.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _thread_main(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            asyncio.run(self.serve(stop=asyncio.Event(), ready=ready.set))
        except Exception as exc:  # reported by start() or stop()
            errors.append(exc)
        finally:
            ready.set()

    # --- running in the current loop -------------------------------------------

    async def serve(self, *, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Serve in the running event loop until *stop* is set (what the threads run).

        Args:
            stop: set it to stop serving; connections are then closed.
            ready: called once the port is bound (`port` and `url` are valid).
        """
        port = self._bound_port if self._bound_port is not None else self._requested_port
        server = await asyncio.start_server(
            self._accept, self.host, port, limit=_HEAD_LIMIT, backlog=1024
        )
        self._bound_port = server.sockets[0].getsockname()[1]
        self._stopping = False
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        try:
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            self._stopping = True
            server.close()
            await asyncio.sleep(0)  # let accepts already under way register their tasks
            while self._connections:
                pending = list(self._connections)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await server.wait_closed()
            self._loop = None
            self._stop = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        self._connections_total += 1
        self._notify_connections()
        try:
            await self._serve_connection(reader, writer)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass  # the peer went away or broke the protocol, or the server is stopping
        except Exception as exc:
            self._connection_failed(exc)
        finally:
            if self._stopping:
                writer.transport.abort()
            else:
                writer.close()
            if task is not None:
                self._connections.discard(task)
            self._notify_connections()

    def _notify_connections(self) -> None:
        with self._connections_changed:
            self._connections_changed.notify_all()

    def _connection_failed(self, exc: Exception) -> None:
        """Record an unexpected error that ended a connection (the server keeps serving)."""
        with self._errors_lock:
            self._errors.append(exc)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions met while serving, oldest first (a copy).

        For a `FakeServer`, mostly handler exceptions (each answered with a 500).
        """
        with self._errors_lock:
            return list(self._errors)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError
