"""Signed URLs of the local store: an HMAC over the key and the expiry, checked by the service."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from seawall.storage._base import InvalidSignedUrl, validate_key


def blob_signature(key: str, expires_at: int, secret: SecretStr) -> str:
    """Return the hex HMAC-SHA256 of ``key`` and ``expires_at`` (Unix seconds) under *secret*.

    The two are joined by a newline, which a valid key cannot hold, so no other
    (key, expiry) pair gives the same message.
    """
    message = f"{validate_key(key)}\n{int(expires_at)}".encode()
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def verify_blob_signature(
    key: str, expires_at: str | int, signature: str, secret: SecretStr, *, now: float
) -> None:
    """Check a signed URL's parts: pure, no I/O.

    Args:
        key: the blob key from the URL's path.
        expires_at: the ``expires`` query parameter (Unix seconds).
        signature: the ``signature`` query parameter.
        secret: the signing secret.
        now: the current Unix time.

    Raises:
        InvalidSignedUrl: the signature does not match (``reason="invalid"``) or the
            URL has expired (``reason="expired"``). The signature is checked first, so
            an expired URL tells nothing to someone who forged it.
    """
    try:
        when = int(expires_at)
        validate_key(key)
    except (TypeError, ValueError):
        raise InvalidSignedUrl("invalid") from None
    # Bytes: compare_digest refuses a str with non-ASCII characters (a TypeError).
    if len(signature) != 64 or not hmac.compare_digest(
        blob_signature(key, when, secret).encode(), signature.lower().encode("utf-8", "replace")
    ):
        raise InvalidSignedUrl("invalid", key=key)
    if now >= when:
        raise InvalidSignedUrl("expired", key=key)
