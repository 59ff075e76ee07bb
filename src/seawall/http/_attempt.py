"""One attempt of an `ExternalService` call, and the health its attempts show.

`Attempt.run` is the innermost step of a service's pipeline: it adds the
credential and the correlation headers, sends with httpx's per-phase timeouts,
reads the body up to the size limit, turns the answer into a `ServiceResponse`
(or the caller's model) or an `ExternalServiceError`, and records the outcome
in the service's `CallHealth` and in one log line.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

import httpx
import structlog

from seawall.errors import (
    ExternalServiceError,
    InvalidResponse,
    ServiceRateLimited,
    ServiceTimeout,
    ServiceUnavailable,
)
from seawall.http._response import ServiceResponse, classify, validate
from seawall.observability import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    current_causation_id,
    current_correlation_id,
    inject_trace_context,
    new_correlation_id,
    span,
)
from seawall.resilience import CallContext

if TYPE_CHECKING:
    from seawall.http._service import ExternalService

__all__ = ["Attempt", "CallHealth"]

_log = structlog.get_logger("seawall.http")
_PHASES: Final = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}
# The outcome label of `seawall_service_calls_total`, by error type (most specific first).
_OUTCOMES: Final = (
    (ServiceTimeout, "timeout"),
    (ServiceUnavailable, "unavailable"),
    (ServiceRateLimited, "rate_limited"),
    (InvalidResponse, "invalid_response"),
)


class CallHealth:
    """What the service's calls have shown lately, for `/health/dependencies`."""

    __slots__ = (
        "calls",
        "consecutive_failures",
        "degraded_at",
        "failures",
        "last_error",
        "last_failure_at",
        "last_latency_ms",
        "last_success_at",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_latency_ms: float | None = None
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.degraded_at: float | None = None


class Attempt:
    """One call's request, sent once per attempt by `run`."""

    __slots__ = (
        "accept",
        "content",
        "context",
        "correlation_id",
        "data",
        "headers",
        "json",
        "method",
        "model",
        "params",
        "path",
        "probe",
        "service",
        "url",
    )

    def __init__(
        self,
        service: ExternalService,
        method: str,
        template: str,
        path: str,
        context: CallContext,
        model: Any,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, Any] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        idempotency_key: str | None,
        accept: Collection[int],
        *,
        probe: bool = False,
    ) -> None:
        self.service = service
        self.method = method
        self.path = template
        self.url = service.base_url + path
        self.context = context
        self.model = model
        self.params = params
        self.json = json
        self.data = data
        self.content = content
        self.accept = accept
        self.probe = probe
        self.correlation_id = current_correlation_id() or new_correlation_id()
        merged = dict(service._default_headers)
        if headers:
            merged.update(headers)
        merged[CORRELATION_HEADER] = self.correlation_id
        causation = current_causation_id()
        if causation is not None:
            merged[CAUSATION_HEADER] = causation
        if idempotency_key is not None:
            merged[service.idempotency_header] = idempotency_key
        self.headers = merged

    def _call(self) -> dict[str, Any]:
        return {
            "service": self.service.name,
            "method": self.method,
            "path": self.path,
            "correlation_id": self.correlation_id,
        }

    async def run(self) -> Any:
        # One client span per attempt (each retry is its own request); its
        # traceparent goes out with the request.
        with span(
            f"{self.method} {self.path or '/'}",
            kind="client",
            attributes={
                "http.request.method": self.method,
                "url.template": self.path or "/",
                "seawall.service": self.service.name,
                "seawall.attempt": self.context.attempt,
            },
            correlation_id=self.correlation_id,
        ):
            inject_trace_context(self.headers)
            return await self._run()

    async def _run(self) -> Any:
        service = self.service
        client = service._client_now()
        started = time.perf_counter()
        status: int | None = None
        try:
            request = self._request(client)
            auth = service.auth
            if auth is not None:
                await auth.apply(request)
            status, headers, body = await self._send(client, request)
            if status == 401 and auth is not None and await auth.refresh(request):
                request = self._request(client)
                await auth.apply(request)
                status, headers, body = await self._send(client, request)
            failure = classify(
                status,
                headers,
                body,
                now=service._clock.wall(),
                accept=self.accept,
                call=self._call(),
            )
            if failure is not None:
                raise failure
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            result: Any
            if self.model is not None:
                result = validate(self.model, body, headers.get("content-type"), call=self._call())
            else:
                result = ServiceResponse(
                    status_code=status,
                    headers=headers,
                    content=body,
                    service=service.name,
                    method=self.method,
                    path=self.path,
                    correlation_id=self.correlation_id,
                    attempt=self.context.attempt,
                    elapsed_ms=elapsed_ms,
                )
        except ExternalServiceError as exc:
            self._record(started, status, exc)
            raise
        self._record(started, status, None)
        return result

    def _request(self, client: httpx.AsyncClient) -> httpx.Request:
        # A fresh request per send: auth mutates it, and a body stream is read once.
        return client.build_request(
            self.method,
            self.url,
            params=self.params,
            json=self.json,
            data=self.data,
            content=self.content,
            headers=self.headers,
        )

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request
    ) -> tuple[int, httpx.Headers, bytes]:
        service = self.service
        call = self._call()
        try:
            response = await client.send(request, stream=True)
            try:
                body = await self._read(response, call)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            phase = _PHASES.get(type(exc), "read")
            raise ServiceTimeout(
                phase=phase, seconds=getattr(service.timeouts, phase), **call
            ) from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"connection failed ({type(exc).__name__}); retry later", **call
            ) from None
        return response.status_code, response.headers, body

    async def _read(self, response: httpx.Response, call: dict[str, Any]) -> bytes:
        limit = self.service.max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise InvalidResponse(
                f"the answer is {declared} bytes, over the {limit}-byte limit",
                status=response.status_code,
                **call,
            )
        if declared is not None and "content-encoding" not in response.headers:
            # Framed by its length and not compressed: the body cannot outgrow what
            # was checked above, so read it in one go (the common, faster path).
            return await response.aread()
        # Chunked or compressed: count the decoded bytes as they come (a small
        # gzip body can inflate to gigabytes).
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise InvalidResponse(
                    f"the answer is over the {limit}-byte limit",
                    status=response.status_code,
                    **call,
                )
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _record(
        self, started: float, status: int | None, error: ExternalServiceError | None
    ) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
        service = self.service
        health = service.health
        now = service._clock.wall()
        health.last_latency_ms = latency_ms
        if not self.probe:
            health.calls += 1
            service.metrics.observe(
                service.name, _outcome(error), self.context.attempt, latency_ms / 1000.0
            )
        if error is None:
            health.consecutive_failures = 0
            health.last_success_at = now
            # A health probe that works is routine: only the calls the application
            # makes are news at INFO.
            (_log.debug if self.probe else _log.info)(
                "service_called",
                service=service.name,
                method=self.method,
                path=self.path,
                status=status,
                latency_ms=latency_ms,
                attempt=self.context.attempt,
            )
            return
        # A refusal (4xx) or an answer we cannot use is the caller's or the
        # model's business; only a sick service counts against its health, and
        # one that throttles us (429) is up but degraded.
        if isinstance(error, ServiceTimeout | ServiceUnavailable):
            health.failures += 1
            health.consecutive_failures += 1
            health.last_failure_at = now
            health.last_error = f"{type(error).__name__}: {error.reason}"
        elif isinstance(error, ServiceRateLimited):
            health.degraded_at = now
            health.last_error = f"{type(error).__name__}: {error.reason}"
        _log.warning(
            "service_call_failed",
            service=service.name,
            method=self.method,
            path=self.path,
            status=status,
            latency_ms=latency_ms,
            attempt=self.context.attempt,
            error=type(error).__name__,
            reason=error.reason,
        )


def _outcome(error: ExternalServiceError | None) -> str:
    if error is None:
        return "ok"
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return "client_error"
