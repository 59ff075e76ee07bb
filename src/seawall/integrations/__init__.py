"""Adapters to third-party services, with anti-corruption layers.

Application code calls an adapter's interface and gets seawall's own models
back; the adapter calls a `seawall.http.ExternalService`, and the provider's
payloads are translated at the boundary (by pydantic and pure functions) into
our models. Each interface has an HTTP implementation, built from a service
(``Adapter(service)``) or with defaults (``Adapter.build(...)``), and an
in-memory one with the same behaviour and errors, for users' tests.

Payments:
    `PaymentGateway` with `StripeGateway` and `InMemoryPaymentGateway`:
    `Charge`, `Refund`; deterministic idempotency keys
    (`charge_idempotency_key`), card numbers refused before anything is sent
    (`looks_like_card_number`, `CardNumberRefused`), `PaymentDeclined` and
    `PaymentConflict`.

CRM:
    `CRM` with `SalesforceCRM` (OAuth 2.0 client credentials) and `InMemoryCRM`:
    `Customer`, `CrmCase` (a ticket with the fields and values of seawall's
    ``Case``), `CaseDraft`, `CaseUpdate`, `CustomerDraft`, `CustomerUpdate`,
    and a change feed (`CrmChange`, `CrmChanges`). Translations are pure
    functions (`case_from_ticket`, `ticket_fields`, ...); values they do not know
    take safe defaults and are counted in
    ``seawall_acl_unknown_values_total{adapter, field}`` (`UnknownValueRecorder`).
    Errors: `RecordNotFound`, `DuplicateRecord`.

Notifications:
    `NotificationChannel` (`Notification` in, `Delivery` out) with
    `SendGridEmail`, `SmtpEmail`, `TwilioSms`, `SlackWebhook` and
    `InMemoryChannel`; a `Notifier` routes by channel name, fails over in
    order, or broadcasts. SMTP failures map into the same error tree (`smtp_error`).
"""

from seawall.integrations._acl import Translated, UnknownValue, UnknownValueRecorder
from seawall.integrations._cards import CardNumberRefused, looks_like_card_number
from seawall.integrations._channels import SendGridEmail, SlackWebhook, TwilioSms
from seawall.integrations._crm import (
    CRM,
    CaseDraft,
    CasePriority,
    CaseStatus,
    CaseUpdate,
    CrmCase,
    CrmChange,
    CrmChanges,
    Customer,
    CustomerDraft,
    CustomerUpdate,
    DuplicateRecord,
    RecordNotFound,
)
from seawall.integrations._memory import InMemoryChannel, InMemoryCRM, InMemoryPaymentGateway
from seawall.integrations._notifications import (
    Delivery,
    Notification,
    NotificationChannel,
    Notifier,
)
from seawall.integrations._payments import (
    Charge,
    ChargeStatus,
    PaymentConflict,
    PaymentDeclined,
    PaymentGateway,
    Refund,
    RefundReason,
    RefundStatus,
    charge_idempotency_key,
    refund_idempotency_key,
)
from seawall.integrations._salesforce import SalesforceCRM
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
from seawall.integrations._smtp import SmtpEmail, smtp_error
from seawall.integrations._stripe import (
    StripeCharge,
    StripeGateway,
    StripeRefund,
    charge_from_stripe,
    refund_from_stripe,
)

__all__ = [
    "CRM",
    "CardNumberRefused",
    "CaseDraft",
    "CasePriority",
    "CaseStatus",
    "CaseUpdate",
    "Charge",
    "ChargeStatus",
    "CrmCase",
    "CrmChange",
    "CrmChanges",
    "Customer",
    "CustomerDraft",
    "CustomerUpdate",
    "Delivery",
    "DuplicateRecord",
    "InMemoryCRM",
    "InMemoryChannel",
    "InMemoryPaymentGateway",
    "Notification",
    "NotificationChannel",
    "Notifier",
    "PaymentConflict",
    "PaymentDeclined",
    "PaymentGateway",
    "RecordNotFound",
    "Refund",
    "RefundReason",
    "RefundStatus",
    "SalesforceCRM",
    "SalesforceChange",
    "SalesforceCustomer",
    "SalesforceTicket",
    "SendGridEmail",
    "SlackWebhook",
    "SmtpEmail",
    "StripeCharge",
    "StripeGateway",
    "StripeRefund",
    "Translated",
    "TwilioSms",
    "UnknownValue",
    "UnknownValueRecorder",
    "case_from_ticket",
    "change_from_feed",
    "charge_from_stripe",
    "charge_idempotency_key",
    "customer_fields",
    "customer_from_record",
    "looks_like_card_number",
    "refund_from_stripe",
    "refund_idempotency_key",
    "smtp_error",
    "ticket_fields",
]
