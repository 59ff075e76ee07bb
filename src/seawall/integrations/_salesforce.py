"""`SalesforceCRM`: the `CRM` over a Salesforce-style REST API with OAuth 2.0.

Records come in as the CRM's shapes and leave as our models through the pure
translations of `seawall.integrations._salesforce_acl`; the CRM's error lists
become `RecordNotFound`, `DuplicateRecord` or a `ServiceClientError` carrying
the CRM's ``errorCode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Self

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from seawall.errors import InvalidResponse, ServiceClientError
from seawall.http import ExternalService, OAuth2ClientCredentials, ServiceResponse
from seawall.integrations._acl import UnknownValueRecorder
from seawall.integrations._adapter import ServiceAdapter
from seawall.integrations._crm import (
    CaseDraft,
    CaseUpdate,
    CrmCase,
    CrmChange,
    CrmChanges,
    Customer,
    CustomerDraft,
    CustomerUpdate,
    DuplicateRecord,
    RecordNotFound,
    check_id,
    check_limit,
)
from seawall.integrations._salesforce_acl import (
    SalesforceChange,
    SalesforceCustomer,
    SalesforceTicket,
    case_from_ticket,
    change_from_feed,
    customer_fields,
    customer_from_record,
    ticket_fields,
)

__all__ = ["SalesforceCRM"]


class _SalesforceError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str | None = Field(default=None, alias="errorCode")
    message: str | None = None
    fields: list[str] = Field(default_factory=list)


_ERRORS: Final = TypeAdapter(list[_SalesforceError])


class _TicketList(BaseModel):
    records: list[SalesforceTicket]
    done: bool = True


class _CustomerList(BaseModel):
    records: list[SalesforceCustomer]
    done: bool = True


class _ChangePage(BaseModel):
    changes: list[SalesforceChange]
    next_cursor: str
    has_more: bool = False


def _facts(response: ServiceResponse) -> dict[str, Any]:
    return {
        "service": response.service,
        "method": response.method,
        "path": response.path,
        "correlation_id": response.correlation_id,
    }


def _refusal(response: ServiceResponse, kind: str, record_id: str | None) -> ServiceClientError:
    """The error for a 400 or 404 answer, read from the CRM's error list (pure)."""
    try:
        errors = _ERRORS.validate_json(response.content)
    except ValidationError:
        errors = []
    first = errors[0] if errors else _SalesforceError()
    message = first.message[:500] if first.message else None
    if response.status_code == 404 and record_id is not None:
        return RecordNotFound(
            kind=kind,
            record_id=record_id,
            code=first.code,
            provider_message=message,
            **_facts(response),
        )
    if first.code == "DUPLICATE_VALUE":
        return DuplicateRecord(
            kind=kind, fields=first.fields, provider_message=message, **_facts(response)
        )
    return ServiceClientError(
        status=response.status_code,
        provider_message=message,
        code=first.code,
        **_facts(response),
    )


def _unpaged(response: ServiceResponse, done: bool) -> None:
    if not done:
        raise InvalidResponse(
            "the CRM split the list into pages, which this adapter does not follow yet; "
            "filter the list to fewer records",
            status=response.status_code,
            **_facts(response),
        )


