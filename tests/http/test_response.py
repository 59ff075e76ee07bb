"""The pure decisions about an answer: classify, provider_message, validate."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from seawall.errors import (
    ExternalServiceError,
    InvalidResponse,
    ServiceClientError,
    ServiceRateLimited,
    ServiceUnavailable,
)
from seawall.http import ServiceResponse, classify, provider_message, validate
from seawall.resilience import is_transient

CALL: dict[str, Any] = {
    "service": "crm",
    "method": "GET",
    "path": "/tickets/{id}",
    "correlation_id": "c-1",
}
NOW = 1_700_000_000.0


class Ticket(BaseModel):
    id: str
    priority: int


def headers(**values: str) -> dict[str, str]:
    return {name.replace("_", "-").lower(): value for name, value in values.items()}


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_usable(status: int) -> None:
    assert classify(status, {}, b"", now=NOW, call=CALL) is None


def test_an_accepted_status_is_usable() -> None:
    assert classify(404, {}, b"", now=NOW, accept={404}, call=CALL) is None


def test_429_is_rate_limited_with_the_asked_delay() -> None:
    error = classify(429, headers(retry_after="7"), b"", now=NOW, call=CALL)

    assert isinstance(error, ServiceRateLimited)
    assert (error.retry_after, error.status, error.transient) == (7.0, 429, True)
    assert is_transient(error)


def test_429_with_an_http_date() -> None:
    error = classify(
        429, headers(retry_after="Tue, 14 Nov 2023 22:13:40 GMT"), b"", now=NOW, call=CALL
    )

    assert isinstance(error, ServiceRateLimited)
    assert error.retry_after == pytest.approx(20.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 425])
def test_5xx_and_timeouts_are_unavailable_and_transient(status: int) -> None:
    error = classify(status, headers(retry_after="3"), b"", now=NOW, call=CALL)

    assert isinstance(error, ServiceUnavailable)
    assert (error.status, error.retry_after) == (status, 3.0)
    assert is_transient(error)


def test_4xx_is_a_client_error_with_the_providers_message() -> None:
    body = b'{"error": {"type": "invalid_request_error", "message": "No such customer"}}'

    error = classify(400, headers(content_type="application/json"), body, now=NOW, call=CALL)

    assert isinstance(error, ServiceClientError)
    assert (error.status, error.provider_message, error.code) == (
        400,
        "No such customer",
        "invalid_request_error",
    )
    assert not is_transient(error)
    assert str(error) == "service 'crm' (GET /tickets/{id}): refused with 400: No such customer"
    assert error.correlation_id == "c-1"


@pytest.mark.parametrize("status", [101, 301, 302, 304])
def test_1xx_and_3xx_are_invalid(status: int) -> None:
    assert isinstance(classify(status, {}, b"", now=NOW, call=CALL), InvalidResponse)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"error": {"message": "bad", "code": "x1"}}', "application/json", ("bad", "x1")),
        (
            b'{"error": "invalid_client", "error_description": "no such client"}',
            "application/json",
            ("no such client", "invalid_client"),
        ),
        (b'{"code": 21211, "message": "bad To"}', "application/json", ("bad To", "21211")),
        (
            b'{"errors": [{"message": "from is required"}]}',
            "application/json",
            ("from is required", None),
        ),
        (b'{"title": "Bad", "detail": "why"}', "application/problem+json", ("why", None)),
        (
            b'[{"message": "Session expired", "errorCode": "INVALID_SESSION_ID"}]',
            "application/json",
            ("Session expired", "INVALID_SESSION_ID"),
        ),
        (b"no_text", "text/plain; charset=utf-8", ("no_text", None)),
        (b"<html>oops</html>", "text/html", (None, None)),
        (b"{not json", "application/json", (None, None)),
        (b"[1, 2]", "application/json", (None, None)),
        (b"[]", "application/json", (None, None)),
        (b"", "application/json", (None, None)),
    ],
)
def test_provider_message_shapes(
    body: bytes, content_type: str, expected: tuple[str | None, str | None]
) -> None:
    assert provider_message(body, content_type) == expected


def test_a_long_provider_message_is_cut() -> None:
    message, _ = provider_message(b'{"message": "' + b"x" * 5000 + b'"}', "application/json")

    assert message is not None
    assert len(message) == 500


def test_validate_returns_the_model() -> None:
    ticket = validate(Ticket, b'{"id": "t1", "priority": 2}', "application/json", call=CALL)

    assert ticket == Ticket(id="t1", priority=2)


def test_validate_takes_list_types_and_json_suffixes() -> None:
    tickets = validate(
        list[Ticket], b'[{"id": "a", "priority": 1}]', "application/vnd.api+json", call=CALL
    )

    assert tickets == [Ticket(id="a", priority=1)]


def test_malformed_json_is_invalid() -> None:
    with pytest.raises(InvalidResponse, match="malformed JSON") as caught:
        validate(Ticket, b'{"id": "ch_', "application/json", call=CALL)

    assert caught.value.service == "crm"


def test_wrong_content_type_is_invalid() -> None:
    with pytest.raises(InvalidResponse, match="text/html"):
        validate(Ticket, b"<html>", "text/html; charset=utf-8", call=CALL)


def test_a_failed_validation_names_fields_but_not_values() -> None:
    with pytest.raises(InvalidResponse, match="does not fit Ticket") as caught:
        validate(
            Ticket, b'{"id": "secret-value", "priority": "high"}', "application/json", call=CALL
        )

    assert caught.value.errors == [
        "priority: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "secret-value" not in str(caught.value)
    assert "high" not in " ".join(caught.value.errors)


def test_service_response_reads_its_body() -> None:
    response = ServiceResponse(
        status_code=200,
        headers={"content-type": "application/json"},
        content=b'{"id": "t1", "priority": 3}',
        service="crm",
        method="GET",
        path="/tickets/{id}",
        correlation_id="c-1",
        attempt=1,
        elapsed_ms=1.0,
    )

    assert response.ok
    assert response.json() == {"id": "t1", "priority": 3}
    assert response.model(Ticket).priority == 3
    assert "priority" not in repr(response)


@pytest.mark.parametrize(
    "error",
    [
        ServiceRateLimited(retry_after=2.0, **CALL),
        ServiceClientError(status=404, provider_message="gone", code="missing", **CALL),
        InvalidResponse("bad", errors=["a: b"], **CALL),
    ],
)
def test_errors_survive_pickling(error: ExternalServiceError) -> None:
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
