"""`FakeCRM`: a Salesforce-style CRM with OAuth client credentials, records and a change feed.

What a client of a CRM must cope with: tokens that expire or get revoked (the
next call is a 401 and the client fetches a new token), Salesforce's field
names and error lists, and a change feed to sync from. Tests seed and change
records with the helpers (`FakeCRM.add_ticket`, `FakeCRM.add_tickets` for many,
...), which also feed the changes; `FakeCRM.send_webhook` tells a receiver that a
record changed, signed as Standard Webhooks sign.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Unpack

from pydantic import SecretStr

from seawall.testing._http import FakeRequest, FakeResponse
from seawall.testing._payments import _post
from seawall.testing._server import FakeServer, FakeServerOptions

__all__ = ["FakeCRM"]

TICKET_URGENCIES: Final = ("Low", "Medium", "High", "Critical")
TICKET_STATES: Final = ("New", "Working", "Escalated", "Closed")
_DEFAULT_PAGE: Final = 100
_MAX_PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str
    plural: str
    prefix: str
    writable: tuple[str, ...]
    required: tuple[str, ...]
    defaults: Mapping[str, Any]
    unique: str | None = None


_TICKET: Final = _Kind(
    name="ticket",
    plural="tickets",
    prefix="500",
    writable=("Subject", "Description", "Urgency", "State", "CustomerId", "ExternalRef"),
    required=("Subject",),
    defaults={
        "Description": "",
        "Urgency": "Medium",
        "State": "New",
        "CustomerId": None,
        "ExternalRef": None,
    },
    unique="ExternalRef",
)
_CUSTOMER: Final = _Kind(
    name="customer",
    plural="customers",
    prefix="001",
    writable=("Name", "Email", "Tier"),
    required=("Name",),
    defaults={"Email": None, "Tier": "Standard"},
)
_SYSTEM_FIELDS: Final = ("Id", "LastModifiedDate", "IsDeleted")


def _errors(status: int, code: str, message: str, fields: list[str] | None = None) -> FakeResponse:
    """Salesforce's error shape: a list of ``{"errorCode", "message", "fields"}``."""
    return FakeResponse.json(
        [{"errorCode": code, "message": message, "fields": fields or []}], status
    )


def _oauth_error(status: int, code: str, description: str) -> FakeResponse:
    return FakeResponse.json({"error": code, "error_description": description}, status)


def _validate(kind: _Kind, body: object, *, creating: bool) -> dict[str, str | None] | FakeResponse:
    """The writable fields of a create or update body, or the 400 to answer (pure)."""
    if not isinstance(body, dict):
        return _errors(400, "JSON_PARSER_ERROR", "The request body must be a JSON object.")
    for name, value in body.items():
        if name in _SYSTEM_FIELDS:
            return _errors(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {name}.",
                [name],
            )
        if name not in kind.writable:
            return _errors(400, "INVALID_FIELD", f"No such column '{name}' on {kind.name}.", [name])
        if value is not None and not isinstance(value, str):
            return _errors(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize {name}: expected a string.", [name]
            )
    missing = [name for name in kind.required if (creating or name in body) and not body.get(name)]
    if missing:
        return _errors(
            400,
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            missing,
        )
    return dict(body)


def _read_fields(
    kind: _Kind, request: FakeRequest, *, creating: bool
) -> dict[str, str | None] | FakeResponse:
    """The writable fields of a create or update request's JSON body, or the 400 to answer."""
    try:
        body = request.json()
    except ValueError:
        return _errors(400, "JSON_PARSER_ERROR", "The request body is not valid JSON.")
    return _validate(kind, body, creating=creating)


