"""Test-side signers, each written from its provider's documentation (not from seawall)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

NOW = 1_700_000_000
SECRET = "whsec_test_0123456789abcdefghij"
OTHER_SECRET = "whsec_other_9876543210zyxwvuts"
# Standard Webhooks secrets are base64 after their prefix.
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
OTHER_STANDARD_SECRET = "whsec_" + base64.b64encode(b"another-standard-key-of-32-bytes").decode()
BODY = b'{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "type": "charge.succeeded"}'


def hex_hmac(secret: str | bytes, message: bytes, algorithm: str = "sha256") -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, algorithm).hexdigest()


def b64_hmac(secret: str | bytes, message: bytes, algorithm: str = "sha256") -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, message, algorithm).digest()).decode()


def github_headers(body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hex_hmac(secret, body)}


def stripe_headers(
    body: bytes = BODY, secret: str = SECRET, timestamp: int = NOW
) -> dict[str, str]:
    signature = hex_hmac(secret, b"%d." % timestamp + body)
    return {"Stripe-Signature": f"t={timestamp},v1={signature}"}


def shopify_headers(body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": b64_hmac(secret, body)}


def slack_headers(body: bytes = BODY, secret: str = SECRET, timestamp: int = NOW) -> dict[str, str]:
    signature = hex_hmac(secret, b"v0:%d:" % timestamp + body)
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={signature}"}


def standard_headers(
    body: bytes = BODY,
    secret: str = STANDARD_SECRET,
    timestamp: int = NOW,
    msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    prefix: str = "webhook",
) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signature = b64_hmac(key, f"{msg_id}.{timestamp}.".encode() + body)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": f"v1,{signature}",
    }


def twilio_signature(token: str, url: str, form_body: bytes | None = None) -> str:
    """Twilio's documented algorithm: the URL, then each POST parameter's name and value,
    sorted by name (and by value for a repeated name), HMAC-SHA1, base64."""
    signed = url
    if form_body:
        params = parse_qsl(form_body.decode(), keep_blank_values=True)
        signed += "".join(name + value for name, value in sorted(params))
    return b64_hmac(token, signed.encode(), "sha1")


def twilio_json_url(base: str, body: bytes) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}bodySHA256={hashlib.sha256(body).hexdigest()}"


FORM = "application/x-www-form-urlencoded"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def with_trailing_bits(canonical: str) -> str:
    """The same bytes as padded base64 *canonical*, spelled with a non-zero trailing bit.

    Lenient decoders (``base64.b64decode``) read both spellings as the same MAC.
    """
    last = canonical.rstrip("=")[-1]
    padding = len(canonical) - len(canonical.rstrip("="))
    spelled = _ALPHABET[_ALPHABET.index(last) | 1]
    return canonical[: -padding - 1] + spelled + "=" * padding
