"""Reading headers, signature encodings and timestamps: strict, case-insensitive, bounded."""

from __future__ import annotations

import base64

import pytest
from starlette.datastructures import Headers

from seawall.errors import InvalidSignature
from seawall.webhooks import MAX_HEADER_BYTES
from seawall.webhooks._parsing import (
    HeaderView,
    check_window,
    is_base64,
    is_hex,
    parse_timestamp,
)
from tests.webhooks.signing import with_trailing_bits

DIGEST = bytes(range(32))
CANONICAL = base64.b64encode(DIGEST).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"Stripe-Signature": "t=1"},
        {"stripe-signature": "t=1"},
        {"STRIPE-SIGNATURE": "t=1"},
        {"sTrIpE-sIgNaTuRe": "t=1"},
        Headers(headers={"Stripe-Signature": "t=1"}),
    ],
    ids=["canonical", "lower", "upper", "mixed", "starlette"],
)
def test_header_names_match_in_any_case(headers: dict[str, str] | Headers) -> None:
    view = HeaderView(headers, "stripe")

    value = view.get("stripe-signature", "Stripe-Signature")

    assert value == "t=1"


def test_an_absent_or_empty_header_reads_as_none() -> None:
    view = HeaderView({"X-Empty": ""}, "github")

    found = (view.get("x-empty", "X-Empty"), view.get("x-absent", "X-Absent"))

    assert found == (None, None)


def test_a_header_over_the_limit_is_refused_before_it_is_parsed() -> None:
    view = HeaderView({"X-Big": "a" * (MAX_HEADER_BYTES + 1)}, "github")

    with pytest.raises(InvalidSignature) as caught:
        view.get("x-big", "X-Big")

    assert caught.value.reason == "header_too_large"
    assert caught.value.header == "X-Big"


def test_a_header_at_the_limit_is_read() -> None:
    view = HeaderView({"X-Big": "a" * MAX_HEADER_BYTES}, "github")

    value = view.get("x-big", "X-Big")

    assert value is not None


def test_a_header_value_that_is_not_text_is_malformed() -> None:
    view = HeaderView({"X-Bytes": b"abc"}, "github")  # type: ignore[dict-item]

    with pytest.raises(InvalidSignature) as caught:
        view.get("x-bytes", "X-Bytes")

    assert caught.value.reason == "malformed_header"


def test_canonical_base64_is_accepted() -> None:
    assert is_base64(CANONICAL, 32)


@pytest.mark.parametrize(
    "text",
    [
        CANONICAL.rstrip("="),  # padding missing
        CANONICAL + "=",  # padding in excess
        CANONICAL[:10] + "!" + CANONICAL[11:],  # outside the alphabet
        CANONICAL[:10] + "-" + CANONICAL[11:],  # the URL-safe alphabet
        with_trailing_bits(CANONICAL),
        " " + CANONICAL[1:],
        CANONICAL[:-1] + "\n",
        base64.b64encode(DIGEST[:31]).decode(),  # the wrong length
        "é" * 44,
    ],
    ids=[
        "unpadded",
        "over-padded",
        "bad-char",
        "urlsafe",
        "trailing-bits",
        "space",
        "newline",
        "short",
        "non-ascii",
    ],
)
def test_non_canonical_base64_is_refused(text: str) -> None:
    assert not is_base64(text, 32)


def test_the_trailing_bits_case_decodes_to_the_same_bytes_in_lenient_decoders() -> None:
    lenient = base64.b64decode(with_trailing_bits(CANONICAL))

    assert lenient == DIGEST


@pytest.mark.parametrize(
    ("text", "ok"),
    [("ab" * 32, True), ("AB" * 32, False), ("ab" * 31, False), ("g" * 64, False)],
)
def test_hex_signatures_are_lowercase_of_the_exact_length(text: str, ok: bool) -> None:
    assert is_hex(text, 32) is ok


@pytest.mark.parametrize("text", ["0", "1700000000", "999999999999999"])
def test_plain_decimal_seconds_are_timestamps(text: str) -> None:
    assert parse_timestamp("slack", text, "X-Slack-Request-Timestamp") == int(text)


@pytest.mark.parametrize(
    "text",
    [
        "1700000000.5",
        "1.7e9",
        "-1700000000",
        "+1700000000",
        " 1700000000",
        "1700000000 ",
        "01700000000",
        "1_700_000_000",
        "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: int() takes them
        "abc",
        "1" * 16,
        "9" * 5000,  # int() would refuse it (or take its time) past 4300 digits
        "nan",
        "inf",
    ],
)
def test_anything_but_plain_decimal_seconds_is_malformed(text: str) -> None:
    with pytest.raises(InvalidSignature) as caught:
        parse_timestamp("slack", text, "X-Slack-Request-Timestamp")

    assert caught.value.reason == "malformed_header"


def test_a_timestamp_at_the_edge_of_the_window_passes() -> None:
    check_window("slack", 1000, 1300.0, 300, both_ways=True)
    check_window("slack", 1600, 1300.0, 300, both_ways=True)


@pytest.mark.parametrize(("timestamp", "both_ways"), [(999, True), (1601, True), (999, False)])
def test_a_timestamp_past_the_window_is_refused(timestamp: int, both_ways: bool) -> None:
    with pytest.raises(InvalidSignature) as caught:
        check_window("slack", timestamp, 1300.0, 300, both_ways=both_ways)

    assert caught.value.reason == "timestamp_out_of_tolerance"


def test_a_future_timestamp_passes_when_only_age_is_checked() -> None:
    check_window("stripe", 10_000, 1300.0, 300, both_ways=False)
