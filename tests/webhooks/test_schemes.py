"""Each provider's signature, checked as its documentation specifies, with published vectors."""

from __future__ import annotations

import base64
import math

import pytest

from seawall.errors import InvalidSignature
from seawall.webhooks import HmacScheme, verify
from tests.webhooks.signing import (
    BODY,
    FORM,
    NOW,
    SECRET,
    STANDARD_SECRET,
    b64_hmac,
    github_headers,
    hex_hmac,
    shopify_headers,
    slack_headers,
    standard_headers,
    stripe_headers,
    twilio_json_url,
    twilio_signature,
    with_trailing_bits,
)


def reason_of(
    provider: str | HmacScheme, headers: dict[str, str], body: bytes, **kw: object
) -> str:
    secrets = kw.pop("secrets", [SECRET])
    with pytest.raises(InvalidSignature) as caught:
        verify(provider, headers, body, secrets, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    return caught.value.reason


# --- GitHub ---------------------------------------------------------------------------


def test_github_documented_test_vector_passes() -> None:
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        )
    }

    verify("github", headers, b"Hello, World!", ["It's a Secret to Everybody"])


def test_github_tampered_body_is_a_bad_signature() -> None:
    headers = github_headers(BODY)

    reason = reason_of("github", headers, BODY + b" ")

    assert reason == "bad_signature"


@pytest.mark.parametrize(
    "value",
    ["sha1=" + "a" * 40, "sha256=" + "A" * 64, "sha256=" + "a" * 63, "sha256=", "a" * 64],
)
def test_github_signature_not_in_its_format_is_malformed(value: str) -> None:
    headers = {"X-Hub-Signature-256": value}

    reason = reason_of("github", headers, BODY)

    assert reason == "malformed_header"


def test_github_legacy_sha1_header_alone_is_not_enough() -> None:
    headers = {"X-Hub-Signature": "sha1=" + hex_hmac(SECRET, BODY, "sha1")}

    reason = reason_of("github", headers, BODY)

    assert reason == "missing_header"


# --- Stripe ---------------------------------------------------------------------------


def test_stripe_signature_passes() -> None:
    verify("stripe", stripe_headers(), BODY, [SECRET], now=NOW)


def test_stripe_key_is_the_whole_secret_text_not_its_base64() -> None:
    decoded_key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    headers = {"Stripe-Signature": f"t={NOW},v1={hex_hmac(decoded_key, b'%d.' % NOW + BODY)}"}

    reason = reason_of("stripe", headers, BODY, secrets=[STANDARD_SECRET])

    assert reason == "bad_signature"


def test_stripe_any_v1_matching_any_secret_passes() -> None:
    good = hex_hmac(SECRET, b"%d." % NOW + BODY)
    headers = {"Stripe-Signature": f"t={NOW},v1={'0' * 64},v0={'1' * 64},v1={good}"}

    verify("stripe", headers, BODY, ["whsec_retired", SECRET], now=NOW)


def test_stripe_future_timestamp_is_accepted_as_stripe_does() -> None:
    headers = stripe_headers(timestamp=NOW + 3600)

    verify("stripe", headers, BODY, [SECRET], now=NOW)


def test_stripe_old_timestamp_is_out_of_tolerance() -> None:
    headers = stripe_headers(timestamp=NOW - 301)

    reason = reason_of("stripe", headers, BODY)

    assert reason == "timestamp_out_of_tolerance"


def test_stripe_tolerance_is_the_callers() -> None:
    headers = stripe_headers(timestamp=NOW - 3000)

    verify("stripe", headers, BODY, [SECRET], now=NOW, tolerance=3600)
    verify("stripe", headers, BODY, [SECRET], now=NOW, tolerance=math.inf)


def test_stripe_zero_tolerance_means_no_delay_not_no_check() -> None:
    headers = stripe_headers(timestamp=NOW - 1)

    reason = reason_of("stripe", headers, BODY, tolerance=0)

    assert reason == "timestamp_out_of_tolerance"