class SalesforceCRM(ServiceAdapter):
    """`CRM` over a Salesforce-style REST API (JSON records, OAuth 2.0 client credentials).

    Reads are retried by the service's policy. Updates (PATCH) set fields to
    values, which is idempotent, so they are sent ``retryable``: the service
    retries them too; creates are not retried (use a
    ticket ``reference``: a second create then fails with `DuplicateRecord`
    instead of making a twin).

    Args:
        service: the `ExternalService` for the CRM's API, with its auth
            (`OAuth2ClientCredentials`; a revoked token is renewed on the 401).
        registry: the Prometheus registry of the unknown-value counter.
    """

    adapter = "salesforce"

    def __init__(
        self, service: ExternalService, *, registry: CollectorRegistry | None = None
    ) -> None:
        super().__init__(service)
        self._unknown = UnknownValueRecorder(self.adapter, registry=registry)

    @classmethod
    def build(
        cls,
        *,
        base_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        token_url: str | None = None,
        scope: str | None = None,
        name: str = "crm",
        registry: CollectorRegistry | None = None,
        **options: Any,
    ) -> Self:
        """A CRM adapter with its own `ExternalService`, closed by `aclose`.

        Args:
            base_url: the API's root.
            client_id: the OAuth 2.0 client id.
            client_secret: the OAuth 2.0 client secret.
            token_url: the token endpoint (``<base_url>/oauth/token`` by default).
            scope: the scopes to ask for, if any.
            name: the service's name in logs, metrics and errors.
            registry: the Prometheus registry of the unknown-value counter.
            **options: further `ExternalService` options (``retry``, ``timeouts``,
                ``transport``, ``clock``, ...); ``transport`` and ``clock`` are
                used for the token requests too.
        """
        auth = OAuth2ClientCredentials(
            token_url=token_url or base_url.rstrip("/") + "/oauth/token",
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            service=name,
            transport=options.get("transport"),
            clock=options.get("clock"),
        )
        crm = cls(ExternalService(name, base_url, auth=auth, **options), registry=registry)
        return crm._owned()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        record_id: str | None = None,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> ServiceResponse:
        # Setting fields is idempotent: the same PATCH twice leaves the same record.
        response: ServiceResponse = await self.service.request(
            method,
            path,
            path_params=None if record_id is None else {"id": record_id},
            params=params,
            json=json,
            retryable=True if method == "PATCH" else None,
            accept=(400, 404),
        )
        return response

    async def _call(
        self,
        method: str,
        path: str,
        kind: str,
        *,
        record_id: str | None = None,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> ServiceResponse:
        response = await self._send(method, path, record_id=record_id, json=json, params=params)
        if not response.ok:
            raise _refusal(response, kind, record_id)
        return response

    async def _find(self, path: str, kind: str, record_id: str) -> ServiceResponse | None:
        response = await self._send("GET", path, record_id=record_id)
        if response.status_code == 404:
            return None
        if not response.ok:
            raise _refusal(response, kind, record_id)
        return response

    def _ticket(self, response: ServiceResponse) -> CrmCase:
        translated = case_from_ticket(response.model(SalesforceTicket))
        self._unknown.record(translated.unknown)
        return translated.value

    async def get_customer(self, customer_id: str) -> Customer | None:
        """The customer, or None when the CRM has none by that id (or it was deleted)."""
        response = await self._find(
            "/api/v1/customers/{id}", "customer", check_id(customer_id, "customer_id")
        )
        if response is None:
            return None
        return customer_from_record(response.model(SalesforceCustomer))

    async def list_customers(self) -> list[Customer]:
        """Every live customer."""
        response = await self._call("GET", "/api/v1/customers", "customer")
        page = response.model(_CustomerList)
        _unpaged(response, page.done)
        return [customer_from_record(record) for record in page.records]

    async def create_customer(self, draft: CustomerDraft) -> Customer:
        """Create a customer and return it as stored."""
        response = await self._call(
            "POST", "/api/v1/customers", "customer", json=customer_fields(draft)
        )
        return customer_from_record(response.model(SalesforceCustomer))

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer:
        """Change the fields *update* sets; see `CRM.update_customer`."""
        response = await self._call(
            "PATCH",
            "/api/v1/customers/{id}",
            "customer",
            record_id=check_id(customer_id, "customer_id"),
            json=customer_fields(update),
        )
        return customer_from_record(response.model(SalesforceCustomer))

    async def get_ticket(self, ticket_id: str) -> CrmCase | None:
        """The ticket as a case, or None when the CRM has none by that id (or it was deleted)."""
        response = await self._find(
            "/api/v1/tickets/{id}", "ticket", check_id(ticket_id, "ticket_id")
        )
        return None if response is None else self._ticket(response)

    async def list_tickets(
        self, *, customer_id: str | None = None, reference: str | None = None
    ) -> list[CrmCase]:
        """Live tickets as cases, of one customer or with one reference if given."""
        params: dict[str, str] = {}
        if customer_id is not None:
            params["CustomerId"] = customer_id
        if reference is not None:
            params["ExternalRef"] = reference
        response = await self._call("GET", "/api/v1/tickets", "ticket", params=params)
        page = response.model(_TicketList)
        _unpaged(response, page.done)
        cases: list[CrmCase] = []
        for record in page.records:
            translated = case_from_ticket(record)
            self._unknown.record(translated.unknown)
            cases.append(translated.value)
        return cases

    async def create_ticket(self, draft: CaseDraft) -> CrmCase:
        """Create a ticket for a case; see `CRM.create_ticket`."""
        response = await self._call("POST", "/api/v1/tickets", "ticket", json=ticket_fields(draft))
        return self._ticket(response)

    async def update_ticket(self, ticket_id: str, update: CaseUpdate) -> CrmCase:
        """Change the fields *update* sets; see `CRM.update_ticket`."""
        response = await self._call(
            "PATCH",
            "/api/v1/tickets/{id}",
            "ticket",
            record_id=check_id(ticket_id, "ticket_id"),
            json=ticket_fields(update),
        )
        return self._ticket(response)

    async def changes(self, since_cursor: str | None = None, *, limit: int = 100) -> CrmChanges:
        """The changes after *since_cursor*; see `CRM.changes`.

        Raises:
            seawall.errors.InvalidResponse: an entry's record does not fit its
                object; the page is refused whole, so no change is skipped.
        """
        params = {"limit": str(check_limit(limit))}
        if since_cursor is not None:
            params["since"] = since_cursor
        response = await self._call("GET", "/api/v1/changes", "change", params=params)
        page = response.model(_ChangePage)
        changes: list[CrmChange] = []
        for entry in page.changes:
            try:
                translated = change_from_feed(entry)
            except ValidationError as exc:
                problems = exc.errors(include_url=False, include_input=False)
                raise InvalidResponse(
                    f"change {entry.cursor} ({entry.object} {entry.id}) does not fit the record",
                    errors=[
                        f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
                        for problem in problems[:20]
                    ],
                    status=response.status_code,
                    **_facts(response),
                ) from None
            self._unknown.record(translated.unknown)
            if translated.value is not None:
                changes.append(translated.value)
        return CrmChanges(changes=changes, next_cursor=page.next_cursor, has_more=page.has_more)
