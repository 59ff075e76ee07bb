"""`WebhookReceiver`: verify, parse, dedupe, and store a delivery with its outbox event.

The order is the one our patterns give: verify the signature on the raw body
(nothing is stored for a stranger), parse, recognise a duplicate by its keys,
then one transaction writes the ``webhook_events`` row, its dedupe keys and a
``webhook.received`` outbox event. The answer goes back as soon as that commits;
processing happens later, from the bus.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from seawall.db import Database, webhook_dedup
from seawall.errors import InvalidSignature, SeawallError
from seawall.ids import new_id
from seawall.messaging import Event, Outbox
from seawall.observability import WebhookMetrics, current_correlation_id
from seawall.webhooks._batch import MAX_BATCH, GroupCommit, PendingDelivery
from seawall.webhooks._verify import HmacScheme, delivery_id, signs_identity, verify

__all__ = [
    "WEBHOOK_SOURCE",
    "MalformedWebhook",
    "Receipt",
    "WebhookProvider",
    "WebhookReceiver",
    "event_type_of",
    "parse_body",
    "safe_headers",
]

WEBHOOK_SOURCE: Final = "/seawall/webhooks"
"""The CloudEvents ``source`` of ``webhook.received``: subjects ``seawall.webhooks.…``."""

# Header names that carry a signature or a credential: never stored, never logged.
_SECRET_HEADER: Final = re.compile(
    r"signature|authorization|cookie|token|secret|hmac|api[-_]?key", re.IGNORECASE
)
_FORM_SCHEMES: Final = frozenset({"twilio"})


class MalformedWebhook(SeawallError):  # noqa: N818 - leaves name the condition
    """A verified delivery whose body cannot be read (not JSON, not a form).

    Attributes:
        provider: the provider's name.
        reason: what is wrong, without the body.
    """

    def __init__(self, *, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"webhook from {provider!r} is malformed: {reason}")


@dataclass(frozen=True, slots=True)
class WebhookProvider:
    """One configured sender of webhooks.

    Attributes:
        name: the path segment (``POST /webhooks/<name>``) and the name stored.
        scheme: the signature scheme (``github``, ``stripe``, … or an `HmacScheme`).
        secrets: the signing secrets; any one may match (rotation).
        tolerance: seconds a signed timestamp may be off, where the scheme has one.
        public_url: the URL the provider calls, when a proxy rewrites it.
    """

    name: str
    scheme: str | HmacScheme
    secrets: Sequence[SecretStr] = field(repr=False)
    tolerance: float = 300.0
    public_url: str | None = None

    @property
    def scheme_name(self) -> str:
        """The scheme's name (``hmac`` for a configured `HmacScheme`)."""
        return self.scheme if isinstance(self.scheme, str) else "hmac"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the receiver did with a delivery.

    Attributes:
        status: ``accepted`` (stored, will be processed), ``duplicate`` (seen
            before, nothing stored) or ``challenge`` (a URL verification to echo).
        webhook_id: the stored event's id (for a duplicate, the first one's).
        event_type: the delivery's type, as far as it could be read.
        challenge: the value to echo back for ``challenge``.
    """

    status: Literal["accepted", "duplicate", "challenge"]
    webhook_id: str | None = None
    event_type: str | None = None
    challenge: str | None = None


def parse_body(scheme: str, body: bytes, content_type: str | None) -> Any:
    """The delivery's payload: JSON, or a form for Twilio and form-encoded Slack (pure).

    Raises:
        ValueError: the body is neither.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if scheme in _FORM_SCHEMES or media == "application/x-www-form-urlencoded":
        text = body.decode("utf-8")
        form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
        # Slack's interactive payloads and slash commands: JSON inside a form field.
        if scheme == "slack" and "payload" in form:
            return json.loads(form["payload"])
        return form
    value = json.loads(body)
    if not isinstance(value, dict | list):
        raise ValueError("the JSON body is not an object or a list")
    return value


def _get(mapping: Mapping[str, str], name: str) -> str | None:
    value = mapping.get(name)
    if value is None:
        value = mapping.get(name.lower())
    return value


