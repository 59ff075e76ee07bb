"""`webhook_headers` signs what `seawall.webhooks.verify` accepts (checked against providers)."""

from __future__ import annotations

import base64

import pytest

from seawall.testing import webhook_headers
from seawall.webhooks import InvalidSignature, verify

BODY = b'{"id": "evt_1", "type": "charge.succeeded"}'
PLAIN = "whsec_plain_secret_for_tests"
STANDARD = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    ("provider", "secret"),
    [
        ("github", PLAIN),
        ("stripe", PLAIN),
        ("shopify", PLAIN),
        ("slack", PLAIN),
        ("standard", STANDARD),
    ],
)
def test_signed_headers_verify_and_a_changed_body_does_not(provider: str, secret: str) -> None:
    headers = webhook_headers(provider, BODY, secret, timestamp=1_700_000_000)  # type: ignore[arg-type]

    verify(provider, headers, BODY, [secret], now=1_700_000_010)
    with pytest.raises(InvalidSignature):
        verify(provider, headers, BODY + b" ", [secret], now=1_700_000_010)


def test_delivery_ids_are_fresh_unless_given() -> None:
    first = webhook_headers("github", BODY, PLAIN, event="issues")
    second = webhook_headers("github", BODY, PLAIN, delivery_id="d-1")

    assert first["X-GitHub-Delivery"] != second["X-GitHub-Delivery"] == "d-1"
    assert first["X-GitHub-Event"] == "issues"


def test_unknown_providers_and_bad_standard_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        webhook_headers("twilio", BODY, PLAIN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whsec_"):
        webhook_headers("standard", BODY, "plain")
