"""`FakePaymentGateway`: a Stripe-style payments API (charges, refunds, idempotency keys, events).

The subset of Stripe's behaviour a resilient client must get right: bearer-key
authentication, form-encoded requests, Stripe's error envelope and status codes
(400 invalid request, 401, 402 card declined, 404 missing resource), and
``Idempotency-Key`` replay, so that a retried charge is never charged twice.
Every charge and refund also records a Stripe event, listed by ``GET
/v1/events`` as Stripe lists them, so that missed webhooks can be recovered; and
`FakePaymentGateway.send_webhook` delivers an event signed as Stripe signs it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import http.client
import json
import math
import operator
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, Unpack
from urllib.parse import urlsplit

from pydantic import SecretStr

from seawall.testing._http import FakeRequest, FakeResponse
from seawall.testing._server import FakeServer, FakeServerOptions

__all__ = ["FakePaymentGateway"]

DECLINED_TOKEN_PREFIX: Final = "tok_chargeDeclined"  # noqa: S105 - a test card token
_SOURCE_PREFIXES: Final = ("tok_", "src_", "card_", "pm_")
_CHARGE_FIELDS: Final = frozenset({"amount", "currency", "customer", "source", "description"})
API_VERSION: Final = "2024-06-20"
"""The ``api_version`` of the events the fake records."""
_DEFAULT_EVENT_RETENTION: Final = timedelta(days=30)  # Stripe lists events up to 30 days old
_DEFAULT_LIMIT: Final = 10
_MAX_LIMIT: Final = 100
_MAX_TYPES: Final = 20
_CREATED_BOUNDS: Final[dict[str, Callable[[int, int], bool]]] = {
    "created[gt]": operator.gt,
    "created[gte]": operator.ge,
    "created[lt]": operator.lt,
    "created[lte]": operator.le,
    "created": operator.eq,
}
_EVENT_PARAMS: Final = frozenset(
    {"limit", "starting_after", "ending_before", "type", "delivery_success", *_CREATED_BOUNDS}
)
_TYPES_PARAM: Final = re.compile(r"types\[\d*\]")


def _stripe_error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    **extra: str,
) -> FakeResponse:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    error.update(extra)
    return FakeResponse.json({"error": error}, status)


def _positive_int(value: str | None, param: str) -> int | FakeResponse:
    if value is None or value == "":
        return _stripe_error(
            400, f"Missing required param: {param}.", code="parameter_missing", param=param
        )
    if not value.isdigit():
        return _stripe_error(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        )
    amount = int(value)
    if amount < 1:
        return _stripe_error(
            400, "Amount must be at least 1 minor unit.", code="amount_too_small", param=param
        )
    return amount


def _looks_like_card_number(source: str) -> bool:
    digits = source.replace(" ", "").replace("-", "")
    return len(digits) >= 12 and digits.isdigit()


class FakePaymentGateway(FakeServer):
    """A fake Stripe-style payment gateway (provider name ``payments``).

    Every ``/v1`` route needs ``Authorization: Bearer <api_key>`` (or the key as
    the Basic user, as Stripe allows); otherwise 401 ``authentication_error``.
    Errors use Stripe's envelope: ``{"error": {"type", "code", "param", "message"}}``.

    Routes:
        ``POST /v1/charges`` (form: ``amount`` in minor units, ``currency``,
        ``customer``, ``source`` such as ``tok_visa``, ``description``,
        ``metadata[key]``): 200 with the charge. ``tok_chargeDeclined`` (and
        ``tok_chargeDeclinedInsufficientFunds``) give 402 ``card_declined``; a
        raw card number as ``source`` gives 400 ``raw_card_data_not_allowed``.
        ``GET /v1/charges/{id}``: the charge, or 404 ``resource_missing``.
        ``POST /v1/refunds`` (form: ``charge``, ``amount`` defaulting to what
        is left): 200 with the refund; more than is left gives 400
        ``amount_too_large``.

    ``Idempotency-Key`` on a POST works like Stripe's: the first answer the
    gateway really computed (a 200 or a 402, not a validation 400 nor anything
    chaos injected) is stored, and the same key with the same parameters
    replays it with ``Idempotent-Replayed: true``; the same key with other
    parameters (or on another endpoint) gives 400 ``idempotency_error``.

    Events: every charge records a ``charge.succeeded`` event (``charge.failed``
    for a declined card, with the failed charge, which is not kept in
    `charges`), every refund a ``charge.refunded`` event with the updated charge
    (and ``previous_attributes``); `add_event` records any other. An event has
    Stripe's fields (``id`` ``evt_...``, ``object``, ``api_version``,
    ``created``, ``data.object``, ``livemode``, ``pending_webhooks`` (1 until
    `send_webhook` delivers it with a 2xx), ``request.idempotency_key``, ``type``).

    Event routes:
        ``GET /v1/events``: Stripe's list, **newest first**: ``{"object":
        "list", "url": "/v1/events", "has_more", "data"}``. Query: ``limit``
        (1 to 100, default 10), ``starting_after`` (the page after an event
        id), ``ending_before`` (the page before it; not both), ``type`` (exact,
        or with ``*`` as a wildcard: ``charge.*``) or ``types[]`` (up to 20
        exact types), ``created[gte]``, ``created[gt]``, ``created[lte]``,
        ``created[lt]`` or ``created`` (Unix seconds), ``delivery_success``
        (``false``: events with webhooks still pending). Another parameter is a
        400 ``parameter_unknown``, as on Stripe.
        ``GET /v1/events/{id}``: the event, or 404 ``resource_missing``.

    As on Stripe, events older than *event_retention* (30 days) are neither
    listed nor retrieved.

    Args:
        api_key: the secret key clients must send.
        event_retention: how far back events are listed (``math.inf``: forever).
        webhook_timeout: seconds `send_webhook` waits for the receiver's answer.
        host, port, record, max_recorded, seed, clock: as for `FakeServer`.
    """

    provider_name = "payments"

    def __init__(
        self,
        *,
        api_key: str | SecretStr = "sk_test_fake",
        event_retention: float | timedelta = _DEFAULT_EVENT_RETENTION,
        webhook_timeout: float = 10.0,
        **options: Unpack[FakeServerOptions],
    ) -> None:
        super().__init__(**options)
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        retention = (
            event_retention.total_seconds()
            if isinstance(event_retention, timedelta)
            else float(event_retention)
        )
        if not retention > 0:
            raise ValueError(f"event_retention must be positive seconds, got {event_retention!r}")
        if not (math.isfinite(webhook_timeout) and webhook_timeout > 0):
            raise ValueError(f"webhook_timeout must be positive seconds, got {webhook_timeout!r}")
        self.event_retention = retention
        self.webhook_timeout = webhook_timeout
        self._lock = threading.Lock()
        self._charges: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, dict[str, Any]] = {}
        self._events: dict[str, dict[str, Any]] = {}  # by id, in the order recorded
        # key -> (fingerprint of the request, the stored answer)
        self._idempotency: dict[str, tuple[tuple[str, ...], FakeResponse]] = {}
        self.route("POST", "/v1/charges", functools.partial(self._idempotent_post, self._charge))
        self.route("GET", "/v1/charges/{id}", self._get_charge)
        self.route("POST", "/v1/refunds", functools.partial(self._idempotent_post, self._refund))
        self.route("GET", "/v1/events", self._list_events)
        self.route("GET", "/v1/events/{id}", self._get_event)

    # --- what happened ----------------------------------------------------------

    @property
    def charges(self) -> dict[str, dict[str, Any]]:
        """Charges created, by id (copies); declined attempts are not charges."""
        with self._lock:
            return {key: _copy(charge) for key, charge in self._charges.items()}

    @property
    def refunds(self) -> dict[str, dict[str, Any]]:
        """Refunds created, by id (copies)."""
        with self._lock:
            return {key: dict(refund) for key, refund in self._refunds.items()}

    @property
    def idempotency_keys(self) -> list[str]:
        """The idempotency keys with a stored answer, oldest first."""
        with self._lock:
            return list(self._idempotency)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event recorded (copies), oldest ``created`` first, so the newest last.

        Events past the retention window are included: only the API hides them.
        """
        with self._lock:
            return [copy.deepcopy(event) for event in _by_age(self._events.values())]

    # --- events: helpers for tests -------------------------------------------

    def add_event(
        self, type: str, obj: Mapping[str, Any], *, created: float | None = None
    ) -> dict[str, Any]:
        """Record an event of *type* about *obj* (its ``data.object``) and return it.

        Args:
            type: the event type, such as ``charge.succeeded``.
            obj: the object the event is about (copied).
            created: its Unix time; now on the fake's clock when None.

        Raises:
            ValueError: an empty *type*.
        """
        if not type:
            raise ValueError("an event needs a type, such as 'charge.succeeded'")
        when = int(self.clock.wall() if created is None else created)
        with self._lock:
            return copy.deepcopy(self._record_event(type, obj, None, created=when))

    def send_webhook(
        self,
        url: str,
        secret: str | SecretStr,
        event: Mapping[str, Any],
        *,
        timestamp: int | None = None,
    ) -> int:
        """POST *event* to *url* as a Stripe webhook, and return the receiver's status.

        The body is the event as JSON (indented, as Stripe sends it) and
        ``Stripe-Signature`` is ``t=<timestamp>,v1=<hex HMAC-SHA256>`` of
        ``f"{t}.{body}"`` keyed with the whole secret text (``whsec_...``). A
        2xx answer for an event of this fake sets its ``pending_webhooks`` to 0.
        Blocks for up to `webhook_timeout`; call it from a test, never from a
        handler of this fake (in an async test, through ``asyncio.to_thread``).

        Args:
            url: the receiver's URL (``http`` or ``https``); redirects are not followed.
            secret: the endpoint's signing secret.
            event: the event to send, such as one of `events`.
            timestamp: the signed Unix time; now on the fake's clock when None.

        Returns:
            The HTTP status of the answer, or 0 when none came (connection
            refused or reset, or no answer within `webhook_timeout`).

        Raises:
            ValueError: *url* is not an http or https URL.
        """
        body = json.dumps(event, indent=2).encode()
        signed_at = int(self.clock.wall()) if timestamp is None else timestamp
        key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        signature = hmac.digest(key.encode(), b"%d." % signed_at + body, hashlib.sha256).hex()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": f"t={signed_at},v1={signature}",
        }
        status = _post(url, body, headers, self.webhook_timeout)
        if 200 <= status < 300:
            with self._lock:
                recorded = self._events.get(str(event.get("id")))
                if recorded is not None:
                    recorded["pending_webhooks"] = 0
        return status

    def _record_event(
        self,
        type: str,
        obj: Mapping[str, Any],
        idempotency_key: str | None,
        *,
        created: int | None = None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a new event (the caller holds the lock) and return it (not a copy)."""
        data: dict[str, Any] = {"object": copy.deepcopy(dict(obj))}
        if previous is not None:
            data["previous_attributes"] = dict(previous)
        event: dict[str, Any] = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.clock.wall()) if created is None else created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": idempotency_key},
            "type": type,
        }
        self._events[event["id"]] = event
        return event

    # --- handlers ---------------------------------------------------------------

    def _authenticate(self, request: FakeRequest) -> FakeResponse | None:
        key = request.bearer_token()
        if key is None:
            basic = request.basic_auth()
            key = basic[0] if basic else None
        if key is None:
            return _stripe_error(
                401,
                "You did not provide an API key. Use 'Authorization: Bearer <key>'.",
                kind="authentication_error",
            )
        if not hmac.compare_digest(key.encode(), self._api_key.get_secret_value().encode()):
            return _stripe_error(401, "Invalid API Key provided.", kind="authentication_error")
        return None

    def _idempotent(
        self,
        request: FakeRequest,
        fields: Mapping[str, str],
        compute: Callable[[], tuple[FakeResponse, bool]],
    ) -> FakeResponse:
        """Answer through the idempotency store; *compute* says whether its answer is stored."""
        key = request.headers.get("idempotency-key")
        if not key:
            return compute()[0]
        fingerprint = (request.path, *sorted(f"{k}={v}" for k, v in fields.items()))
        stored = self._idempotency.get(key)
        if stored is not None:
            if stored[0] != fingerprint:
                return _stripe_error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters"
                    " they were first used with.",
                    kind="idempotency_error",
                )
            original = stored[1]
            return FakeResponse(
                original.status, {**original.headers, "Idempotent-Replayed": "true"}, original.body
            )
        response, keep = compute()
        if keep:
            self._idempotency[key] = (fingerprint, response)
        return response

    def _idempotent_post(
        self,
        compute: Callable[[Mapping[str, str], str | None], tuple[FakeResponse, bool]],
        request: FakeRequest,
    ) -> FakeResponse:
        """Answer a form POST with *compute*, behind authentication and the idempotency store.

        *compute* takes the form and the request's idempotency key (for its events).
        """
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        try:
            fields = request.form()
        except ValueError:
            return _stripe_error(400, "The request body is not valid form data.")
        key = request.headers.get("idempotency-key") or None
        with self._lock:
            return self._idempotent(request, fields, lambda: compute(fields, key))

    def _charge(
        self, fields: Mapping[str, str], idempotency_key: str | None
    ) -> tuple[FakeResponse, bool]:
        unknown = sorted(
            name
            for name in fields
            if name not in _CHARGE_FIELDS and not name.startswith("metadata[")
        )
        if unknown:
            return _stripe_error(
                400,
                f"Received unknown parameter: {unknown[0]}",
                code="parameter_unknown",
                param=unknown[0],
            ), False
        amount = _positive_int(fields.get("amount"), "amount")
        if isinstance(amount, FakeResponse):
            return amount, False
        currency = fields.get("currency", "")
        if not currency:
            return _stripe_error(
                400, "Missing required param: currency.", code="parameter_missing", param="currency"
            ), False
        if len(currency) != 3 or not currency.isalpha():
            return _stripe_error(
                400, f"Invalid currency: {currency}.", code="invalid_currency", param="currency"
            ), False
        source = fields.get("source") or None
        customer = fields.get("customer") or None
        if source is None and customer is None:
            return _stripe_error(
                400,
                "Must provide source or customer.",
                code="parameter_missing",
                param="source",
            ), False
        metadata = {
            name[len("metadata[") : -1]: value
            for name, value in fields.items()
            if name.startswith("metadata[") and name.endswith("]")
        }
        charge: dict[str, Any] = {
            "id": f"ch_{secrets.token_hex(12)}",
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "currency": currency.lower(),
            "customer": customer,
            "description": fields.get("description") or None,
            "status": "succeeded",
            "paid": True,
            "refunded": False,
            "livemode": False,
            "created": int(self.clock.wall()),
            "metadata": metadata,
        }
        if source is not None:
            if _looks_like_card_number(source):
                return _stripe_error(
                    400,
                    "Sending credit card numbers directly to the API is not allowed;"
                    " use a token such as tok_visa.",
                    code="raw_card_data_not_allowed",
                    param="source",
                ), False
            if not source.startswith(_SOURCE_PREFIXES):
                return _stripe_error(
                    400, f"No such token: '{source}'", code="resource_missing", param="source"
                ), False
            if source.startswith(DECLINED_TOKEN_PREFIX):
                reason = (
                    "insufficient_funds" if "InsufficientFunds" in source else "generic_decline"
                )
                failed = {
                    **charge,
                    "status": "failed",
                    "paid": False,
                    "failure_code": "card_declined",
                    "failure_message": "Your card was declined.",
                }
                self._record_event("charge.failed", failed, idempotency_key)
                # Stripe stores the outcome of a declined charge under its idempotency key too.
                return _stripe_error(
                    402,
                    "Your card was declined.",
                    kind="card_error",
                    code="card_declined",
                    decline_code=reason,
                ), True
        self._charges[charge["id"]] = charge
        self._record_event("charge.succeeded", charge, idempotency_key)
        return FakeResponse.json(charge), True

    def _get_charge(self, request: FakeRequest) -> FakeResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        charge_id = request.path_params["id"]
        with self._lock:
            charge = self._charges.get(charge_id)
            if charge is None:
                return _stripe_error(
                    404, f"No such charge: '{charge_id}'", code="resource_missing", param="id"
                )
            return FakeResponse.json(charge)

    def _list_events(self, request: FakeRequest) -> FakeResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        with self._lock:
            # Serialised under the lock: no handler or helper changes an event mid-answer.
            return _events_page(self._visible_events(), request.query)

    def _get_event(self, request: FakeRequest) -> FakeResponse:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        event_id = request.path_params["id"]
        with self._lock:
            for event in self._visible_events():
                if event["id"] == event_id:
                    return FakeResponse.json(event)
        return _stripe_error(
            404, f"No such event: '{event_id}'", code="resource_missing", param="id"
        )

    def _visible_events(self) -> list[dict[str, Any]]:
        """The events inside the retention window, newest first (the caller holds the lock)."""
        oldest = self.clock.wall() - self.event_retention
        return [
            event
            for event in reversed(_by_age(self._events.values()))
            if event["created"] >= oldest
        ]

    def _refund(
        self, fields: Mapping[str, str], idempotency_key: str | None
    ) -> tuple[FakeResponse, bool]:
        charge_id = fields.get("charge", "")
        if not charge_id:
            return _stripe_error(
                400, "Missing required param: charge.", code="parameter_missing", param="charge"
            ), False
        charge = self._charges.get(charge_id)
        if charge is None:
            return _stripe_error(
                404, f"No such charge: '{charge_id}'", code="resource_missing", param="charge"
            ), False
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            return _stripe_error(
                400,
                f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
                param="charge",
            ), False
        amount: int | FakeResponse = left
        if fields.get("amount"):
            amount = _positive_int(fields["amount"], "amount")
        if isinstance(amount, FakeResponse):
            return amount, False
        if amount > left:
            return _stripe_error(
                400,
                f"Refund amount ({amount}) is greater than the unrefunded amount ({left}).",
                code="amount_too_large",
                param="amount",
            ), False
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {
            "id": f"re_{secrets.token_hex(12)}",
            "object": "refund",
            "amount": amount,
            "charge": charge_id,
            "currency": charge["currency"],
            "reason": fields.get("reason") or None,
            "status": "succeeded",
            "created": int(self.clock.wall()),
        }
        self._refunds[refund["id"]] = refund
        self._record_event("charge.refunded", charge, idempotency_key, previous=previous)
        return FakeResponse.json(refund), True


def _by_age(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """*events* oldest ``created`` first; those created in the same second in recorded order."""
    return sorted(events, key=lambda event: int(event["created"]))


def _is_integer(text: str) -> bool:
    return text.removeprefix("-").isdigit()


def _type_pattern(pattern: str) -> re.Pattern[str]:
    """Stripe's ``type`` filter: exact, with ``*`` matching any run of characters."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _events_page(events: Sequence[dict[str, Any]], query: Mapping[str, list[str]]) -> FakeResponse:
    """Answer ``GET /v1/events`` from *events* (newest first): a page of the list, or a 400.

    Pure: Stripe's list semantics (filters, then the page after ``starting_after``
    or before ``ending_before``, ``has_more`` when the filtered list goes on).
    """
    for name in query:
        if name not in _EVENT_PARAMS and not _TYPES_PARAM.fullmatch(name):
            return _stripe_error(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    first = {name: values[0] for name, values in query.items() if values and values[0]}
    limit_text = first.get("limit", str(_DEFAULT_LIMIT))
    if not _is_integer(limit_text):
        return _stripe_error(
            400, f"Invalid integer: {limit_text}", code="parameter_invalid_integer", param="limit"
        )
    limit = int(limit_text)
    if not 1 <= limit <= _MAX_LIMIT:
        bound = "greater than or equal to 1" if limit < 1 else f"less than or equal to {_MAX_LIMIT}"
        return _stripe_error(400, f"This value must be {bound}.", param="limit")
    bounds: list[tuple[Callable[[int, int], bool], int]] = []
    for name, compare in _CREATED_BOUNDS.items():
        if name in first:
            if not _is_integer(first[name]):
                return _stripe_error(
                    400,
                    f"Invalid integer: {first[name]}",
                    code="parameter_invalid_integer",
                    param=name,
                )
            bounds.append((compare, int(first[name])))
    types = {
        value for name, values in query.items() if _TYPES_PARAM.fullmatch(name) for value in values
    }
    pattern = _type_pattern(first["type"]) if "type" in first else None
    if pattern is not None and types:
        return _stripe_error(400, "You may only specify one of these parameters: type, types.")
    if len(types) > _MAX_TYPES:
        return _stripe_error(
            400,
            f"You may pass at most {_MAX_TYPES} types.",
            code="parameter_invalid",
            param="types",
        )
    delivered = first.get("delivery_success")
    if delivered not in (None, "true", "false"):
        return _stripe_error(
            400, f"Invalid boolean: {delivered}", code="parameter_invalid", param="delivery_success"
        )
    after, before = first.get("starting_after"), first.get("ending_before")
    if after is not None and before is not None:
        return _stripe_error(
            400, "You may only specify one of these parameters: ending_before, starting_after."
        )

    def wanted(event: Mapping[str, Any]) -> bool:
        if pattern is not None and not pattern.fullmatch(event["type"]):
            return False
        if types and event["type"] not in types:
            return False
        if delivered is not None and (event["pending_webhooks"] == 0) != (delivered == "true"):
            return False
        return all(compare(event["created"], bound) for compare, bound in bounds)

    cursor = after if after is not None else before
    window: Sequence[dict[str, Any]] = events
    if cursor is not None:
        index = next((i for i, event in enumerate(events) if event["id"] == cursor), None)
        if index is None:
            param = "starting_after" if after is not None else "ending_before"
            return _stripe_error(
                400, f"No such event: '{cursor}'", code="resource_missing", param=param
            )
        window = events[index + 1 :] if after is not None else events[:index]
    matching = [event for event in window if wanted(event)]
    # Before a cursor, the page is the *limit* events closest to it, still newest first.
    page = matching[-limit:] if before is not None else matching[:limit]
    return FakeResponse.json(
        {"object": "list", "url": "/v1/events", "has_more": len(matching) > limit, "data": page}
    )


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST *body* to *url*; the answer's status, or 0 when none came (no redirects followed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not the URL itself in the message: its query or user part may hold a secret.
        raise ValueError("a webhook URL must be http:// or https:// with a host")
    kind: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        with connection.getresponse() as response:
            response.read()
            return response.status
    except (OSError, http.client.HTTPException):
        return 0  # refused, reset or timed out: the receiver never answered
    finally:
        connection.close()


def _copy(charge: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(charge)
    copied["metadata"] = dict(charge["metadata"])
    return copied