def event_type_of(scheme: str, headers: Mapping[str, str], payload: Any) -> str | None:
    """The delivery's event type, where the provider says it (pure).

    GitHub ``X-GitHub-Event`` (with the body's ``action``: ``issues.opened``),
    Shopify ``X-Shopify-Topic``, Stripe and Standard Webhooks the body's
    ``type``, Slack the inner ``event.type`` (or ``url_verification``), Twilio
    ``message`` or ``call``.
    """
    body = payload if isinstance(payload, dict) else {}
    if scheme == "github":
        name = _get(headers, "X-GitHub-Event")
        action = body.get("action")
        if name and isinstance(action, str) and action:
            return f"{name}.{action}"[:200]
        return name[:200] if name else None
    if scheme == "shopify":
        topic = _get(headers, "X-Shopify-Topic")
        return topic[:200] if topic else None
    if scheme == "slack":
        inner = body.get("event")
        if isinstance(inner, dict) and isinstance(inner.get("type"), str):
            return str(inner["type"])[:200]
    if scheme == "twilio":
        if "MessageSid" in body or "SmsSid" in body:
            return "message"
        return "call" if "CallSid" in body else None
    kind = body.get("type")
    return kind[:200] if isinstance(kind, str) and kind else None


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with a delivery: no signature, credential or cookie."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if _SECRET_HEADER.search(lower) or lower in {"host", "content-length", "connection"}:
            continue
        kept[lower] = value[:1000]
    return kept