def test_stripe_expired_forgery_is_a_bad_signature_not_a_stale_one() -> None:
    headers = stripe_headers(timestamp=NOW - 3600, secret="whsec_attacker")

    reason = reason_of("stripe", headers, BODY)

    assert reason == "bad_signature"


@pytest.mark.parametrize(
    "value",
    [
        f"v1={'a' * 64}",  # no timestamp
        f"t={NOW},t={NOW},v1={'a' * 64}",  # two timestamps
        f"t={NOW}.5,v1={'a' * 64}",
        f"t=0{NOW},v1={'a' * 64}",
        f"t= {NOW},v1={'a' * 64}",
        f"t={NOW},v0={'a' * 64}",  # no v1
        f"t={NOW},v1={'A' * 64}",  # only an uppercase v1
        f"t={NOW},v1=",
    ],
)
def test_stripe_header_not_in_its_format_is_malformed(value: str) -> None:
    reason = reason_of("stripe", {"Stripe-Signature": value}, BODY)

    assert reason == "malformed_header"


def test_stripe_malformed_token_before_a_valid_one_does_not_hide_it() -> None:
    good = hex_hmac(SECRET, b"%d." % NOW + BODY)
    headers = {"Stripe-Signature": f"t={NOW},v1,v1=xyz,garbage,v1={'Z' * 64},v1={good}"}

    verify("stripe", headers, BODY, [SECRET], now=NOW)


def test_stripe_body_is_signed_as_bytes_even_when_not_utf8() -> None:
    body = b"\xff\xfe not utf-8"

    verify("stripe", stripe_headers(body), body, [SECRET], now=NOW)


# --- Shopify --------------------------------------------------------------------------


def test_shopify_signature_passes() -> None:
    verify("shopify", shopify_headers(), BODY, [SECRET])


def test_shopify_tampered_body_is_a_bad_signature() -> None:
    reason = reason_of("shopify", shopify_headers(BODY), b"{}")

    assert reason == "bad_signature"


def test_shopify_non_canonical_base64_of_the_right_mac_is_refused() -> None:
    canonical = b64_hmac(SECRET, BODY)
    # The same 32 bytes, spelled with non-zero trailing bits: lenient decoders accept it.
    tweaked = with_trailing_bits(canonical)
    assert base64.b64decode(tweaked) == base64.b64decode(canonical)

    reasons = [
        reason_of("shopify", {"X-Shopify-Hmac-Sha256": value}, BODY)
        for value in (
            tweaked,
            canonical.rstrip("="),
            canonical + "==",
            canonical[:20] + "*" + canonical[21:],
        )
    ]

    assert reasons == ["malformed_header"] * 4


# --- Slack ----------------------------------------------------------------------------

SLACK_DOCS_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)


def test_slack_documented_example_passes() -> None:
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": (
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        ),
    }

    verify(
        "slack",
        headers,
        SLACK_DOCS_BODY,
        ["8f742231b10e8888abcd99yyyzzz85a5"],
        now=1531420618 + 10,
    )


def test_slack_future_timestamp_is_refused() -> None:
    headers = slack_headers(timestamp=NOW + 301)

    reason = reason_of("slack", headers, BODY)

    assert reason == "timestamp_out_of_tolerance"


def test_slack_old_timestamp_is_refused() -> None:
    reason = reason_of("slack", slack_headers(timestamp=NOW - 301), BODY)

    assert reason == "timestamp_out_of_tolerance"


def test_slack_timestamp_is_part_of_what_is_signed() -> None:
    headers = slack_headers(timestamp=NOW) | {"X-Slack-Request-Timestamp": str(NOW + 1)}

    reason = reason_of("slack", headers, BODY)

    assert reason == "bad_signature"


