"""The HTTP/1.1 messages of the fake servers: `FakeRequest`, `FakeResponse` and `Router`.

Also the wire format they travel in: `parse_head` reads a request line and
headers, `encode_response` writes a response with its ``Content-Length`` (none
for 204 and 304, which have no body). `FakeServer` reads bodies and runs the
connection.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any, Final, TypeVar, overload
from urllib.parse import parse_qs, parse_qsl, unquote

__all__ = [
    "NO_BODY_STATUSES",
    "FakeRequest",
    "FakeResponse",
    "Handler",
    "Router",
    "encode_response",
    "error_document",
    "parse_head",
]

NO_BODY_STATUSES: Final = frozenset({204, 304})
"""Statuses whose responses never carry a body (nor a ``Content-Length``)."""

# Set by the server itself; a handler's own value would corrupt the framing.
_MANAGED_HEADERS: Final = frozenset({"content-length", "connection", "transfer-encoding"})
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}

_T = TypeVar("_T")


class _Headers(Mapping[str, str]):
    """Request headers, looked up without regard to case (repeated ones joined by ", ")."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # keys already lower-case

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, /, default: str | _T) -> str | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        """The value of header *key* (any case), or *default*."""
        return self._items.get(key.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        # Names only: values may hold credentials.
        return f"<headers {sorted(self._items)}>"


class FakeRequest:
    """One request received by a fake server.

    Attributes:
        method: the upper-case method (``"POST"``).
        path: the path as sent, without the query string (not percent-decoded).
        query_string: the raw query string (without ``?``).
        headers: the headers, looked up without regard to case.
        body: the body bytes (empty without a ``Content-Length``).
        path_params: values captured by the route pattern (percent-decoded).
        received_at: Unix time when the head was read.
    """

    __slots__ = (
        "_query",
        "body",
        "headers",
        "method",
        "path",
        "path_params",
        "query_string",
        "received_at",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        query_string: str = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.method = method.upper()
        self.path = path
        self.query_string = query_string
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        self.headers: Mapping[str, str] = _Headers({k.lower(): v for k, v in pairs})
        self.body = body
        self.path_params: dict[str, str] = {}
        self.received_at = time.time()
        self._query: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        # Neither headers nor body: they carry credentials and personal data.
        return f"<FakeRequest {self.method} {self.path} ({len(self.body)} bytes)>"

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters, each with all its values in order."""
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter *name*, or *default*."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not valid JSON (``json.JSONDecodeError``) or not UTF-8.
        """
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body parsed as ``application/x-www-form-urlencoded``.

        A repeated field keeps its first value.

        Raises:
            ValueError: the body is not UTF-8.
        """
        fields: dict[str, str] = {}
        for name, value in parse_qsl(self.body.decode(), keep_blank_values=True):
            fields.setdefault(name, value)
        return fields

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if any."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def basic_auth(self) -> tuple[str, str] | None:
        """The user and password of an ``Authorization: Basic ...`` header, if well formed."""
        scheme, _, encoded = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        return (user, password) if colon else None


class FakeResponse:
    """What a fake answers: a status, headers and body bytes.

    ``Content-Length`` and ``Connection`` are set by the server; values given
    for them here are ignored.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int = 200, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.body = body

    def __repr__(self) -> str:
        kind = self.headers.get("Content-Type", "no content type")
        return f"<FakeResponse {self.status} {kind} ({len(self.body)} bytes)>"

    @classmethod
    def json(
        cls, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> FakeResponse:
        """A response with *obj* encoded as JSON (``Content-Type: application/json``)."""
        merged = {"Content-Type": "application/json"}
        if headers:
            merged.update(headers)
        return cls(status, merged, json.dumps(obj, separators=(",", ":")).encode())

    @classmethod
    def text(
        cls,
        text: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "text/plain; charset=utf-8",
    ) -> FakeResponse:
        """A response with *text* encoded as UTF-8."""
        merged = {"Content-Type": content_type}
        if headers:
            merged.update(headers)
        return cls(status, merged, text.encode())

    @classmethod
    def empty(cls, status: int = 204, headers: Mapping[str, str] | None = None) -> FakeResponse:
        """A response without a body."""
        return cls(status, headers)

    @classmethod
    def problem(
        cls, status: int, detail: str, headers: Mapping[str, str] | None = None
    ) -> FakeResponse:
        """An RFC 9457 problem document (``application/problem+json``)."""
        title = _REASONS.get(status, "Error")
        document = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        merged = {"Content-Type": "application/problem+json"}
        if headers:
            merged.update(headers)
        return cls(status, merged, json.dumps(document).encode())


Handler = Callable[[FakeRequest], FakeResponse | Awaitable[FakeResponse]]
"""A route handler: takes the request, returns (or awaits to) the response."""


class Router:
    """Method and path-pattern routing: ``/v1/charges/{id}`` captures ``id``.

    A ``{name}`` placeholder matches one whole non-empty path segment. Static
    paths are a dictionary lookup; patterns are tried in the order added.
    """

    __slots__ = ("_patterns", "_static")

    def __init__(self) -> None:
        self._static: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[tuple[str, ...], dict[str, Handler]]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Route *method* requests to paths matching *pattern* to *handler*.

        Raises:
            ValueError: the pattern does not start with ``/``.
        """
        if not pattern.startswith("/"):
            raise ValueError(f"a route pattern starts with '/', got {pattern!r}")
        segments = tuple(pattern.split("/"))
        if not any(_is_placeholder(segment) for segment in segments):
            self._static.setdefault(pattern, {})[method.upper()] = handler
            return
        for existing, methods in self._patterns:
            if existing == segments:
                methods[method.upper()] = handler
                return
        self._patterns.append((segments, {method.upper(): handler}))

    def match(
        self, method: str, path: str
    ) -> tuple[Handler | None, dict[str, str], tuple[str, ...]]:
        """Find the handler for *method* and *path*.

        Returns:
            The handler (None when nothing matches), the captured parameters,
            and the methods allowed for the path (empty when no route has it,
            so a 404; non-empty with no handler means a 405).
        """
        methods = self._static.get(path)
        if methods is not None:
            return methods.get(method), {}, tuple(methods)
        parts = path.split("/")
        for segments, methods in self._patterns:
            if len(segments) != len(parts):
                continue
            params: dict[str, str] = {}
            for segment, part in zip(segments, parts, strict=True):
                if _is_placeholder(segment):
                    if not part:
                        break
                    params[segment[1:-1]] = unquote(part) if "%" in part else part
                elif segment != part:
                    break
            else:
                return methods.get(method), params, tuple(methods)
        return None, {}, ()


def _is_placeholder(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


def error_document(kind: str, message: str) -> dict[str, Any]:
    """The fakes' own error body (not a provider's): ``{"error": {"type", "message"}}``."""
    return {"error": {"type": kind, "message": message}}


def parse_head(head: bytes) -> tuple[FakeRequest, bool] | None:
    """The request and whether the connection stays open, from a raw head (None if malformed)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return None
        key = name.strip().lower()
        value = value.strip()
        if key in headers:
            headers[key] = f"{headers[key]}, {value}"
        else:
            headers[key] = value
    path, _, query = target.partition("?")
    request = FakeRequest.__new__(FakeRequest)
    request.method = method
    request.path = path
    request.query_string = query
    request.headers = _Headers(headers)
    request.body = b""
    request.path_params = {}
    request.received_at = time.time()
    request._query = None
    connection = headers.get("connection")
    if version == "HTTP/1.1":
        keep_alive = connection is None or "close" not in connection.lower()
    else:
        keep_alive = connection is not None and "keep-alive" in connection.lower()
    return request, keep_alive


def encode_response(response: FakeResponse, keep_alive: bool) -> bytes:
    """*response* as bytes on the wire, ending with ``Connection: close`` unless *keep_alive*."""
    status = response.status
    parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    for name, value in response.headers.items():
        if name.lower() not in _MANAGED_HEADERS:
            parts.append(f"{name}: {value}\r\n")
    body = response.body
    if status in NO_BODY_STATUSES:
        body = b""
    else:
        parts.append(f"Content-Length: {len(body)}\r\n")
    parts.append("\r\n" if keep_alive else "Connection: close\r\n\r\n")
    return "".join(parts).encode("latin-1") + body
