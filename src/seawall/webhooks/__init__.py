"""Webhooks: signature verification (pure), and the receiver and processor built on it.

`verify` checks that a request was signed by a provider with one of the
configured secrets (several during a rotation) and raises `InvalidSignature`
with a ``reason`` code from `REASONS` when it was not. `delivery_id` reads the
provider's id of the delivery for dedupe, and `signs_identity` tells whether
that id (or a timestamp) is covered by the signature; when it is not, dedupe on
a hash of the body as well.

Providers by name (`PROVIDERS`): ``github``, ``shopify``, ``slack``,
``standard`` (Standard Webhooks and Svix), ``stripe`` and ``twilio``; any other
HMAC signer is described by an `HmacScheme` passed as the provider::

    verify("stripe", request.headers, body, [settings.stripe_secret])
    verify(HmacScheme(header="X-Signature", prefix="sha256="), headers, body, [secret])

Importing this package loads neither FastAPI, SQLAlchemy, httpx nor nats: the
receiver and the processor, which store deliveries, are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from seawall.errors import InvalidSignature
from seawall.webhooks._parsing import MAX_HEADER_BYTES, MAX_SIGNATURES
from seawall.webhooks._schemes import HmacScheme
from seawall.webhooks._verify import PROVIDERS, REASONS, delivery_id, signs_identity, verify

if TYPE_CHECKING:
    from seawall.webhooks._log import STATUSES, StoredWebhook, WebhookFilter, WebhookLog
    from seawall.webhooks._process import (
        PARK_SCHEDULE,
        AwaitingRecord,
        WebhookEvent,
        WebhookHandler,
        WebhookHandlers,
        WebhookProcessor,
    )
    from seawall.webhooks._receive import (
        WEBHOOK_SOURCE,
        MalformedWebhook,
        Receipt,
        WebhookProvider,
        WebhookReceiver,
        event_type_of,
        parse_body,
        safe_headers,
    )
    from seawall.webhooks._recover import RecoveryReport, recover_github, recover_stripe

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_SIGNATURES",
    "PARK_SCHEDULE",
    "PROVIDERS",
    "REASONS",
    "STATUSES",
    "WEBHOOK_SOURCE",
    "AwaitingRecord",
    "HmacScheme",
    "InvalidSignature",
    "MalformedWebhook",
    "Receipt",
    "RecoveryReport",
    "StoredWebhook",
    "WebhookEvent",
    "WebhookFilter",
    "WebhookHandler",
    "WebhookHandlers",
    "WebhookLog",
    "WebhookProcessor",
    "WebhookProvider",
    "WebhookReceiver",
    "delivery_id",
    "event_type_of",
    "parse_body",
    "recover_github",
    "recover_stripe",
    "safe_headers",
    "signs_identity",
    "verify",
]

# The receiver and the processor need SQLAlchemy and the bus: import them on first use,
# so that verifying a signature stays a pure, light import.
_LAZY = {
    "RecoveryReport": "seawall.webhooks._recover",
    "recover_github": "seawall.webhooks._recover",
    "recover_stripe": "seawall.webhooks._recover",
    "STATUSES": "seawall.webhooks._log",
    "StoredWebhook": "seawall.webhooks._log",
    "WebhookFilter": "seawall.webhooks._log",
    "WebhookLog": "seawall.webhooks._log",
    "PARK_SCHEDULE": "seawall.webhooks._process",
    "AwaitingRecord": "seawall.webhooks._process",
    "WebhookEvent": "seawall.webhooks._process",
    "WebhookHandler": "seawall.webhooks._process",
    "WebhookHandlers": "seawall.webhooks._process",
    "WebhookProcessor": "seawall.webhooks._process",
    "WEBHOOK_SOURCE": "seawall.webhooks._receive",
    "MalformedWebhook": "seawall.webhooks._receive",
    "Receipt": "seawall.webhooks._receive",
    "WebhookProvider": "seawall.webhooks._receive",
    "WebhookReceiver": "seawall.webhooks._receive",
    "event_type_of": "seawall.webhooks._receive",
    "parse_body": "seawall.webhooks._receive",
    "safe_headers": "seawall.webhooks._receive",
}


if not TYPE_CHECKING:  # type checkers see the imports above; a __getattr__ would hide typos

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
