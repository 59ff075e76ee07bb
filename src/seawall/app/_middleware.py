"""The outermost request layer: correlation ids, body size limit, access log, last resort."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.app._metrics import observe_request
from seawall.app._problems import PROBLEM_JSON, problem_response
from seawall.observability import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    HttpMetrics,
    bind_correlation,
    new_correlation_id,
    span,
    valid_correlation_id,
)

log = structlog.get_logger("seawall.app")


class BodyTooLarge(StarletteHTTPException):
    """The request body passed the configured limit.

    An `HTTPException` so that FastAPI's body parsing lets it through unchanged.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the {limit}-byte limit")


class RequestContextMiddleware:
    """Correlation ids, the body size limit, one log line per request, and a last resort.

    - reads ``X-Correlation-Id`` (or makes a UUID4), binds it for the request's logs
      and returns it on every response; reads ``X-Causation-Id``;
    - refuses a body over *max_body_bytes* with 413, by ``Content-Length`` before
      reading, and while streaming for chunked bodies; *body_limits(method, path)*
      may set another limit for some routes (document uploads);
    - turns any exception that escaped the app into a 500 problem and logs it;
    - counts the request in *metrics* by route template, and wraps it in a server
      span when tracing is on.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: HttpMetrics | None = None,
        body_limits: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.body_limits = body_limits

    def _body_limit(self, scope: Scope) -> int:
        if self.body_limits is None:
            return self.max_body_bytes
        return self.body_limits(scope["method"], scope["path"]) or self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        correlation_id = headers.get(CORRELATION_HEADER)
        if not valid_correlation_id(correlation_id):
            correlation_id = new_correlation_id()
        assert correlation_id is not None
        causation_id = headers.get(CAUSATION_HEADER)
        if not valid_correlation_id(causation_id):
            causation_id = None
        max_body_bytes = self._body_limit(scope)

        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    raise BodyTooLarge(max_body_bytes)
            return message

        with (
            bind_correlation(correlation_id, causation_id),
            span(scope["method"], kind="server", carrier=headers) as traced,
        ):
            try:
                declared = _content_length(headers)
                if declared is not None and declared > max_body_bytes:
                    too_large = BodyTooLarge(max_body_bytes)
                    await _send_problem(
                        send_with_id, scope, 413, "payload-too-large", too_large.detail
                    )
                else:
                    await self.app(scope, limited_receive, send_with_id)
            except BodyTooLarge as exc:
                if not response_started:
                    await _send_problem(send_with_id, scope, 413, "payload-too-large", exc.detail)
            except Exception:
                log.exception("request_failed", method=scope["method"], path=scope["path"])
                if not response_started:
                    await _send_problem(
                        send_with_id,
                        scope,
                        500,
                        "internal-error",
                        "the service failed to handle this request; it has been logged "
                        f"under correlation id {correlation_id}",
                    )
            finally:
                elapsed = time.perf_counter() - started
                observe_request(self.metrics, traced, scope, status, elapsed)
                log.info(
                    "request_completed",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )


def _content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


async def _send_problem(send: Send, scope: Scope, status: int, slug: str, detail: str) -> None:
    body = bytes(problem_response(status, slug, detail, instance=scope["path"]).body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
