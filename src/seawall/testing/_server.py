"""`FakeServer`: a small HTTP/1.1 server on loopback, the base of every fake provider.

Written on ``asyncio.start_server`` rather than on an ASGI server so that chaos
has full control of the connection: a fake can hang, close the socket without a
byte, or answer with a broken body. It speaks just enough HTTP/1.1 for real
clients: a request line, headers, ``Content-Length`` bodies (chunked request
bodies are refused with 400, bodies over 8 MiB with 413), keep-alive (the
HTTP/1.1 default, ended by ``Connection: close``) and ``Expect: 100-continue``.
Every response carries ``Content-Length`` (except 204 and 304, which have no body).

A fake runs as every `ThreadedServer` does, in a background thread with its
own event loop (``with fake:``, ``async with fake:`` or `start`/`stop`) or in
the current loop (`serve`), or in a subprocess (`spawn_fake`, steered through
``POST /_chaos``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, TypedDict

from seawall.resilience import SYSTEM_CLOCK, Clock
from seawall.testing._faults import ServerChaos, fault_reply
from seawall.testing._http import (
    FakeRequest,
    FakeResponse,
    Handler,
    Router,
    encode_response,
    error_document,
    parse_head,
)
from seawall.testing._runner import ThreadedServer
from seawall.testing._spawn import SpawnedServer, spawn_fake

__all__ = ["MAX_BODY_BYTES", "FakeServer", "FakeServerOptions", "ServerStats"]

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Request bodies larger than this are refused with 413."""

_ADMIN_PATHS: Final = frozenset({"/_chaos", "/_stats"})


