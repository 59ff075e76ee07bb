"""`verify`, `delivery_id` and `signs_identity`: pure decisions over one webhook request."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from seawall.errors import InvalidSignature
from seawall.webhooks._parsing import HeaderView, reject
from seawall.webhooks._schemes import (
    HmacScheme,
    standard_family,
    verify_github,
    verify_shopify,
    verify_slack,
    verify_standard,
    verify_stripe,
    verify_twilio,
)

if TYPE_CHECKING:
    from pydantic import SecretStr

# HmacScheme is re-exported: the receiver imports the whole verification API from here.
__all__ = ["PROVIDERS", "REASONS", "HmacScheme", "delivery_id", "signs_identity", "verify"]

_Check = Callable[[HeaderView, bytes, list[str], float, float, str | None], None]

_CHECKS: Final[dict[str, _Check]] = {
    "github": verify_github,
    "shopify": verify_shopify,
    "slack": verify_slack,
    "standard": verify_standard,
    "stripe": verify_stripe,
    "twilio": verify_twilio,
}

PROVIDERS: Final[tuple[str, ...]] = ("github", "shopify", "slack", "standard", "stripe", "twilio")
"""The provider names `verify` accepts as text; a generic HMAC provider is an `HmacScheme`."""

REASONS: Final[tuple[str, ...]] = (
    "bad_signature",
    "body_hash_mismatch",
    "header_too_large",
    "malformed_body",
    "malformed_header",
    "missing_header",
    "no_secret",
    "timestamp_out_of_tolerance",
    "unknown_provider",
    "unsigned_body",
)
"""Every `InvalidSignature.reason` `verify` can give (a bounded set: fine as a metric label)."""

# Providers whose signature covers a timestamp or an id, so that a replay is refused
# or recognised from the signed content alone.
_SIGNS_IDENTITY: Final[dict[str, bool]] = {
    "github": False,
    "shopify": False,
    "slack": True,
    "standard": True,
    "stripe": True,
    # Twilio signs the URL and parameters but no time, and its idempotency token is unsigned.
    "twilio": False,
}


def _secret_texts(secrets: Sequence[str | SecretStr]) -> list[str]:
    # A lone string is a Sequence too: taken letter by letter, each letter would be a
    # one-character secret that anyone could guess.
    if isinstance(secrets, (str, bytes, bytearray)) or hasattr(secrets, "get_secret_value"):
        raise TypeError("secrets must be a list of secrets, such as [secret], not one secret")
    texts: list[str] = []
    for secret in secrets:
        text = secret if type(secret) is str else _unwrap(secret)
        # An empty key signs with no secret at all; it never counts as one.
        if text:
            texts.append(text)
    return texts


def _unwrap(secret: object) -> str:
    reveal = getattr(secret, "get_secret_value", None)
    value = reveal() if callable(reveal) else None
    if not isinstance(value, str):
        raise TypeError(f"a secret must be a str or a SecretStr, not {type(secret).__name__}")
    return value


def verify(
    provider: str | HmacScheme,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str | SecretStr],
    *,
    now: float | None = None,
    tolerance: float = 300,
    url: str | None = None,
) -> None:
    """Check that a webhook request was signed by *provider* with one of *secrets*.

    Returns only when a signature matches a secret (and its timestamp, if the
    provider signs one, is within *tolerance*). The signature is checked before
    the time, so ``timestamp_out_of_tolerance`` means a genuine but stale (or
    early) request: a replay, or a clock out of sync.

    Args:
        provider: a name from `PROVIDERS`, or an `HmacScheme` for any other
            provider that signs with an HMAC.
        headers: the request headers, any mapping; names are matched
            case-insensitively.
        body: the raw body, exactly as received (bytes: never re-serialise it).
        secrets: the signing secrets; any one may match (rotation). For
            ``standard``, the ``whsec_`` base64 secret; for ``twilio``, the auth token.
        now: the current Unix time; `time.time` when None.
        tolerance: seconds a signed timestamp may be old (Stripe), or old or
            ahead (Slack, Standard Webhooks, `HmacScheme`). ``math.inf`` turns
            the check off.
        url: the full URL the request was sent to, query included; required
            for ``twilio``, which signs it, and ignored by the others.

    Raises:
        InvalidSignature: the request is not proven to come from *provider*;
            ``reason`` says why (one of `REASONS`). Respond 400 or 401 and do
            not act on it.
        TypeError: *secrets* is a single secret rather than a list of them.
        ValueError: ``"hmac"`` was given without an `HmacScheme`, *url* is
            missing for ``twilio``, *tolerance* is negative, *now* is not
            finite, or a Standard Webhooks secret is not base64.
    """
    if not tolerance >= 0:
        raise ValueError("tolerance must be at least 0 seconds (math.inf turns the check off)")
    check: _Check | None
    if isinstance(provider, HmacScheme):
        name, check = provider.name, provider._check
    else:
        name, check = provider, _CHECKS.get(provider)
        if check is None:
            if provider == "hmac":
                raise ValueError("pass an HmacScheme as provider to verify a generic HMAC")
            raise reject(
                str(provider)[:64],
                "unknown_provider",
                f"no such provider; use one of {', '.join(PROVIDERS)} or an HmacScheme",
            )
        if url is None and provider == "twilio":
            raise ValueError("twilio signs the request URL: pass url=, the full URL with its query")
    texts = _secret_texts(secrets)
    if not texts:
        raise reject(
            name, "no_secret", "no signing secret is configured; no request can be verified"
        )
    when = time.time() if now is None else now
    if not math.isfinite(when):
        raise ValueError("now must be a finite Unix time")
    check(HeaderView(headers, name), body, texts, when, tolerance, url)


def signs_identity(provider: str | HmacScheme) -> bool:
    """Whether *provider*'s signature covers a timestamp or a delivery id.

    When it does not (``github``, ``shopify``, ``twilio``), a captured request can
    be replayed unchanged, with any delivery id header: dedupe on a hash of the
    body as well as on `delivery_id`.

    Raises:
        ValueError: an unknown provider name.
    """
    if isinstance(provider, HmacScheme):
        return provider.signs_identity
    try:
        return _SIGNS_IDENTITY[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}") from None


def _json_field(body: bytes, key: str) -> str | None:
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, str) and value else None


_ID_IN_BODY: Final[dict[str, str]] = {"slack": "event_id", "stripe": "id"}
_ID_HEADERS: Final[dict[str, str]] = {
    "github": "X-GitHub-Delivery",
    "shopify": "X-Shopify-Webhook-Id",
    "twilio": "I-Twilio-Idempotency-Token",
}


def delivery_id(provider: str | HmacScheme, headers: Mapping[str, str], body: bytes) -> str | None:
    """The provider's id for this delivery, the same on its retries, for dedupe; None if none.

    - ``github``: ``X-GitHub-Delivery`` (not signed).
    - ``stripe``: the event's ``id`` in the JSON body (signed).
    - ``shopify``: ``X-Shopify-Webhook-Id`` (not signed).
    - ``slack``: the Events API ``event_id`` in the JSON body (signed); None for
      slash commands and interactions, which Slack does not retry.
    - ``standard``: ``webhook-id`` or ``svix-id`` (signed).
    - ``twilio``: ``I-Twilio-Idempotency-Token`` (not signed). Never a
      ``MessageSid`` or ``CallSid``: the status callbacks of one message, and the
      successive ``<Gather>`` results of one call, share it.
    - an `HmacScheme`: its ``id_header``, if it has one.

    Call it after `verify`; it reads, never checks. It does not raise on any
    headers or body.

    Raises:
        ValueError: an unknown provider name.
    """
    if isinstance(provider, HmacScheme):
        if provider.id_header is None:
            return None
        return _header_or_none(HeaderView(headers, provider.name), provider.id_header)
    if provider in _ID_IN_BODY:
        return _json_field(body, _ID_IN_BODY[provider])
    if provider in _ID_HEADERS:
        return _header_or_none(HeaderView(headers, provider), _ID_HEADERS[provider])
    if provider == "standard":
        h = HeaderView(headers, provider)
        try:
            family = standard_family(h)
        except InvalidSignature:
            family = None
        if family is None:
            return _header_or_none(h, "webhook-id") or _header_or_none(h, "svix-id")
        return _header_or_none(h, f"{family}-id")
    raise ValueError(f"unknown provider {provider!r}")


def _header_or_none(h: HeaderView, header: str) -> str | None:
    try:
        return h.get(header.lower(), header)
    except InvalidSignature:
        # Oversized or not text: no usable id, and dedupe falls back on the body.
        return None
