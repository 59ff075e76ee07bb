"""How each provider signs a webhook: one check per provider, and the generic `HmacScheme`.

Every check has the same shape: read its headers through `HeaderView`, compute
the expected MAC once per secret, compare it in constant time with every
presented signature, and raise `InvalidSignature` with a reason code when the
request does not pass. The body is hashed as bytes; only Twilio's form
parameters are decoded, because Twilio signs them as text.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import string
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from seawall.webhooks._parsing import (
    MAX_SIGNATURES,
    HeaderView,
    check_window,
    is_base64,
    is_hex,
    malformed,
    no_match,
    parse_timestamp,
    reject,
)

_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}
_FORM = "application/x-www-form-urlencoded"

Algorithm = Literal["sha1", "sha256", "sha512"]
Encoding = Literal["hex", "base64"]


def _match_hex(
    provider: str, display: str, secrets: list[str], message: bytes, presented: list[str]
) -> None:
    """Pass if a presented hex signature is the HMAC-SHA256 of *message* with a secret.

    Candidates need only be 64 ASCII characters here: none but the lowercase hex
    digest can be equal to it. Whether a refused one was malformed is decided
    afterwards, off the hot path.
    """
    for secret in secrets:
        expected = hmac.digest(secret.encode(), message, "sha256").hex()
        for candidate in presented:
            if hmac.compare_digest(expected, candidate):
                return
    if not any(is_hex(candidate, 32) for candidate in presented):
        raise malformed(provider, display, "has no signature of 64 lowercase hex digits")
    raise no_match(provider, secrets)


def _hex_candidate(text: str) -> list[str]:
    return [text] if len(text) == 64 and text.isascii() else []


def verify_github(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``; no timestamp."""
    display = "X-Hub-Signature-256"
    value = h.require("x-hub-signature-256", display)
    if not value.startswith("sha256="):
        raise malformed(h.provider, display, "does not start with 'sha256='")
    _match_hex(h.provider, display, secrets, body, _hex_candidate(value[7:]))