class WebhookReceiver:
    """Receives webhooks for a set of providers into the database and the outbox.

    Args:
        database: where events, dedupe keys and outbox rows go.
        providers: the configured providers, by name.
        dedup_ttl: how long a delivery's keys are remembered (seconds or timedelta).
        outbox: the outbox writer (the default table).
        max_batch: deliveries stored per transaction at most (group commit).
    """

    def __init__(
        self,
        database: Database,
        providers: Mapping[str, WebhookProvider],
        *,
        dedup_ttl: float | timedelta = timedelta(days=7),
        outbox: Outbox | None = None,
        max_batch: int = MAX_BATCH,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.database = database
        # Every delivery handed in is counted (seawall_webhooks_received_total),
        # into *registry* or the default one.
        self.metrics = WebhookMetrics(registry)
        self.providers = dict(providers)
        self.dedup_ttl = (
            dedup_ttl if isinstance(dedup_ttl, timedelta) else timedelta(seconds=dedup_ttl)
        )
        self._outbox = outbox or Outbox()
        self._writer = GroupCommit(database, self._outbox, max_batch=max_batch)

    def __repr__(self) -> str:
        return f"WebhookReceiver({sorted(self.providers)})"

    def provider(self, name: str) -> WebhookProvider | None:
        """The provider configured under *name* with at least one secret, if any."""
        provider = self.providers.get(name)
        return provider if provider is not None and provider.secrets else None

    async def receive(
        self,
        provider: WebhookProvider,
        headers: Mapping[str, str],
        body: bytes,
        *,
        url: str | None = None,
        now: datetime | None = None,
    ) -> Receipt:
        """Verify and store one delivery.

        Args:
            provider: who sent it.
            headers: the request headers (any case).
            body: the raw body, as the signature covers it.
            url: the full request URL (Twilio signs it); ``public_url`` wins.
            now: the current time (tests).

        Returns:
            What was done: accepted, duplicate, or a URL-verification challenge.

        Raises:
            seawall.errors.InvalidSignature: the signature does not verify;
                nothing is stored.
            MalformedWebhook: the verified body is not JSON (or a form where the
                provider sends one); nothing is stored.
            seawall.errors.DatabaseError: the database could not be reached.
            sqlalchemy.exc.SQLAlchemyError: the transaction failed; nothing is stored.
        """
        moment = now or datetime.now(UTC)
        scheme = provider.scheme_name
        try:
            verify(
                provider.scheme,
                headers,
                body,
                provider.secrets,
                now=moment.timestamp(),
                tolerance=provider.tolerance,
                url=provider.public_url or url,
            )
        except InvalidSignature:
            self.metrics.observe(provider.name, "invalid_signature")
            raise
        try:
            payload = parse_body(scheme, body, _get(headers, "Content-Type"))
        except (ValueError, UnicodeDecodeError) as exc:
            self.metrics.observe(provider.name, "malformed")
            raise MalformedWebhook(provider=provider.name, reason=type(exc).__name__) from None
        kind = event_type_of(scheme, headers, payload)
        if (
            scheme == "slack"
            and isinstance(payload, dict)
            and payload.get("type") == "url_verification"
        ):
            challenge = payload.get("challenge")
            if not isinstance(challenge, str):
                self.metrics.observe(provider.name, "malformed")
                raise MalformedWebhook(provider=provider.name, reason="challenge is not a string")
            self.metrics.observe(provider.name, "challenge")
            return Receipt("challenge", event_type="url_verification", challenge=challenge)
        delivery = delivery_id(provider.scheme, headers, body)
        receipt = await self.store(
            provider,
            body,
            headers,
            delivery_id=delivery,
            event_type=kind,
            # The signature covers no id or timestamp: a captured delivery replayed
            # under a fresh id has the same body, and is caught by its hash.
            by_body=not delivery or not signs_identity(provider.scheme),
            now=moment,
        )
        self.metrics.observe(provider.name, receipt.status)
        return receipt

    async def store(
        self,
        provider: WebhookProvider,
        body: bytes,
        headers: Mapping[str, str],
        *,
        delivery_id: str | None,
        event_type: str | None,
        by_body: bool,
        now: datetime | None = None,
    ) -> Receipt:
        """Dedupe and store a delivery already trusted, with its outbox event.

        `receive` calls it after verifying; recovery calls it for deliveries read
        from the provider's own API (trusted through that API's authentication).

        Args:
            provider: who sent it.
            body: the raw body.
            headers: its headers (signatures and credentials are not kept).
            delivery_id: the provider's delivery id, if any.
            event_type: the event type, if known.
            by_body: also recognise it by the hash of its body.
            now: the current time (tests).

        The delivery joins the others waiting for the receiver's single writer,
        which stores them all in one transaction (group commit); this returns once
        that transaction has committed.

        Returns:
            ``accepted``, or ``duplicate`` with the first delivery's id.

        Raises:
            seawall.errors.DatabaseError: the database could not be reached.
            sqlalchemy.exc.SQLAlchemyError: the transaction failed; nothing is stored.
        """
        moment = now or datetime.now(UTC)
        digest = hashlib.sha256(body).hexdigest()
        keys = []
        if delivery_id:
            keys.append(f"id:{delivery_id}"[:200])
        if by_body or not delivery_id:
            keys.append(f"sha256:{digest}")
        webhook_id = new_id()
        row = {
            "id": webhook_id,
            "provider": provider.name,
            "delivery_id": delivery_id[:200] if delivery_id else None,
            "event_type": event_type,
            "body": body,
            "body_sha256": digest,
            "headers": safe_headers(headers),
            "status": "received",
            "attempts": 0,
            "last_error": None,
            "correlation_id": current_correlation_id(),
            "received_at": moment,
            "processed_at": None,
            "next_attempt_at": None,
            "waiting_for": None,
        }
        event = Event.create(
            "webhook.received",
            source=WEBHOOK_SOURCE,
            subject=webhook_id,
            data={
                "id": webhook_id,
                "provider": provider.name,
                "type": event_type,
                "delivery_id": delivery_id,
            },
        )
        pending = PendingDelivery(
            provider=provider.name,
            keys=tuple(keys),
            row=row,
            event=event,
            expires_at=moment + self.dedup_ttl,
        )
        status, stored_id = await self._writer.store(pending)
        return Receipt(status, webhook_id=stored_id, event_type=event_type)

    async def known(self, provider: str, delivery_id: str) -> bool:
        """Whether a delivery with this id was stored (and its key not yet purged)."""
        async with self.database.reading() as session:
            row = (
                await session.execute(
                    sa.select(webhook_dedup.c.webhook_id).where(
                        webhook_dedup.c.provider == provider,
                        webhook_dedup.c.key == f"id:{delivery_id}"[:200],
                    )
                )
            ).first()
        return row is not None

    async def purge_expired(self, *, now: datetime | None = None, batch: int = 1000) -> int:
        """Forget dedupe keys past their time, *batch* rows per transaction.

        Returns:
            How many keys were removed.
        """
        moment = now or datetime.now(UTC)
        removed = 0
        while True:
            async with self.database.transaction() as session:
                doomed = (
                    sa.select(webhook_dedup.c.provider, webhook_dedup.c.key)
                    .where(webhook_dedup.c.expires_at < moment)
                    .limit(batch)
                )
                rows = (await session.execute(doomed)).all()
                if not rows:
                    return removed
                for provider, key in rows:
                    await session.execute(
                        webhook_dedup.delete().where(
                            webhook_dedup.c.provider == provider, webhook_dedup.c.key == key
                        )
                    )
                removed += len(rows)
