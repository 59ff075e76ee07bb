"""`webhook_headers`: sign a body the way a provider does, for tests and the demo.

Each scheme follows its provider's documentation; seawall's verifier is checked
against the providers' published examples and official libraries, so a request
signed here is what a real provider would send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Literal

__all__ = ["SignedProvider", "webhook_headers"]

SignedProvider = Literal["github", "stripe", "shopify", "slack", "standard"]


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def webhook_headers(
    provider: SignedProvider,
    body: bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    delivery_id: str | None = None,
    event: str | None = None,
) -> dict[str, str]:
    """The headers *provider* would send with *body*, signed with *secret*.

    Args:
        provider: ``github``, ``stripe``, ``shopify``, ``slack`` or ``standard``
            (Standard Webhooks / Svix: *secret* is ``whsec_`` + base64).
        body: the exact bytes to send.
        secret: the webhook secret.
        timestamp: Unix seconds signed in (Stripe, Slack, Standard); now by default.
        delivery_id: the delivery id header (GitHub, Shopify, Standard); a fresh one
            by default. Stripe's id is the event's ``id`` in the body.
        event: GitHub's ``X-GitHub-Event`` or Shopify's topic.

    Raises:
        ValueError: an unknown provider, or a Standard Webhooks secret that is not
            ``whsec_`` + base64.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    ident = delivery_id or str(uuid.uuid4())
    headers = {"Content-Type": "application/json"}
    if provider == "github":
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers |= {"X-Hub-Signature-256": f"sha256={signature}", "X-GitHub-Delivery": ident}
        if event:
            headers["X-GitHub-Event"] = event
    elif provider == "stripe":
        signature = hmac.new(secret.encode(), b"%d." % stamp + body, hashlib.sha256).hexdigest()
        headers["Stripe-Signature"] = f"t={stamp},v1={signature}"
    elif provider == "shopify":
        digest = base64.b64encode(_hmac(secret.encode(), body)).decode()
        headers |= {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Webhook-Id": ident}
        if event:
            headers["X-Shopify-Topic"] = event
    elif provider == "slack":
        signature = hmac.new(secret.encode(), b"v0:%d:" % stamp + body, hashlib.sha256).hexdigest()
        headers |= {"X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": f"v0={signature}"}
    elif provider == "standard":
        if not secret.startswith("whsec_"):
            raise ValueError("a Standard Webhooks secret is 'whsec_' followed by base64")
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        signed = f"{ident}.{stamp}.".encode() + body
        headers |= {
            "webhook-id": ident,
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1," + base64.b64encode(_hmac(key, signed)).decode(),
        }
    else:
        raise ValueError(f"cannot sign for provider {provider!r}")
    return headers