def test_slack_fractional_timestamp_is_malformed() -> None:
    headers = slack_headers() | {"X-Slack-Request-Timestamp": f"{NOW}.0"}

    reason = reason_of("slack", headers, BODY)

    assert reason == "malformed_header"


# --- Standard Webhooks -----------------------------------------------------------------

STANDARD_VECTOR = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
STANDARD_VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_VECTOR_BODY = b'{"test": 2432232314}'


def test_standard_webhooks_reference_vector_passes() -> None:
    verify(
        "standard", STANDARD_VECTOR, STANDARD_VECTOR_BODY, [STANDARD_VECTOR_SECRET], now=1614265330
    )


def test_standard_webhooks_secret_without_its_prefix_is_base64_too() -> None:
    verify(
        "standard",
        STANDARD_VECTOR,
        STANDARD_VECTOR_BODY,
        [STANDARD_VECTOR_SECRET.removeprefix("whsec_")],
        now=1614265330,
    )


def test_standard_webhooks_svix_header_names_pass() -> None:
    headers = {k.replace("webhook-", "svix-"): v for k, v in STANDARD_VECTOR.items()}

    verify("standard", headers, STANDARD_VECTOR_BODY, [STANDARD_VECTOR_SECRET], now=1614265330)


def test_standard_webhooks_never_mixes_header_families() -> None:
    headers = {
        "webhook-signature": STANDARD_VECTOR["webhook-signature"],
        "svix-id": STANDARD_VECTOR["webhook-id"],
        "svix-timestamp": STANDARD_VECTOR["webhook-timestamp"],
    }

    reason = reason_of(
        "standard", headers, STANDARD_VECTOR_BODY, secrets=[STANDARD_VECTOR_SECRET], now=1614265330
    )

    assert reason == "missing_header"


def test_standard_webhooks_other_versions_and_malformed_tokens_are_skipped() -> None:
    good = standard_headers()["webhook-signature"]
    headers = standard_headers() | {
        "webhook-signature": f"v1a,{'A' * 86}== garbage v1,short v2,abc {good}"
    }

    verify("standard", headers, BODY, [STANDARD_SECRET], now=NOW)


def test_standard_webhooks_only_v1a_signatures_are_malformed_for_us() -> None:
    headers = standard_headers() | {"webhook-signature": f"v1a,{'A' * 86}=="}

    reason = reason_of("standard", headers, BODY, secrets=[STANDARD_SECRET])

    assert reason == "malformed_header"


@pytest.mark.parametrize("skew", [-301, 301])
def test_standard_webhooks_checks_time_both_ways(skew: int) -> None:
    headers = standard_headers(timestamp=NOW + skew)

    reason = reason_of("standard", headers, BODY, secrets=[STANDARD_SECRET])

    assert reason == "timestamp_out_of_tolerance"


def test_standard_webhooks_message_id_is_signed() -> None:
    headers = standard_headers() | {"webhook-id": "msg_other"}

    reason = reason_of("standard", headers, BODY, secrets=[STANDARD_SECRET])

    assert reason == "bad_signature"


def test_standard_webhooks_secret_that_is_not_base64_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="not base64") as caught:
        verify("standard", standard_headers(), BODY, ["whsec_not*base64!"], now=NOW)

    assert "not*base64" not in str(caught.value)


# --- Twilio ---------------------------------------------------------------------------

TWILIO_DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_DOCS_FORM = (
    b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234"
    b"&From=%2B12349013030&To=%2B18005551212"
)


def test_twilio_documented_example_passes() -> None:
    headers = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "Content-Type": FORM}

    verify("twilio", headers, TWILIO_DOCS_FORM, ["12345"], url=TWILIO_DOCS_URL)


