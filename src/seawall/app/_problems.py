"""RFC 9457 problem details: every error the service answers is one of these."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from seawall.errors import BulkheadFull, CircuitOpenError, ExternalServiceError, RateLimitExceeded
from seawall.observability import current_correlation_id

PROBLEM_JSON = "application/problem+json"
_TYPE_PREFIX = "urn:seawall:problem:"

log = structlog.get_logger("seawall.app")


class FieldError(BaseModel):
    """One invalid input: where it is and what is wrong with it."""

    field: str = Field(description="Dotted location, e.g. 'body.priority' or 'query.limit'.")
    message: str
    type: str


class ProblemDetails(BaseModel):
    """The ``application/problem+json`` body (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    correlation_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):  # noqa: N818 - it is the problem, not an error about one
    """Raise to answer with a problem document.

    Args:
        status: the HTTP status.
        slug: the problem type, appended to ``urn:seawall:problem:``.
        detail: a human sentence saying what happened and what to do.
        errors: per-field errors.
        headers: extra response headers (``Retry-After``, ``ETag``, ...).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or slug)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})


def problem_type(slug: str) -> str:
    """The ``type`` URI of the problem *slug*: ``urn:seawall:problem:<slug>``."""
    return _TYPE_PREFIX + slug


def problem_response(
    status: int,
    slug: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build an ``application/problem+json`` response."""
    body = ProblemDetails(
        type=problem_type(slug),
        title=_title(status),
        status=status,
        detail=detail,
        instance=instance,
        correlation_id=current_correlation_id(),
        errors=list(errors) if errors else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _location(loc: Sequence[int | str], error_type: str) -> str:
    if error_type == "json_invalid":
        return "body"  # the rest of the location is a character offset, not a field
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(errors: Sequence[Any]) -> list[FieldError]:
    """Translate pydantic/FastAPI errors into `FieldError`s, never echoing the input."""
    return [
        FieldError(
            field=_location(error.get("loc", ()), str(error.get("type", ""))),
            message=str(error.get("msg", "invalid value")),
            type=str(error.get("type", "value_error")),
        )
        for error in errors
    ]


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.slug,
        exc.detail,
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    if any(error.type == "json_invalid" for error in errors):
        return problem_response(
            400,
            "malformed-json",
            "the request body is not valid JSON",
            instance=request.url.path,
            errors=[e for e in errors if e.type == "json_invalid"],
        )
    names = ", ".join(sorted({error.field for error in errors}))
    return problem_response(
        422,
        "validation-error",
        f"invalid input: {names}",
        instance=request.url.path,
        errors=errors,
    )


_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        exc.status_code,
        _SLUGS.get(exc.status_code, "http-error"),
        detail,
        instance=request.url.path,
        headers=exc.headers,
    )


def _unavailable(exc: Exception) -> bool:
    """A lost or busy database (retry later), as opposed to a bug in a statement."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    if _unavailable(exc):
        return await _on_database_unavailable(request, exc)
    # A statement the database refused is our bug: log it (parameters are hidden
    # by the engine) and answer 500 as the last-resort middleware would.
    log.error(
        "database_statement_failed",
        path=request.url.path,
        error=type(exc).__name__,
        reason=str(getattr(exc, "orig", exc))[:200],
    )
    return problem_response(
        500,
        "internal-error",
        "the service failed to handle this request; it has been logged",
        instance=request.url.path,
    )


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A locked SQLite file, a lost connection or an exhausted pool is the outside world
    # failing, not a bug here: answer 503 so that clients retry. The driver's message
    # is logged, never the statement and its parameters.
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    log.warning(
        "database_unavailable",
        path=request.url.path,
        error=type(cause).__name__,
        reason=str(cause)[:200],
    )
    return problem_response(
        503,
        "database-unavailable",
        "the database is busy or unreachable; retry shortly",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


def _retry_after_header(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


async def _on_external_service_error(request: Request, exc: Exception) -> JSONResponse:
    # A critical third party failed and nothing degraded the answer: say which one
    # and whether to retry. 503 when it is down or busy (retry later), 502 when it
    # answered something we cannot use or refused a request we built.
    assert isinstance(exc, ExternalServiceError)
    retry_after = getattr(exc, "retry_after", None)
    status = 503 if exc.transient else 502
    log.warning(
        "external_service_failed",
        path=request.url.path,
        service=exc.service,
        error=type(exc).__name__,
        reason=exc.reason,
    )
    return problem_response(
        status,
        "service-unavailable" if status == 503 else "bad-gateway",
        f"the {exc.service!r} service failed: {exc.reason}",
        instance=request.url.path,
        headers=_retry_after_header(retry_after if status == 503 else None),
    )


async def _on_refused_by_policy(request: Request, exc: Exception) -> JSONResponse:
    # An open circuit or an exhausted rate limit: the call was not even attempted.
    retry_after = getattr(exc, "retry_after", None)
    log.warning("dependency_refused", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        503,
        "service-unavailable",
        f"a dependency is unavailable: {exc}",
        instance=request.url.path,
        headers=_retry_after_header(retry_after if retry_after is not None else 1.0),
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make *app* answer every handled error with a problem document."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(PoolTimeoutError, _on_database_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(ExternalServiceError, _on_external_service_error)
    app.add_exception_handler(CircuitOpenError, _on_refused_by_policy)
    app.add_exception_handler(RateLimitExceeded, _on_refused_by_policy)
    app.add_exception_handler(BulkheadFull, _on_refused_by_policy)
