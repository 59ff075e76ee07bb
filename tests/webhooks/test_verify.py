"""The public API: `verify`, `delivery_id`, `signs_identity`, and what `InvalidSignature` tells."""

from __future__ import annotations

import hmac
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

import seawall.webhooks
from seawall.errors import InvalidSignature, SeawallError
from seawall.webhooks import (
    MAX_SIGNATURES,
    PROVIDERS,
    REASONS,
    HmacScheme,
    delivery_id,
    signs_identity,
    verify,
)
from tests.webhooks.signing import (
    BODY,
    FORM,
    NOW,
    OTHER_SECRET,
    OTHER_STANDARD_SECRET,
    SECRET,
    STANDARD_SECRET,
    github_headers,
    hex_hmac,
    shopify_headers,
    slack_headers,
    standard_headers,
    stripe_headers,
    twilio_signature,
)

TWILIO_URL = "https://example.com/twilio?x=1"
TWILIO_FORM = b"MessageSid=SM1&Body=hi"


def signed(
    provider: str, secret: str | None = None
) -> tuple[dict[str, str], bytes, dict[str, Any]]:
    """Headers, body and extra keyword arguments of a valid request from *provider*."""
    if provider == "standard":
        return standard_headers(secret=secret or STANDARD_SECRET), BODY, {}
    if provider == "twilio":
        headers = {
            "X-Twilio-Signature": twilio_signature(secret or SECRET, TWILIO_URL, TWILIO_FORM),
            "Content-Type": FORM,
        }
        return headers, TWILIO_FORM, {"url": TWILIO_URL}
    sign: dict[str, Callable[..., dict[str, str]]] = {
        "github": github_headers,
        "shopify": shopify_headers,
        "slack": slack_headers,
        "stripe": stripe_headers,
    }
    return sign[provider](BODY, secret or SECRET), BODY, {}


def secret_for(provider: str) -> str:
    return STANDARD_SECRET if provider == "standard" else SECRET


def rejection(call: Callable[[], None]) -> InvalidSignature:
    with pytest.raises(InvalidSignature) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_request_passes_for_every_provider(provider: str) -> None:
    headers, body, kw = signed(provider)

    verify(provider, headers, body, [secret_for(provider)], now=NOW, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rotation_passes_when_the_second_secret_matches(provider: str) -> None:
    new = OTHER_STANDARD_SECRET if provider == "standard" else OTHER_SECRET
    headers, body, kw = signed(provider, secret=new)

    verify(provider, headers, body, [secret_for(provider), new], now=NOW, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase, str.title])