def test_twilio_parameters_are_signed_in_sorted_order_whatever_the_body_order() -> None:
    body = (
        b"To=%2B18005551212&From=%2B12349013030&Digits=1234"
        b"&Caller=%2B12349013030&CallSid=CA1234567890ABCDE"
    )
    headers = {
        "X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
        "Content-Type": f"{FORM}; charset=utf-8",
    }

    verify("twilio", headers, body, ["12345"], url=TWILIO_DOCS_URL)


def test_twilio_repeated_parameters_are_sorted_by_value() -> None:
    body = b"Media=b&Media=a&Body=&X=%E2%82%AC"
    url = "https://example.com/sms"
    signed = b64_hmac("token", (url + "Body" + "Mediaa" + "Mediab" + "X€").encode(), "sha1")
    headers = {"X-Twilio-Signature": signed, "Content-Type": FORM}

    verify("twilio", headers, body, ["token"], url=url)


def test_twilio_tampered_parameter_is_a_bad_signature() -> None:
    headers = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "Content-Type": FORM}

    reason = reason_of(
        "twilio",
        headers,
        TWILIO_DOCS_FORM.replace(b"1234&", b"9999&"),
        secrets=["12345"],
        url=TWILIO_DOCS_URL,
    )

    assert reason == "bad_signature"


@pytest.mark.parametrize(
    ("signed_url", "given_url"),
    [
        ("https://example.com:443/hook?a=1", "https://example.com/hook?a=1"),
        ("https://example.com/hook?a=1", "https://example.com:443/hook?a=1"),
        ("http://example.com/hook", "http://example.com:8080/hook"),
    ],
)
def test_twilio_url_with_or_without_its_port_passes_as_twilios_validator_does(
    signed_url: str, given_url: str
) -> None:
    headers = {
        "X-Twilio-Signature": twilio_signature("token", signed_url, b"A=1"),
        "Content-Type": FORM,
    }

    verify("twilio", headers, b"A=1", ["token"], url=given_url)


def test_twilio_json_body_passes_with_its_body_hash_in_the_url() -> None:
    body = b'{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}'
    url = twilio_json_url("https://example.com/myapp", body)
    headers = {
        "X-Twilio-Signature": twilio_signature("12345", url),
        "Content-Type": "application/json",
    }

    verify("twilio", headers, body, ["12345"], url=url)


def test_twilio_json_body_changed_after_signing_is_a_body_hash_mismatch() -> None:
    body = b'{"CallSid":"CA1234567890ABCDE"}'
    url = twilio_json_url("https://example.com/myapp", body)
    headers = {
        "X-Twilio-Signature": twilio_signature("12345", url),
        "Content-Type": "application/json",
    }

    reason = reason_of("twilio", headers, b'{"CallSid":"CA0000000000"}', secrets=["12345"], url=url)

    assert reason == "body_hash_mismatch"


def test_twilio_json_body_hash_given_twice_is_refused() -> None:
    body = b"{}"
    url = twilio_json_url("https://example.com/myapp", body) + "&bodySHA256=0"
    headers = {
        "X-Twilio-Signature": twilio_signature("12345", url),
        "Content-Type": "application/json",
    }

    reason = reason_of("twilio", headers, body, secrets=["12345"], url=url)

    assert reason == "body_hash_mismatch"


def test_twilio_body_that_is_neither_form_nor_hashed_is_unsigned() -> None:
    url = "https://example.com/myapp"
    headers = {
        "X-Twilio-Signature": twilio_signature("12345", url),
        "Content-Type": "application/json",
    }

    reason = reason_of("twilio", headers, b'{"a": 1}', secrets=["12345"], url=url)

    assert reason == "unsigned_body"


def test_twilio_get_request_signs_the_url_alone() -> None:
    url = "https://example.com/status?CallSid=CA1&CallStatus=completed"
    headers = {"X-Twilio-Signature": twilio_signature("12345", url)}

    verify("twilio", headers, b"", ["12345"], url=url)


