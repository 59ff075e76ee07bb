"""Card numbers must never leave: find anything that looks like one in outgoing text.

A payment adapter sends tokens (``tok_…``, ``pm_…``) made by the provider's
client-side SDK, never a card number (PAN): holding or sending one puts the
whole system in PCI DSS scope. `looks_like_card_number` is the check, and
`refuse_card_numbers` applies it to every text input of a request before the
request is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["CardNumberRefused", "looks_like_card_number", "refuse_card_numbers"]

_MIN_DIGITS: Final = 13
_MAX_DIGITS: Final = 19
# Groups of digits joined by one or two spaces or dashes ("4242 4242", "4242-4242",
# "4242 - 4242"). ASCII digits only: other scripts' digits are not how PANs get pasted.
_RUN: Final = re.compile(r"[0-9]+(?:[ \-]{1,3}[0-9]+)*")
_SEPARATORS: Final = re.compile(r"[ \-]+")


class CardNumberRefused(ValueError):  # noqa: N818 - leaves name the condition
    """An input of a payment request looks like a card number; nothing was sent.

    The message names the field, never the number.

    Attributes:
        field: which input held it (``description``, ``metadata['note']``, ...).
    """

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(
            f"the {field} looks like a card number, which must never be sent: "
            "send a token from the provider's client-side SDK (tok_..., pm_...) instead"
        )


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn (mod 10) check (pure)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def looks_like_card_number(text: str) -> bool:
    """Whether *text* holds something that looks like a payment card number (pure).

    A card number here is 13 to 19 digits, possibly split into groups by
    spaces or dashes, that passes the Luhn check. Groups are tried in every
    contiguous combination, so a number followed by other digits
    (``"4242424242424242 123"``, a number and its security code) is still
    found; a group is never split, so a long reference such as a 20-digit
    order number is not.

    About one in ten numbers of 13 to 19 digits passes the Luhn check by
    chance, so a long reference made only of digits (``20240115-000042``) can
    be refused too: a false alarm costs a clear error, a miss costs a leak.

    Args:
        text: any text (a description, a metadata value, a token).

    Returns:
        True when *text* holds such a number.
    """
    for run in _RUN.finditer(text):
        groups = _SEPARATORS.split(run.group())
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > _MAX_DIGITS:
                    break
                if len(digits) >= _MIN_DIGITS and luhn_valid(digits):
                    return True
    return False


def refuse_card_numbers(fields: Mapping[str, str | None]) -> None:
    """Raise if any of *fields* looks like a card number (pure).

    Args:
        fields: the request's text inputs by name (None values are skipped).

    Raises:
        CardNumberRefused: naming the first field that holds one.
    """
    for name, value in fields.items():
        # Anything but text is refused later, by a check that never shows the value.
        if isinstance(value, str) and looks_like_card_number(value):
            raise CardNumberRefused(name)
