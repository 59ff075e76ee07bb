"""Reading a webhook request: headers, signature encodings and signed timestamps.

Everything here is strict by design: one MAC has exactly one accepted spelling,
a timestamp is plain decimal seconds, and oversized headers are refused before
they are parsed.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping

from seawall.errors import InvalidSignature

# Larger signature headers are refused before they are parsed; a genuine one is
# under 1 KiB even with a few rotated secrets.
MAX_HEADER_BYTES = 8192
# Providers send one signature per active secret; more than this is never genuine.
MAX_SIGNATURES = 32
# Unix seconds with up to 15 digits; longer strings are never timestamps and
# would make int() slow.
_MAX_TIMESTAMP_DIGITS = 15

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")


def reject(
    provider: str, reason: str, detail: str, *, header: str | None = None
) -> InvalidSignature:
    """Build the error for a refused request (``raise reject(...)``)."""
    return InvalidSignature(provider=provider, reason=reason, detail=detail, header=header)


class HeaderView:
    """Case-insensitive, size-checked reads from any header mapping.

    The mapping's own ``get`` is tried first: Starlette's ``Headers`` and dicts
    with lowercase keys answer at once. A lowercased copy is built only when
    that misses, once per request.
    """

    __slots__ = ("_lowered", "_raw", "provider")

    def __init__(self, headers: Mapping[str, str], provider: str) -> None:
        self._raw = headers
        self._lowered: dict[str, object] | None = None
        self.provider = provider

    def get(self, name: str, display: str) -> str | None:
        """The value of header *name* (lowercase), or None when it is absent or empty."""
        value: object = self._raw.get(name)
        if value is None:
            if self._lowered is None:
                self._lowered = {k.lower(): v for k, v in self._raw.items() if isinstance(k, str)}
            value = self._lowered.get(name)
            if value is None:
                return None
        if not isinstance(value, str):
            raise reject(
                self.provider, "malformed_header", f"{display} is not text", header=display
            )
        if len(value) > MAX_HEADER_BYTES:
            raise reject(
                self.provider,
                "header_too_large",
                f"{display} is {len(value)} characters long, over the limit of {MAX_HEADER_BYTES}",
                header=display,
            )
        return value or None

    def require(self, name: str, display: str) -> str:
        """The value of header *name*, refusing the request when it is absent or empty."""
        value = self.get(name, display)
        if value is None:
            raise reject(self.provider, "missing_header", f"no {display} header", header=display)
        return value


def malformed(provider: str, display: str, what: str) -> InvalidSignature:
    """A ``malformed_header`` refusal: header *display* *what*."""
    return reject(provider, "malformed_header", f"{display} {what}", header=display)


def no_match(provider: str, secrets: list[str]) -> InvalidSignature:
    """A ``bad_signature`` refusal: well-formed signatures, none made with our secrets."""
    count = len(secrets)
    return reject(
        provider,
        "bad_signature",
        f"no signature matches the {count} configured secret{'s' if count != 1 else ''}; "
        "check the signing secret, and that the body is the raw bytes as received",
    )


def is_hex(text: str, size: int) -> bool:
    """Whether *text* is exactly *size* bytes in lowercase hex."""
    if size == 32:
        return _HEX_SHA256.fullmatch(text) is not None
    return len(text) == 2 * size and _HEX.fullmatch(text) is not None


def is_base64(text: str, size: int) -> bool:
    """Whether *text* is the canonical base64 of exactly *size* bytes.

    Canonical: standard alphabet, the padding it needs and no more, and zero
    trailing bits, so that one MAC has exactly one accepted spelling.
    """
    if len(text) != 4 * ((size + 2) // 3) or not text.isascii():
        return False
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return False
    return len(raw) == size and binascii.b2a_base64(raw, newline=False).decode() == text


def parse_timestamp(provider: str, text: str, display: str) -> int:
    """Whole Unix seconds in plain decimal; anything else (sign, fraction, exponent,
    spaces, leading zeros) is ``malformed_header``, so the signed text is the number."""
    if (
        not 0 < len(text) <= _MAX_TIMESTAMP_DIGITS
        or not text.isascii()
        or not text.isdigit()
        or (text[0] == "0" and len(text) > 1)
    ):
        raise malformed(provider, display, "is not a whole number of Unix seconds")
    return int(text)


def check_window(
    provider: str, timestamp: int, now: float, tolerance: float, *, both_ways: bool
) -> None:
    """Refuse a timestamp older than *tolerance*, or (``both_ways``) as far in the future."""
    age = now - timestamp
    if age > tolerance:
        raise reject(
            provider,
            "timestamp_out_of_tolerance",
            f"signed {age:.0f}s ago, over the tolerance of {tolerance:g}s; "
            "a replay, or a clock out of sync",
        )
    if both_ways and -age > tolerance:
        raise reject(
            provider,
            "timestamp_out_of_tolerance",
            f"signed {-age:.0f}s in the future, over the tolerance of {tolerance:g}s; "
            "check this server's clock",
        )