def test_twilio_form_body_that_is_not_utf8_is_malformed() -> None:
    headers = {
        "X-Twilio-Signature": twilio_signature("12345", "https://e.com/"),
        "Content-Type": FORM,
    }

    reasons = [
        reason_of("twilio", headers, body, secrets=["12345"], url="https://e.com/")
        for body in (b"A=\xff", b"A=%FF")
    ]

    assert reasons == ["malformed_body", "malformed_body"]


def test_twilio_without_the_url_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="url="):
        verify("twilio", {"X-Twilio-Signature": "x"}, b"", ["12345"])


# --- HmacScheme -----------------------------------------------------------------------


def test_hmac_scheme_with_prefix_hex_passes() -> None:
    scheme = HmacScheme(header="X-Signature", prefix="sha256=")
    headers = {"x-signature": "sha256=" + hex_hmac(SECRET, BODY)}

    verify(scheme, headers, BODY, [SECRET])


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_hmac_scheme_base64_with_signed_timestamp_passes(algorithm: str) -> None:
    scheme = HmacScheme(
        header="X-Sig",
        algorithm=algorithm,  # type: ignore[arg-type]
        encoding="base64",
        timestamp_header="X-Timestamp",
        template="{timestamp}.{body}",
    )
    headers = {"X-Sig": b64_hmac(SECRET, b"%d." % NOW + BODY, algorithm), "X-Timestamp": str(NOW)}

    verify(scheme, headers, BODY, [SECRET], now=NOW)


def test_hmac_scheme_template_can_sign_the_delivery_id() -> None:
    scheme = HmacScheme(header="X-Sig", id_header="X-Id", template="{id}:{body}")
    headers = {"X-Sig": hex_hmac(SECRET, b"evt_1:" + BODY), "X-Id": "evt_1"}

    verify(scheme, headers, BODY, [SECRET])

    assert reason_of(scheme, headers | {"X-Id": "evt_2"}, BODY) == "bad_signature"
    assert reason_of(scheme, {"X-Sig": headers["X-Sig"]}, BODY) == "missing_header"


def test_hmac_scheme_own_tolerance_overrides_the_callers() -> None:
    scheme = HmacScheme(
        header="X-Sig", timestamp_header="X-Ts", template="{timestamp}{body}", tolerance=10
    )
    headers = {"X-Sig": hex_hmac(SECRET, b"%d" % (NOW - 11) + BODY), "X-Ts": str(NOW - 11)}

    reason = reason_of(scheme, headers, BODY, tolerance=3600)

    assert reason == "timestamp_out_of_tolerance"


def test_hmac_scheme_names_its_provider_in_errors() -> None:
    scheme = HmacScheme(header="X-Sig", name="acme")

    with pytest.raises(InvalidSignature) as caught:
        verify(scheme, {}, BODY, [SECRET])

    assert caught.value.provider == "acme"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": ""},
        {"header": "X", "algorithm": "md5"},
        {"header": "X", "encoding": "base32"},
        {"header": "X", "template": "{timestamp}.{body}"},  # timestamp not read from a header
        {"header": "X", "timestamp_header": "X-Ts"},  # timestamp read but not signed
        {"header": "X", "template": "{id}.{body}"},
        {"header": "X", "template": "{body}{body}"},
        {"header": "X", "template": "{timestamp}"},
        {"header": "X", "template": "{other}.{body}"},
        {"header": "X", "template": "{body!r}"},
        {"header": "X", "template": "{body"},
        {"header": "X", "tolerance": -1},
    ],
)
def test_hmac_scheme_refuses_a_configuration_that_cannot_be_checked(
    kwargs: dict[str, object],
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        HmacScheme(**kwargs)  # type: ignore[arg-type]


def test_hmac_scheme_template_literal_braces_are_escaped() -> None:
    scheme = HmacScheme(header="X-Sig", template="{{v1}}:{body}")

    verify(scheme, {"X-Sig": hex_hmac(SECRET, b"{v1}:" + BODY)}, BODY, [SECRET])
