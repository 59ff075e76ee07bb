"""`looks_like_card_number`: a pure check, so no server and no payment adapter here."""

from __future__ import annotations

import pytest

from seawall.integrations import CardNumberRefused, looks_like_card_number
from seawall.integrations._cards import luhn_valid, refuse_card_numbers


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "4000 0566 5566 5556",
        "378282246310005",
        "3782-822463-10005",
        "5555-5555-5555-4444",
        "6011 1111 1111 1117",
        "card: 4242 4242 4242 4242, exp 12/34",
        "4242424242424242 123",
        "pay with 4242 - 4242 - 4242 - 4242 please",
        "4222222222222",
    ],
)
def test_test_card_numbers_are_recognised(text: str) -> None:
    assert looks_like_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",
        "4242 4242 4242 4241",
        "ORD-2024-000123",
        "order 20240115-000043",
        "invoice INV-000123456",
        "12345678901234567890123",
        "tok_visa",
        "call +1 415 555 0100",
        "",
        "2024-01-15",
        "\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662",
    ],
)
def test_other_numbers_pass(text: str) -> None:
    assert not looks_like_card_number(text)


def test_luhn_accepts_valid_and_refuses_altered_numbers() -> None:
    valid = "79927398713"

    altered = "79927398714"

    assert luhn_valid(valid)
    assert not luhn_valid(altered)


def test_refusal_names_the_field_but_never_the_number() -> None:
    fields = {"description": "tok_visa", "metadata value of 'note'": "4000 0566 5566 5556"}

    with pytest.raises(CardNumberRefused) as caught:
        refuse_card_numbers(fields)

    assert caught.value.field == "metadata value of 'note'"
    message = str(caught.value)
    assert "5556" not in message
    assert "4000" not in message
    assert isinstance(caught.value, ValueError)