def verify_stripe(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """``Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]`` over ``f"{t}.{body}"``.

    The key is the whole secret text (``whsec_...``, not decoded). Only
    timestamps older than *tolerance* are refused, as Stripe's library does.
    """
    display = "Stripe-Signature"
    value = h.require("stripe-signature", display)
    timestamp_text: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, _, text = item.partition("=")
        if key == "t":
            if timestamp_text is not None:
                raise malformed(h.provider, display, "has more than one timestamp")
            timestamp_text = text
        elif (
            key == "v1" and len(signatures) < MAX_SIGNATURES and len(text) == 64 and text.isascii()
        ):
            signatures.append(text)
    if timestamp_text is None:
        raise malformed(h.provider, display, "has no timestamp (t=)")
    timestamp = parse_timestamp(h.provider, timestamp_text, display)
    _match_hex(h.provider, display, secrets, b"%d." % timestamp + body, signatures)
    check_window(h.provider, timestamp, now, tolerance, both_ways=False)


def verify_shopify(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>``; no timestamp."""
    display = "X-Shopify-Hmac-Sha256"
    value = h.require("x-shopify-hmac-sha256", display)
    if not is_base64(value, 32):
        raise malformed(h.provider, display, "is not the canonical base64 of 32 bytes")
    for secret in secrets:
        expected = binascii.b2a_base64(
            hmac.digest(secret.encode(), body, "sha256"), newline=False
        ).decode()
        if hmac.compare_digest(expected, value):
            return
    raise no_match(h.provider, secrets)


def verify_slack(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """``X-Slack-Signature: v0=<hex>`` over ``f"v0:{ts}:{body}"``; time checked both ways."""
    display = "X-Slack-Signature"
    ts_display = "X-Slack-Request-Timestamp"
    value = h.require("x-slack-signature", display)
    timestamp = parse_timestamp(
        h.provider, h.require("x-slack-request-timestamp", ts_display), ts_display
    )
    if not value.startswith("v0="):
        raise malformed(h.provider, display, "does not start with 'v0='")
    _match_hex(
        h.provider, display, secrets, b"v0:%d:" % timestamp + body, _hex_candidate(value[3:])
    )
    check_window(h.provider, timestamp, now, tolerance, both_ways=True)


def standard_key(provider: str, secret: str, index: int) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional ``whsec_``.

    Raises:
        ValueError: the secret is not base64 (a configuration mistake, not a bad request).
    """
    text = secret.removeprefix("whsec_")
    try:
        # Dashboards show some secrets without their padding; restore it, then decode strictly.
        key = binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ValueError(
            f"secret #{index} for {provider!r} is not base64 after its 'whsec_' prefix; "
            "copy it again from the provider's dashboard"
        )
    return key


def standard_family(h: HeaderView) -> str | None:
    """``webhook`` or ``svix``: which header names carry this request's signature.

    The id and timestamp are read from the same family, never mixed.
    """
    if h.get("webhook-signature", "webhook-signature") is not None:
        return "webhook"
    if h.get("svix-signature", "svix-signature") is not None:
        return "svix"
    return None


def verify_standard(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """Standard Webhooks (and Svix): ``v1,<base64>`` entries over ``f"{id}.{ts}.{body}"``."""
    family = standard_family(h)
    if family is None:
        raise reject(
            h.provider,
            "missing_header",
            "no webhook-signature (or svix-signature) header",
            header="webhook-signature",
        )
    display = f"{family}-signature"
    value = h.require(display, display)
    msg_id = h.require(f"{family}-id", f"{family}-id")
    ts_display = f"{family}-timestamp"
    timestamp = parse_timestamp(h.provider, h.require(ts_display, ts_display), ts_display)
    signatures: list[str] = []
    for token in value.split(" ")[:MAX_SIGNATURES]:
        version, _, text = token.partition(",")
        # Other versions (v1a is Ed25519) are not ours to check; malformed tokens are skipped.
        if version == "v1" and is_base64(text, 32):
            signatures.append(text)
    if not signatures:
        raise malformed(h.provider, display, "has no well-formed v1 signature")
    keys = [standard_key(h.provider, secret, i) for i, secret in enumerate(secrets, 1)]
    message = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    for key in keys:
        expected = binascii.b2a_base64(hmac.digest(key, message, "sha256"), newline=False).decode()
        for candidate in signatures:
            if hmac.compare_digest(expected, candidate):
                check_window(h.provider, timestamp, now, tolerance, both_ways=True)
                return
    raise no_match(h.provider, secrets)


def _url_variants(url: str) -> list[str]:
    """*url*, and the same URL with its port removed or the default port added.

    Twilio's own validator accepts both, as its signing of ports is inconsistent.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [url]
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    host = netloc.rpartition("@")[2]
    colon = host.rfind(":")
    if colon != -1 and host[colon + 1 :].isdigit() and "]" not in host[colon:]:
        without = netloc[: len(netloc) - len(host) + colon]
        return [url, f"{scheme}://{without}{tail}"]
    default = {"https": "443", "http": "80"}.get(scheme.lower())
    if default is None:
        return [url]
    return [url, f"{scheme}://{netloc}:{default}{tail}"]


def verify_twilio(
    h: HeaderView,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
    url: str | None,
) -> None:
    """``X-Twilio-Signature: <base64 HMAC-SHA1(token, url + sorted params)>``.

    A form body's parameters are signed as ``name + value``, sorted by name and
    then value. A URL with a ``bodySHA256`` query parameter is signed alone, and
    that parameter must be the body's SHA-256. Any other non-empty body is not
    signed at all, so it is refused (``unsigned_body``).
    """
    if url is None:
        raise ValueError("twilio signs the request URL: pass url=, the full URL with its query")
    display = "X-Twilio-Signature"
    value = h.require("x-twilio-signature", display)
    if not is_base64(value, 20):
        raise malformed(h.provider, display, "is not the canonical base64 of 20 bytes")
    query = url.partition("#")[0].partition("?")[2]
    body_hashes = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "bodySHA256"]
    signed_params = ""
    if not body_hashes and body:
        media_type = (h.get("content-type", "Content-Type") or "").partition(";")[0]
        if media_type.strip().lower() != _FORM:
            raise reject(
                h.provider,
                "unsigned_body",
                "the body is not form-encoded and the URL has no bodySHA256 parameter, "
                "so Twilio's signature does not cover it",
            )
        try:
            params = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise reject(h.provider, "malformed_body", "the form body is not UTF-8") from None
        signed_params = "".join(name + text for name, text in sorted(params))
    messages = [(u + signed_params).encode("utf-8", "surrogatepass") for u in _url_variants(url)]
    if not any(
        hmac.compare_digest(
            binascii.b2a_base64(hmac.digest(secret.encode(), m, "sha1"), newline=False).decode(),
            value,
        )
        for secret in secrets
        for m in messages
    ):
        raise no_match(h.provider, secrets)
    if body_hashes:
        given = body_hashes[0]
        if (
            len(body_hashes) != 1
            or not given.isascii()
            or not hmac.compare_digest(hashlib.sha256(body).hexdigest(), given)
        ):
            raise reject(
                h.provider,
                "body_hash_mismatch",
                "the body's SHA-256 is not the URL's bodySHA256 (signed); "
                "the body was changed after Twilio sent it",
            )


_FIELDS = frozenset({"body", "timestamp", "id"})


@dataclass(frozen=True, kw_only=True)
class HmacScheme:
    """A provider that signs with an HMAC in one header: pass it to `verify` as *provider*.

    Attributes:
        header: the signature header, such as ``X-Signature``.
        algorithm: ``sha1``, ``sha256`` or ``sha512``.
        encoding: ``hex`` (lowercase) or ``base64`` (canonical).
        prefix: text before the signature in the header, such as ``sha256=``.
        timestamp_header: the header carrying whole Unix seconds, when the provider
            signs a time; then *template* must contain ``{timestamp}``.
        id_header: the header carrying the delivery id (for `delivery_id`; the
            template may sign it as ``{id}``).
        template: the signed content; ``{body}`` exactly once, with optional
            ``{timestamp}`` and ``{id}``. ``"{timestamp}.{body}"`` signs
            ``b"1700000000." + body``.
        tolerance: seconds of clock skew allowed either way; None uses the
            *tolerance* given to `verify`.
        name: the provider name carried by `InvalidSignature`.

    Raises:
        ValueError: an unknown algorithm, encoding or template field, or a
            timestamp header the template does not sign.
    """

    header: str
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    id_header: str | None = None
    template: str = "{body}"
    tolerance: float | None = None
    name: str = "hmac"
    _parts: tuple[tuple[str, str | None], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("HmacScheme needs the signature header's name")
        if self.algorithm not in _DIGEST_SIZES:
            raise ValueError(f"algorithm must be sha1, sha256 or sha512, not {self.algorithm!r}")
        if self.encoding not in ("hex", "base64"):
            raise ValueError(f"encoding must be 'hex' or 'base64', not {self.encoding!r}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError("tolerance must be None or at least 0 seconds")
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in string.Formatter().parse(self.template):
            if name is not None and (name not in _FIELDS or spec or conversion):
                raise ValueError(
                    f"template field {{{name}}} is not one of {{body}}, {{timestamp}}, {{id}}"
                )
            parts.append((literal, name))
        names = [name for _, name in parts if name is not None]
        if names.count("body") != 1:
            raise ValueError("the template must contain {body} exactly once")
        if ("timestamp" in names) != (self.timestamp_header is not None):
            raise ValueError(
                "set timestamp_header exactly when the template signs {timestamp}: "
                "an unsigned timestamp could be changed by anyone"
            )
        if "id" in names and self.id_header is None:
            raise ValueError("the template signs {id}: set id_header")
        object.__setattr__(self, "_parts", tuple(parts))

    @property
    def signs_identity(self) -> bool:
        """Whether the signature covers a timestamp or a delivery id."""
        return any(name in ("timestamp", "id") for _, name in self._parts)

    def _check(
        self,
        h: HeaderView,
        body: bytes,
        secrets: list[str],
        now: float,
        tolerance: float,
        url: str | None = None,
    ) -> None:
        """Check one request against this scheme (called by `seawall.webhooks.verify`)."""
        display = self.header
        value = h.require(self.header.lower(), display)
        if not value.startswith(self.prefix):
            raise malformed(h.provider, display, f"does not start with {self.prefix!r}")
        presented = value[len(self.prefix) :]
        size = _DIGEST_SIZES[self.algorithm]
        well_formed = (
            is_hex(presented, size) if self.encoding == "hex" else is_base64(presented, size)
        )
        if not well_formed:
            raise malformed(
                h.provider, display, f"is not a {self.encoding} {self.algorithm} signature"
            )
        timestamp: int | None = None
        fields: dict[str, bytes] = {"body": body}
        if self.timestamp_header is not None:
            ts_display = self.timestamp_header
            timestamp = parse_timestamp(
                h.provider, h.require(ts_display.lower(), ts_display), ts_display
            )
            fields["timestamp"] = b"%d" % timestamp
        if self.id_header is not None and any(name == "id" for _, name in self._parts):
            id_value = h.require(self.id_header.lower(), self.id_header)
            fields["id"] = id_value.encode("utf-8", "surrogatepass")
        message = b"".join(
            literal.encode() + (fields[name] if name is not None else b"")
            for literal, name in self._parts
        )
        for secret in secrets:
            digest = hmac.digest(secret.encode(), message, self.algorithm)
            expected = (
                digest.hex()
                if self.encoding == "hex"
                else binascii.b2a_base64(digest, newline=False).decode()
            )
            if hmac.compare_digest(expected, presented):
                break
        else:
            raise no_match(h.provider, secrets)
        if timestamp is not None:
            allowed = self.tolerance if self.tolerance is not None else tolerance
            check_window(h.provider, timestamp, now, allowed, both_ways=True)