def test_header_names_match_in_any_case_in_a_plain_dict(
    provider: str, case: Callable[[str], str]
) -> None:
    headers, body, kw = signed(provider)
    recased = {case(name): value for name, value in headers.items()}

    verify(provider, recased, body, [secret_for(provider)], now=NOW, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_starlette_headers_are_read(provider: str) -> None:
    headers, body, kw = signed(provider)

    verify(provider, Headers(headers=headers), body, [secret_for(provider)], now=NOW, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_secret_str_is_accepted(provider: str) -> None:
    headers, body, kw = signed(provider)

    verify(provider, headers, body, [SecretStr(secret_for(provider))], now=NOW, **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_wrong_secret_is_a_bad_signature(provider: str) -> None:
    headers, body, kw = signed(provider)
    wrong = OTHER_STANDARD_SECRET if provider == "standard" else OTHER_SECRET

    error = rejection(lambda: verify(provider, headers, body, [wrong], now=NOW, **kw))

    assert error.reason == "bad_signature"
    assert error.provider == provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_headers_at_all_is_a_missing_header(provider: str) -> None:
    _, body, kw = signed(provider)

    error = rejection(lambda: verify(provider, {}, body, [secret_for(provider)], now=NOW, **kw))

    assert error.reason == "missing_header"
    assert error.header is not None


# Each reason code, produced by one request (REASONS is checked against this table).
REASON_CASES: dict[str, Callable[[], None]] = {
    "bad_signature": lambda: verify("github", github_headers(BODY), b"x", [SECRET]),
    "body_hash_mismatch": lambda: verify(
        "twilio",
        {"X-Twilio-Signature": twilio_signature(SECRET, "https://e.com/?bodySHA256=00")},
        b"{}",
        [SECRET],
        url="https://e.com/?bodySHA256=00",
    ),
    "header_too_large": lambda: verify(
        "stripe", {"Stripe-Signature": "t=1," + "v1=" * 3000}, BODY, [SECRET]
    ),
    "malformed_body": lambda: verify(
        "twilio",
        {"X-Twilio-Signature": twilio_signature(SECRET, "https://e.com/"), "Content-Type": FORM},
        b"a=\xff",
        [SECRET],
        url="https://e.com/",
    ),
    "malformed_header": lambda: verify("github", {"X-Hub-Signature-256": "md5=1"}, BODY, [SECRET]),
    "missing_header": lambda: verify("shopify", {}, BODY, [SECRET]),
    "no_secret": lambda: verify("github", github_headers(), BODY, []),
    "timestamp_out_of_tolerance": lambda: verify(
        "slack", slack_headers(timestamp=NOW - 3600), BODY, [SECRET], now=NOW
    ),
    "unknown_provider": lambda: verify("gitlab", {}, BODY, [SECRET]),
    "unsigned_body": lambda: verify(
        "twilio",
        {"X-Twilio-Signature": twilio_signature(SECRET, "https://e.com/")},
        b"{}",
        [SECRET],
        url="https://e.com/",
    ),
}


def test_every_reason_code_has_a_case() -> None:
    assert sorted(REASON_CASES) == list(REASONS)


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_code_is_raised_for_its_condition(reason: str) -> None:
    error = rejection(REASON_CASES[reason])

    assert error.reason == reason
    assert isinstance(error, SeawallError)


def test_no_secret_is_an_empty_list_or_only_empty_secrets() -> None:
    reasons = [
        rejection(lambda s=s: verify("github", github_headers(), BODY, s)).reason  # type: ignore[misc]
        for s in ([], [""], ["", SecretStr("")])
    ]

    assert reasons == ["no_secret"] * 3


def test_an_empty_secret_beside_a_real_one_never_matches_an_empty_key() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + hex_hmac(b"", BODY)}

    error = rejection(lambda: verify("github", headers, BODY, ["", SECRET]))

    assert error.reason == "bad_signature"


@pytest.mark.parametrize("secrets", [SECRET, SECRET.encode(), SecretStr(SECRET)])
def test_a_single_secret_instead_of_a_list_is_a_type_error(secrets: Any) -> None:
    with pytest.raises(TypeError, match="list of secrets"):
        verify("github", github_headers(), BODY, secrets)


def test_a_secret_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str or a SecretStr"):
        verify("github", github_headers(), BODY, [SECRET.encode()])  # type: ignore[list-item]


def test_hmac_by_name_without_a_scheme_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="HmacScheme"):
        verify("hmac", {}, BODY, [SECRET])


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_a_negative_tolerance_is_a_value_error(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        verify("stripe", stripe_headers(), BODY, [SECRET], now=NOW, tolerance=tolerance)


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_a_now_that_is_not_finite_is_a_value_error(now: float) -> None:
    with pytest.raises(ValueError, match="now"):
        verify("stripe", stripe_headers(), BODY, [SECRET], now=now)


def test_the_unknown_provider_error_names_it_cut_short() -> None:
    error = rejection(lambda: verify("x" * 1000, {}, BODY, [SECRET]))

    assert error.provider == "x" * 64


def test_now_defaults_to_the_system_clock() -> None:
    headers = stripe_headers(timestamp=NOW)

    error = rejection(lambda: verify("stripe", headers, BODY, [SECRET]))

    assert error.reason == "timestamp_out_of_tolerance"


def test_the_message_never_holds_a_secret_or_the_expected_signature() -> None:
    expected = hex_hmac(SECRET, b"%d." % NOW + BODY)
    headers = {"Stripe-Signature": f"t={NOW},v1={'0' * 64}"}

    error = rejection(lambda: verify("stripe", headers, BODY, [SECRET], now=NOW))

    for text in (str(error), repr(error), error.detail):
        assert SECRET not in text
        assert expected not in text
        assert BODY.decode() not in text


def test_invalid_signature_survives_pickling_with_its_facts() -> None:
    error = rejection(lambda: verify("shopify", {}, BODY, [SECRET]))

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object

    assert (copy.provider, copy.reason, copy.header, str(copy)) == (
        error.provider,
        error.reason,
        error.header,
        str(error),
    )


# --- Bounded work ---------------------------------------------------------------------


def test_a_header_of_ten_thousand_signatures_is_refused_before_any_mac() -> None:
    many = ",".join(f"v1={'a' * 64}" for _ in range(10_000))
    headers = {"Stripe-Signature": f"t={NOW},{many}"}

    error = rejection(lambda: verify("stripe", headers, BODY, [SECRET] * 10, now=NOW))

    assert error.reason == "header_too_large"


def counting_hmac(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = hmac.digest

    def digest(key: bytes, msg: bytes, algorithm: str) -> bytes:
        calls.append(1)
        return real(key, msg, algorithm)

    monkeypatch.setattr(hmac, "digest", digest)
    return calls


def test_the_expected_mac_is_computed_once_per_secret_not_per_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = ",".join(f"v1={i:064x}" for i in range(100))
    headers = {"Stripe-Signature": f"t={NOW},{tokens}"}
    calls = counting_hmac(monkeypatch)

    error = rejection(lambda: verify("stripe", headers, BODY, [SECRET, OTHER_SECRET], now=NOW))

    assert error.reason == "bad_signature"
    assert len(calls) == 2


def test_only_the_first_signatures_are_considered() -> None:
    good = hex_hmac(SECRET, b"%d." % NOW + BODY)
    decoys = [f"v1={i:064x}" for i in range(MAX_SIGNATURES)]
    late = {"Stripe-Signature": ",".join([f"t={NOW}", *decoys, f"v1={good}"])}
    in_time = {"Stripe-Signature": ",".join([f"t={NOW}", *decoys[1:], f"v1={good}"])}

    error = rejection(lambda: verify("stripe", late, BODY, [SECRET], now=NOW))
    verify("stripe", in_time, BODY, [SECRET], now=NOW)

    assert error.reason == "bad_signature"


def test_standard_webhooks_with_many_tokens_does_bounded_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = standard_headers() | {"webhook-signature": " ".join(["v1,x"] * 1500)}
    calls = counting_hmac(monkeypatch)

    error = rejection(lambda: verify("standard", headers, BODY, [STANDARD_SECRET], now=NOW))

    assert error.reason == "malformed_header"
    assert calls == []


# --- delivery_id and signs_identity ---------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "headers", "body", "expected"),
    [
        ("github", {"x-github-delivery": "72d3162e-cc78"}, b"{}", "72d3162e-cc78"),
        ("stripe", {}, BODY, "evt_1NG8Du2eZvKYlo2CUI79vXWy"),
        ("stripe", {}, b'{"id": 5}', None),
        ("stripe", {}, b"[1, 2]", None),
        ("stripe", {}, b"not json", None),
        ("stripe", {}, b"{" * 100_000, None),
        ("stripe", {}, b'{"id": "evt_\xff"}', None),
        ("shopify", {"X-Shopify-Webhook-Id": "b54557e4"}, b"{}", "b54557e4"),
        ("slack", {}, b'{"type": "event_callback", "event_id": "Ev123"}', "Ev123"),
        ("slack", {}, b'{"type": "url_verification", "challenge": "x"}', None),
        ("slack", {}, b"payload=%7B%7D", None),
        ("standard", {"webhook-id": "msg_1", "svix-id": "msg_2"}, b"", "msg_1"),
        ("standard", {"svix-id": "msg_2"}, b"", "msg_2"),
        ("standard", {"svix-id": "msg_2", "svix-signature": "v1,x"}, b"", "msg_2"),
        ("twilio", {"I-Twilio-Idempotency-Token": "tok-1"}, b"MessageSid=SM1", "tok-1"),
        ("twilio", {}, b"MessageSid=SM1&MessageStatus=sent", None),
        ("github", {}, b"", None),
        ("github", {"X-GitHub-Delivery": "x" * 10_000}, b"", None),
    ],
)
def test_delivery_id_reads_the_providers_id(
    provider: str, headers: dict[str, str], body: bytes, expected: str | None
) -> None:
    assert delivery_id(provider, headers, body) == expected


def test_delivery_id_of_an_hmac_scheme_is_its_id_header() -> None:
    with_id = HmacScheme(header="X-Sig", id_header="X-Event-Id")
    without = HmacScheme(header="X-Sig")

    found = (
        delivery_id(with_id, {"x-event-id": "e1"}, b""),
        delivery_id(without, {"x-event-id": "e1"}, b""),
    )

    assert found == ("e1", None)


@pytest.mark.parametrize("provider", ["gitlab", "hmac"])
def test_delivery_id_and_signs_identity_of_an_unknown_provider_are_value_errors(
    provider: str,
) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        delivery_id(provider, {}, b"")
    with pytest.raises(ValueError, match="unknown provider"):
        signs_identity(provider)


def test_signs_identity_is_false_where_a_replay_needs_a_body_hash() -> None:
    table = {provider: signs_identity(provider) for provider in PROVIDERS}

    assert table == {
        "github": False,
        "shopify": False,
        "slack": True,
        "standard": True,
        "stripe": True,
        "twilio": False,
    }


def test_signs_identity_of_an_hmac_scheme_follows_its_template() -> None:
    assert not signs_identity(HmacScheme(header="X"))
    assert signs_identity(
        HmacScheme(header="X", timestamp_header="T", template="{timestamp}{body}")
    )
    assert signs_identity(HmacScheme(header="X", id_header="I", template="{id}{body}"))


# --- The package ----------------------------------------------------------------------


def test_importing_the_package_loads_no_framework_database_or_bus() -> None:
    code = (
        "import sys, seawall.webhooks; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'starlette', 'sqlalchemy', 'httpx', 'nats', 'redis', 'pydantic'}))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == "[]"


def test_every_name_in_all_resolves() -> None:
    missing = [name for name in seawall.webhooks.__all__ if not hasattr(seawall.webhooks, name)]

    assert missing == []


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = seawall.webhooks.NoSuchThing  # type: ignore[attr-defined]