class FakeCRM(FakeServer):
    """A fake Salesforce-style CRM (provider name ``crm``).

    Tokens: ``POST /oauth/token`` with ``grant_type=client_credentials`` and the
    client id and secret, in the form or as HTTP Basic client authentication,
    answers ``{"access_token", "token_type": "Bearer", "expires_in"}``. Wrong
    credentials give 401 ``{"error": "invalid_client"}``. A token lasts
    `token_lifetime` seconds on the fake's clock; `revoke_tokens` ends them all.

    API (``Authorization: Bearer <token>``, else 401 ``{"error": "invalid_token"}``):
        ``GET/POST /api/v1/customers``, ``GET/PATCH /api/v1/customers/{id}``;
        ``GET/POST /api/v1/tickets``, ``GET/PATCH/DELETE /api/v1/tickets/{id}``;
        ``GET /api/v1/changes?since=<cursor>&limit=<n>``.

    Records use Salesforce-like field names. Tickets: ``Id`` (``500...``),
    ``Subject`` (required), ``Description``, ``Urgency`` (``Low``, ``Medium``,
    ``High``, ``Critical``), ``State`` (``New``, ``Working``, ``Escalated``,
    ``Closed``), ``CustomerId``, ``ExternalRef`` (unique among live tickets),
    ``LastModifiedDate`` (ISO 8601 UTC) and ``IsDeleted``. Customers: ``Id``
    (``001...``), ``Name`` (required), ``Email``, ``Tier``, ``LastModifiedDate``
    and ``IsDeleted``. Urgency and State accept any string, so a test can
    exercise a client's handling of values it does not know.

    Lists answer ``{"records": [...], "totalSize": n, "done": true}`` without
    deleted records; a query parameter named like a field filters on it
    (``?State=New``). POST answers 201 with the record, PATCH 200 with the
    record, DELETE 204 (a soft delete: ``IsDeleted`` becomes true). Errors are
    Salesforce's list: ``[{"errorCode", "message", "fields"}]``, such as 404
    ``NOT_FOUND`` or ``ENTITY_IS_DELETED``, 400 ``REQUIRED_FIELD_MISSING``,
    ``INVALID_FIELD`` or ``DUPLICATE_VALUE``.

    The change feed lists every create, update and delete (through the API or
    the helpers) in order: ``{"changes": [{"cursor", "object", "id",
    "deleted", "record"}], "next_cursor", "has_more"}``. Pass ``next_cursor``
    back as ``since`` to read on; ``since`` omitted reads from the start.
    Pages are slices of the feed, so a feed of 100,000 changes serves as fast
    as a short one.

    Webhooks: `send_webhook` POSTs ``{"type": "ticket.updated", "timestamp",
    "data": {"object": "ticket", "id"}}`` (or ``customer.…``, ``….deleted``)
    signed as Standard Webhooks sign (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature: v1,<base64 HMAC-SHA256>``); the receiver syncs the
    one record it names.

    Args:
        client_id: the OAuth client id clients must send.
        client_secret: the OAuth client secret clients must send.
        token_lifetime: how long an issued token is valid (``expires_in``).
        webhook_timeout: seconds `send_webhook` waits for the receiver's answer.
        host, port, record, max_recorded, seed, clock: as for `FakeServer`.
    """

    provider_name = "crm"

    def __init__(
        self,
        *,
        client_id: str = "seawall-crm-client",
        client_secret: str | SecretStr = "seawall-crm-secret",  # noqa: S107 - a fake credential
        token_lifetime: float | timedelta = 3600.0,
        webhook_timeout: float = 5.0,
        **options: Unpack[FakeServerOptions],
    ) -> None:
        super().__init__(**options)
        self.webhook_timeout = webhook_timeout
        self.client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self._token_lifetime = 0.0
        self.token_lifetime = token_lifetime
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}  # token -> expiry on clock.monotonic()
        self._token_requests = 0
        self._records: dict[str, dict[str, dict[str, Any]]] = {"ticket": {}, "customer": {}}
        self._counters = {"ticket": 0, "customer": 0}
        self._changes: list[dict[str, Any]] = []
        self.route("POST", "/oauth/token", self._issue_token)
        for kind in (_TICKET, _CUSTOMER):
            every, one = f"/api/v1/{kind.plural}", f"/api/v1/{kind.plural}/{{id}}"
            self._api("GET", every, functools.partial(self._list_records, kind))
            self._api("POST", every, functools.partial(self._create_record, kind))
            self._api("GET", one, functools.partial(self._get_record, kind))
            self._api("PATCH", one, functools.partial(self._update_record, kind))
        self._api("DELETE", "/api/v1/tickets/{id}", functools.partial(self._delete_record, _TICKET))
        self._api("GET", "/api/v1/changes", self._list_changes)

    # --- tokens -----------------------------------------------------------------

    @property
    def token_lifetime(self) -> float:
        """Seconds an issued token stays valid; settable (float seconds or timedelta)."""
        return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float | timedelta) -> None:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"token_lifetime must be positive seconds, got {value!r}")
        self._token_lifetime = seconds

    @property
    def token_requests(self) -> int:
        """Requests to ``POST /oauth/token`` that reached the handler.

        Refused ones count; those answered by chaos do not.
        """
        return self._token_requests

    def issue_token(self) -> str:
        """Issue a valid access token directly (for tests that skip the OAuth step)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = self.clock.monotonic() + self._token_lifetime
        return token

    def revoke_tokens(self) -> None:
        """Make every issued token invalid: the next API call with one gets 401."""
        with self._lock:
            self._tokens.clear()

    def _issue_token(self, request: FakeRequest) -> FakeResponse:
        self._token_requests += 1
        try:
            form = request.form()
        except ValueError:
            return _oauth_error(400, "invalid_request", "the body must be form-encoded")
        basic = request.basic_auth()
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        expected = self._client_secret.get_secret_value().encode()
        if not (
            hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(secret.encode(), expected)
        ):
            response = _oauth_error(401, "invalid_client", "client authentication failed")
            if basic is not None:
                response.headers["WWW-Authenticate"] = 'Basic realm="fake-crm"'
            return response
        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", f"{grant_type} is not supported")
        return FakeResponse.json(
            {
                "access_token": self.issue_token(),
                "token_type": "Bearer",
                "expires_in": math.ceil(self._token_lifetime),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _unauthorized(self, request: FakeRequest) -> FakeResponse | None:
        token = request.bearer_token()
        if token is not None:
            with self._lock:
                expiry = self._tokens.get(token)
            if expiry is not None and self.clock.monotonic() < expiry:
                return None
        return FakeResponse.json(
            {
                "error": "invalid_token",
                "error_description": "the access token is invalid or expired",
            },
            401,
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    def _api(
        self, method: str, pattern: str, handler: Callable[[FakeRequest], FakeResponse]
    ) -> None:
        """Route an API call: a request without a valid bearer token gets the 401, not *handler*."""

        def authorized(request: FakeRequest) -> FakeResponse:
            denied = self._unauthorized(request)
            return handler(request) if denied is None else denied

        self.route(method, pattern, authorized)

    # --- records: helpers for tests --------------------------------------------

    @property
    def tickets(self) -> dict[str, dict[str, Any]]:
        """Every ticket by id, deleted ones included (copies)."""
        return self._snapshot(_TICKET)

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        """Every customer by id, deleted ones included (copies)."""
        return self._snapshot(_CUSTOMER)

    @property
    def changes(self) -> list[dict[str, Any]]:
        """The change feed so far, oldest first (copies)."""
        with self._lock:
            return [{**change, "record": dict(change["record"])} for change in self._changes]

    def add_ticket(self, **fields: Any) -> dict[str, Any]:
        """Store a ticket without validation (any Urgency or State string) and return it.

        Missing fields get defaults (``Urgency="Medium"``, ``State="New"``, a new
        ``Id``, ``LastModifiedDate`` now); the creation enters the change feed.

        Raises:
            TypeError: a field name the CRM does not have.
        """
        return self._add(_TICKET, fields)

    def add_tickets(self, count: int, **fields: Any) -> list[str]:
        """Store *count* tickets at once (each a change in the feed) and return their ids.

        Each gets ``Subject`` ``"Ticket <n>"`` unless *fields* set one; other
        fields as for `add_ticket`. Seeds a feed of 100,000 in about a second.

        Raises:
            ValueError: *count* is negative.
            TypeError: a field name the CRM does not have.
        """
        if count < 0:
            raise ValueError("count must not be negative")
        self._check_names(_TICKET, fields)
        ids: list[str] = []
        with self._lock:
            now = self._now()
            for _ in range(count):
                self._counters["ticket"] += 1
                number = self._counters["ticket"]
                record: dict[str, Any] = {
                    "Id": f"{_TICKET.prefix}{number:012d}AAA",
                    **_TICKET.defaults,
                    "Subject": f"Ticket {number}",
                    "LastModifiedDate": now,
                    "IsDeleted": False,
                }
                record.update(fields)
                self._records["ticket"][record["Id"]] = record
                self._changed(_TICKET, record)
                ids.append(record["Id"])
        return ids

    def add_customer(self, **fields: Any) -> dict[str, Any]:
        """Store a customer without validation and return it (see `add_ticket`)."""
        return self._add(_CUSTOMER, fields)

    def update_ticket(self, ticket_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a ticket without validation and return it (a change in the feed).

        Raises:
            KeyError: no such ticket.
            TypeError: a field name the CRM does not have.
        """
        return self._update(_TICKET, ticket_id, fields)

    def update_customer(self, customer_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a customer without validation and return it (see `update_ticket`)."""
        return self._update(_CUSTOMER, customer_id, fields)

    def delete_ticket(self, ticket_id: str) -> None:
        """Soft-delete a ticket (``IsDeleted`` true; ``deleted: true`` in the feed).

        Raises:
            KeyError: no such ticket.
        """
        self._update(_TICKET, ticket_id, {"IsDeleted": True})

    def delete_customer(self, customer_id: str) -> None:
        """Soft-delete a customer (see `delete_ticket`)."""
        self._update(_CUSTOMER, customer_id, {"IsDeleted": True})

    def _snapshot(self, kind: _Kind) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: dict(record) for key, record in self._records[kind.name].items()}

    def _check_names(self, kind: _Kind, fields: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields) - {*kind.writable, *_SYSTEM_FIELDS})
        if unknown:
            known = sorted({*kind.writable, *_SYSTEM_FIELDS})
            raise TypeError(f"a {kind.name} has no fields {unknown}; known: {known}")

    def _now(self) -> str:
        moment = datetime.fromtimestamp(self.clock.wall(), UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _add(self, kind: _Kind, fields: Mapping[str, Any]) -> dict[str, Any]:
        self._check_names(kind, fields)
        with self._lock:
            self._counters[kind.name] += 1
            record: dict[str, Any] = {
                "Id": f"{kind.prefix}{self._counters[kind.name]:012d}AAA",
                **kind.defaults,
                "LastModifiedDate": self._now(),
                "IsDeleted": False,
            }
            record.update(fields)
            self._records[kind.name][record["Id"]] = record
            self._changed(kind, record)
            return dict(record)

    def _update(self, kind: _Kind, record_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        self._check_names(kind, fields)
        with self._lock:
            record = self._records[kind.name][record_id]
            record.update(fields)
            if "LastModifiedDate" not in fields:
                record["LastModifiedDate"] = self._now()
            self._changed(kind, record)
            return dict(record)

    def _changed(self, kind: _Kind, record: Mapping[str, Any]) -> None:
        self._changes.append(
            {
                "cursor": str(len(self._changes) + 1),
                "object": kind.name,
                "id": record["Id"],
                "deleted": bool(record.get("IsDeleted")),
                "record": dict(record),
            }
        )

    # --- webhooks ---------------------------------------------------------------

    def send_webhook(
        self,
        url: str,
        secret: str | SecretStr,
        record_id: str,
        *,
        event_type: str | None = None,
        message_id: str | None = None,
        timestamp: int | None = None,
    ) -> int:
        """POST a change notice for one record to *url*, and return the receiver's status.

        The body is ``{"type", "timestamp", "data": {"object", "id"}}``; the
        type is ``<object>.updated`` (``.deleted`` for a deleted record) unless
        *event_type* is given. It is signed as Standard Webhooks sign:
        ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
        keyed with the base64 text after the secret's ``whsec_`` prefix. Blocks
        for up to `webhook_timeout`; call it from a test (in an async test,
        through ``asyncio.to_thread``), never from a handler of this fake.

        Args:
            url: the receiver's URL (``http`` or ``https``).
            secret: the endpoint's signing secret, ``whsec_<base64>``.
            record_id: the ticket or customer that changed.
            event_type: the notice's type, if not the one the record's state gives.
            message_id: the ``webhook-id`` (a fresh ``msg_...`` when None).
            timestamp: the signed Unix time; now on the fake's clock when None.

        Returns:
            The HTTP status of the answer, or 0 when none came.

        Raises:
            KeyError: no record has *record_id*.
            ValueError: *url* is not an http or https URL, or the secret is not base64.
        """
        with self._lock:
            kind = next(
                (k for k in (_TICKET, _CUSTOMER) if record_id in self._records[k.name]), None
            )
            if kind is None:
                raise KeyError(record_id)
            deleted = bool(self._records[kind.name][record_id].get("IsDeleted"))
        signed_at = int(self.clock.wall()) if timestamp is None else timestamp
        kind_type = f"{kind.name}.{'deleted' if deleted else 'updated'}"
        body = json.dumps(
            {
                "type": event_type or kind_type,
                "timestamp": datetime.fromtimestamp(signed_at, UTC).isoformat(),
                "data": {"object": kind.name, "id": record_id},
            }
        ).encode()
        msg_id = message_id or f"msg_{secrets.token_hex(12)}"
        text = (
            secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        ).removeprefix("whsec_")
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise ValueError(
                "the webhook secret must be base64 after its 'whsec_' prefix"
            ) from None
        signature = base64.b64encode(
            hmac.digest(key, f"{msg_id}.{signed_at}.".encode() + body, "sha256")
        ).decode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "FakeCRM-Webhooks/1.0",
            "webhook-id": msg_id,
            "webhook-timestamp": str(signed_at),
            "webhook-signature": f"v1,{signature}",
        }
        return _post(url, body, headers, self.webhook_timeout)

    # --- records: the API --------------------------------------------------------

    def _find(self, kind: _Kind, record_id: str) -> dict[str, Any] | FakeResponse:
        record = self._records[kind.name].get(record_id)
        if record is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        if record.get("IsDeleted"):
            return _errors(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _duplicate(
        self, kind: _Kind, fields: Mapping[str, Any], record_id: str | None
    ) -> FakeResponse | None:
        if kind.unique is None or fields.get(kind.unique) is None:
            return None
        value = fields[kind.unique]
        for other in self._records[kind.name].values():
            if (
                other["Id"] != record_id
                and not other.get("IsDeleted")
                and other.get(kind.unique) == value
            ):
                return _errors(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {kind.unique} duplicates value on record with id:"
                    f" {other['Id']}",
                    [kind.unique],
                )
        return None

    def _list_records(self, kind: _Kind, request: FakeRequest) -> FakeResponse:
        filters = {
            name: values[0] for name, values in request.query.items() if name in kind.writable
        }
        with self._lock:
            records = [
                dict(record)
                for record in self._records[kind.name].values()
                if not record.get("IsDeleted")
                and all(record.get(name) == value for name, value in filters.items())
            ]
        return FakeResponse.json({"records": records, "totalSize": len(records), "done": True})

    def _create_record(self, kind: _Kind, request: FakeRequest) -> FakeResponse:
        fields = _read_fields(kind, request, creating=True)
        if isinstance(fields, FakeResponse):
            return fields
        with self._lock:
            duplicate = self._duplicate(kind, fields, None)
            if duplicate is not None:
                return duplicate
            return FakeResponse.json(self._add(kind, fields), 201)

    def _get_record(self, kind: _Kind, request: FakeRequest) -> FakeResponse:
        with self._lock:
            found = self._find(kind, request.path_params["id"])
            return found if isinstance(found, FakeResponse) else FakeResponse.json(found)

    def _update_record(self, kind: _Kind, request: FakeRequest) -> FakeResponse:
        fields = _read_fields(kind, request, creating=False)
        if isinstance(fields, FakeResponse):
            return fields
        record_id = request.path_params["id"]
        with self._lock:
            found = self._find(kind, record_id)
            if isinstance(found, FakeResponse):
                return found
            duplicate = self._duplicate(kind, fields, record_id)
            if duplicate is not None:
                return duplicate
            return FakeResponse.json(self._update(kind, record_id, fields))

    def _delete_record(self, kind: _Kind, request: FakeRequest) -> FakeResponse:
        record_id = request.path_params["id"]
        with self._lock:
            found = self._find(kind, record_id)
            if isinstance(found, FakeResponse):
                return found
            self._update(kind, record_id, {"IsDeleted": True})
        return FakeResponse.empty(204)

    def _list_changes(self, request: FakeRequest) -> FakeResponse:
        since = request.param("since") or "0"
        if not since.isdigit():
            return _errors(400, "INVALID_CURSOR", f"'{since}' is not a cursor from this feed.")
        limit_text = request.param("limit") or str(_DEFAULT_PAGE)
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= _MAX_PAGE:
            return _errors(400, "INVALID_LIMIT", f"limit must be 1 to {_MAX_PAGE}.", ["limit"])
        start, limit = int(since), int(limit_text)
        with self._lock:
            page = self._changes[start : start + limit]
            has_more = start + limit < len(self._changes)
            changes = [{**change, "record": dict(change["record"])} for change in page]
        next_cursor = changes[-1]["cursor"] if changes else since
        return FakeResponse.json(
            {"changes": changes, "next_cursor": next_cursor, "has_more": has_more}
        )