class FakeServerOptions(TypedDict, total=False):
    """The options of `FakeServer`, for a provider that passes them on as ``**options``."""

    # The same names and types as `FakeServer.__init__`, which holds the defaults.

    host: str
    port: int
    record: bool
    max_recorded: int
    seed: int | None
    clock: Clock | None


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of a fake server's counters (admin requests are not counted).

    Attributes:
        requests: requests received (including those chaos answered).
        connections: connections accepted since the server was created.
        open_connections: connections open right now (including any admin one).
        active_requests: requests being handled right now (a hanging one counts).
        errors: handler exceptions turned into 500s (and other unexpected errors).
    """

    requests: int
    connections: int
    open_connections: int
    active_requests: int
    errors: int


def _ping(request: FakeRequest) -> FakeResponse:
    return FakeResponse.json({"ok": True})


def _refusal(status: int, message: str) -> bytes:
    return encode_response(FakeResponse.json(error_document("bad_request", message), status), False)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    # A hanging request ends when the client gives up and closes (or the server stops).
    while await reader.read(65536):
        pass


class FakeServer(ThreadedServer):
    """A fake third-party HTTP API on loopback, with chaos knobs and a request log.

    Subclasses add routes with `route` in ``__init__``. Every fake answers
    ``GET /ping`` with ``{"ok": true}``, unknown routes with a 404 JSON, and a
    handler exception with a 500 JSON (the exception goes to `errors`; the
    server keeps serving). ``POST /_chaos`` (a JSON body for
    `ServerChaos.configure`; ``GET /_chaos`` reads the knobs' state) and
    ``GET /_stats`` steer a fake from outside;
    they are never subject to chaos nor recorded.

    Args:
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        record: keep received requests in `requests` (turn off for benchmarks).
        max_recorded: how many of the latest requests `requests` keeps.
        seed: seeds the chaos random source, for repeatable runs.
        clock: where providers read the time (token expiry, timestamps).

    Example:
        >>> fake = FakeServer()
        >>> fake.route("GET", "/hello/{name}", lambda r: FakeResponse.text(r.path_params["name"]))
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        max_recorded: int = 10_000,
        seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        if max_recorded < 1:
            raise ValueError(f"max_recorded must be positive, got {max_recorded!r}")
        self.chaos = ServerChaos(seed=seed)
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self.record = record
        self._recorded: deque[FakeRequest] = deque(maxlen=max_recorded)
        self._recorded_lock = threading.Lock()
        self._router = Router()
        self._requests_total = 0
        self._active_requests = 0
        self._request_waiters = 0
        self.route("GET", "/ping", _ping)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer *method* requests to paths matching *pattern* with *handler*.

        A handler is a function or a coroutine function taking the `FakeRequest`
        (with ``path_params`` filled in) and returning a `FakeResponse`.
        """
        self._router.add(method, pattern, handler)

    @classmethod
    def spawn(
        cls,
        provider: str | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        record: bool = True,
        seed: int | None = None,
    ) -> SpawnedServer:
        """Run this fake (or the one named *provider*) in a child process; see `spawn_fake`.

        ``FakePaymentGateway.spawn()`` runs ``python -m seawall.testing payments``.

        Raises:
            ValueError: no provider name given and this class has none.
        """
        name = provider if provider is not None else cls.provider_name
        if name is None:
            raise ValueError(f"{cls.__name__} has no provider name; pass one")
        return spawn_fake(name, port=port, host=host, record=record, seed=seed)

    # --- what happened ----------------------------------------------------------

    @property
    def requests(self) -> list[FakeRequest]:
        """The recorded requests, oldest first (a copy; admin requests are never recorded)."""
        with self._recorded_lock:
            return list(self._recorded)

    @property
    def stats(self) -> ServerStats:
        """The server's counters right now."""
        return ServerStats(
            requests=self._requests_total,
            connections=self._connections_total,
            open_connections=len(self._connections),
            active_requests=self._active_requests,
            errors=len(self._errors),
        )

    def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> int:
        """Block until the fake has received at least *count* requests (admin ones excluded).

        Counts requests as they arrive, before they are answered (or hang).
        In an async test, run it with ``await asyncio.to_thread(...)``.

        Returns:
            The number of requests received.

        Raises:
            TimeoutError: fewer had arrived after *timeout* seconds.
        """
        with self._connections_changed:
            self._request_waiters += 1
            try:
                done = self._connections_changed.wait_for(
                    lambda: self._requests_total >= count, timeout
                )
            finally:
                self._request_waiters -= 1
        if not done:
            raise TimeoutError(
                f"{self._requests_total} requests received after {timeout}s; expected {count}"
            )
        return self._requests_total

    def clear(self) -> None:
        """Forget recorded requests and errors (chaos knobs and provider data stay)."""
        with self._recorded_lock:
            self._recorded.clear()
        with self._errors_lock:
            self._errors.clear()

    # --- HTTP -------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection between requests
            except asyncio.LimitOverrunError:
                writer.write(_refusal(431, "the request head is larger than 64 KiB"))
                return
            parsed = parse_head(head)
            if parsed is None:
                writer.write(_refusal(400, "malformed request line or header"))
                return
            request, keep_alive = parsed
            headers = request.headers
            if "transfer-encoding" in headers:
                writer.write(_refusal(400, "chunked request bodies are not supported"))
                return
            length_header = headers.get("content-length")
            if length_header is not None:
                if not length_header.isdigit():
                    writer.write(_refusal(400, "invalid Content-Length"))
                    return
                length = int(length_header)
                if length > MAX_BODY_BYTES:
                    writer.write(_refusal(413, "the request body is larger than 8 MiB"))
                    return
                if length:
                    if headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    request.body = await reader.readexactly(length)
            if request.path in _ADMIN_PATHS:
                response: FakeResponse | None = self._admin(request)
            else:
                response = await self._respond(request, reader)
            if response is None:
                return  # chaos: drop or hang
            try:
                data = encode_response(response, keep_alive)
            except UnicodeEncodeError as exc:  # a header value outside Latin-1
                self._connection_failed(exc)
                data = encode_response(
                    FakeResponse.json(error_document("api_error", "unencodable header"), 500), False
                )
                keep_alive = False
            writer.write(data)
            await writer.drain()
            if not keep_alive:
                return

    async def _respond(
        self, request: FakeRequest, reader: asyncio.StreamReader
    ) -> FakeResponse | None:
        self._requests_total += 1
        self._active_requests += 1
        if self._request_waiters:
            with self._connections_changed:
                self._connections_changed.notify_all()
        try:
            if self.record:
                with self._recorded_lock:
                    self._recorded.append(request)
            chaos = self.chaos
            if chaos.active:
                delay, fault = chaos.decide(request.path)
                if delay:
                    await asyncio.sleep(delay)
                if fault is not None:
                    reply = fault_reply(fault)
                    if reply is not None:
                        return FakeResponse(*reply)
                    if fault.processed:
                        await self._dispatch(request)
                    if fault.kind == "hang":
                        await _until_eof(reader)
                    return None
            return await self._dispatch(request)
        finally:
            self._active_requests -= 1

    async def _dispatch(self, request: FakeRequest) -> FakeResponse:
        handler, params, allowed = self._router.match(request.method, request.path)
        if handler is None:
            if allowed:
                return FakeResponse.json(
                    error_document("method_not_allowed", f"{request.method} is not allowed here"),
                    405,
                    {"Allow": ", ".join(allowed)},
                )
            return FakeResponse.json(
                error_document("not_found", f"no route for {request.method} {request.path}"), 404
            )
        request.path_params = params
        try:
            result = handler(request)
            return result if isinstance(result, FakeResponse) else await result
        except Exception as exc:  # recorded in `errors` and answered with a 500
            self._connection_failed(exc)
            message = f"the fake's handler raised {type(exc).__name__}"
            return FakeResponse.json(error_document("api_error", message), 500)

    def _admin(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/_stats" and request.method == "GET":
            return FakeResponse.json(self._stats_document())
        if request.path == "/_chaos" and request.method == "POST":
            try:
                self.chaos.configure(request.json())
            except (ValueError, TypeError) as exc:
                return FakeResponse.json(error_document("invalid_chaos", str(exc)), 400)
            return FakeResponse.json({"ok": True, **self._chaos_document()})
        if request.path == "/_chaos" and request.method == "GET":
            return FakeResponse.json(self._chaos_document())
        allowed = "POST, GET" if request.path == "/_chaos" else "GET"
        return FakeResponse.json(
            error_document("method_not_allowed", f"{request.method} is not allowed here"),
            405,
            {"Allow": allowed},
        )

    def _chaos_document(self) -> dict[str, Any]:
        return {"pending": self.chaos.pending, "injected": self.chaos.injected}

    def _stats_document(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "requests": stats.requests,
            "connections": stats.connections,
            "open_connections": stats.open_connections,
            "active_requests": stats.active_requests,
            "errors": stats.errors,
            "chaos": self._chaos_document(),
        }
