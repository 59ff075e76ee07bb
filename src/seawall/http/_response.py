"""What a call returns, and the pure decisions about a raw answer.

`classify` turns a status and its headers into nothing (success) or the
`ExternalServiceError` that names what went wrong; `provider_message` digs the
human-readable message out of the common error body shapes; `ServiceResponse`
is the answer application code sees instead of an httpx object; `validate`
turns a body into a pydantic model at the boundary.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from seawall.errors import (
    ExternalServiceError,
    InvalidResponse,
    ServiceClientError,
    ServiceRateLimited,
    ServiceUnavailable,
)
from seawall.resilience import parse_retry_after

__all__ = ["ServiceResponse", "classify", "is_json", "provider_message", "validate"]

M = TypeVar("M")

_MESSAGE_LIMIT: Final = 500
_ERROR_LIMIT: Final = 20
# Statuses that mean "the service is not able to answer now": worth retrying.
_UNAVAILABLE: Final = frozenset({408, 425})


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is JSON (``application/json``, ``…+json``)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def provider_message(content: bytes, content_type: str | None) -> tuple[str | None, str | None]:
    """The provider's error message and code from an error body (pure).

    Understands the usual shapes: ``{"error": {"message", "code"|"type"}}``
    (Stripe), ``{"error": "…", "error_description": "…"}`` (OAuth 2.0),
    ``{"message", "code"}`` (Twilio, many), ``{"errors": [{"message"}]}``
    (SendGrid, GraphQL), ``[{"message", "errorCode"}]`` (Salesforce),
    ``{"detail": …, "title": …}`` (problem+json), and a short plain-text body
    (Slack). The message is cut to 500 characters.

    Returns:
        ``(message, code)``, each None when the body does not say.
    """
    if not content:
        return None, None
    if not is_json(content_type):
        if content_type and content_type.lower().startswith("text/plain"):
            return _clip(content[:_MESSAGE_LIMIT].decode("utf-8", "replace")), None
        return None, None
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # a list of errors (Salesforce): the first speaks for all
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        body = error
    elif isinstance(error, str):
        described = body.get("error_description")
        return _clip(str(described) if described else error), error
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        body = errors[0]
    message = body.get("message") or body.get("detail") or body.get("title")
    code = body.get("code") or body.get("errorCode") or body.get("type")
    return (
        _clip(str(message)) if message is not None else None,
        str(code) if code is not None else None,
    )


def classify(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    now: float,
    accept: Collection[int] = (),
    call: Mapping[str, Any],
) -> ExternalServiceError | None:
    """Decide what an answer means (pure).

    Args:
        status: the HTTP status.
        headers: the response headers (case-insensitive mapping).
        content: the body, for the provider's message.
        now: the current Unix time, for an HTTP-date ``Retry-After``.
        accept: statuses outside 2xx that the caller handles itself (such as 404).
        call: ``service``, ``method``, ``path``, ``correlation_id`` for the error.

    Returns:
        None for a usable answer (2xx or accepted), else the error to raise:
        429 `ServiceRateLimited`, 5xx, 408 and 425 `ServiceUnavailable`, other
        4xx `ServiceClientError`, 1xx and 3xx `InvalidResponse`.
    """
    if 200 <= status < 300 or status in accept:
        return None
    retry_after_header = headers.get("retry-after")
    retry_after = (
        None if retry_after_header is None else parse_retry_after(retry_after_header, now=now)
    )
    if status == 429:
        return ServiceRateLimited(retry_after=retry_after, **call)
    if status >= 500 or status in _UNAVAILABLE:
        unavailable = ServiceUnavailable(f"answered {status}", status=status, **call)
        unavailable.retry_after = retry_after
        return unavailable
    if 400 <= status < 500:
        message, code = provider_message(content, headers.get("content-type"))
        return ServiceClientError(status=status, provider_message=message, code=code, **call)
    return InvalidResponse(f"unexpected status {status}", status=status, **call)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def validate(
    model: type[M], content: bytes, content_type: str | None, *, call: Mapping[str, Any]
) -> M:
    """Parse and validate a JSON body into *model* (a pydantic model or any type).

    Raises:
        InvalidResponse: the content type is not JSON, the JSON is malformed, or
            the data does not fit the model (``errors`` names the fields, never
            their values).
    """
    if not is_json(content_type):
        shown = (content_type or "none").split(";", 1)[0][:100]
        raise InvalidResponse(f"expected JSON, got content type {shown!r}", **call)
    try:
        value = cast("M", _adapter(model).validate_json(content))
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        if problems and problems[0]["type"] == "json_invalid":
            raise InvalidResponse("malformed JSON in the response body", **call) from None
        where = [
            f"{'.'.join(str(part) for part in problem['loc']) or '(body)'}: {problem['msg']}"
            for problem in problems[:_ERROR_LIMIT]
        ]
        name = getattr(model, "__name__", None) or repr(model)
        raise InvalidResponse(
            f"the response does not fit {name} ({len(problems)} error(s))",
            errors=where,
            **call,
        ) from None
    return value


@dataclass(frozen=True, slots=True)
class ServiceResponse:
    """An answer from an external service, read in full.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers (case-insensitive).
        content: the body.
        service: the service's name.
        method: the request method.
        path: the path template.
        correlation_id: the ``X-Correlation-Id`` sent with the call.
        attempt: which attempt produced this answer (1 for the first).
        elapsed_ms: how long that attempt took.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    service: str
    method: str
    path: str
    correlation_id: str
    attempt: int
    elapsed_ms: float

    def __repr__(self) -> str:
        return (
            f"ServiceResponse({self.service!r}, {self.method} {self.path} -> "
            f"{self.status_code}, {len(self.content)} bytes)"
        )

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def _call(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "method": self.method,
            "path": self.path,
            "correlation_id": self.correlation_id,
            "status": self.status_code,
        }

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            InvalidResponse: the content type is not JSON or the body is malformed.
        """
        return self.model(cast("type[Any]", Any))

    def model(self, model: type[M]) -> M:
        """The body validated into *model* (a pydantic model, ``list[Model]``, …).

        Raises:
            InvalidResponse: wrong content type, malformed JSON, or failed validation.
        """
        return validate(model, self.content, self.headers.get("content-type"), call=self._call())
