"""API keys and scopes: the pure part."""

from __future__ import annotations

import pytest

from seawall.auth import (
    AuthenticationFailed,
    MissingScope,
    Principal,
    generate_api_key,
    hash_api_key,
    parse_api_key,
    scope_allows,
    secret_matches,
)


def test_a_generated_key_has_a_visible_id_and_a_long_secret() -> None:
    generated = generate_api_key()

    token = generated.token.get_secret_value()

    assert token.startswith(f"sw_{generated.key_id}_")
    assert len(token) == 3 + 12 + 1 + 43
    assert parse_api_key(token) == generated.key_id
    assert generated.secret_hash == hash_api_key(token)


def test_keys_never_repeat() -> None:
    tokens = {generate_api_key().token.get_secret_value() for _ in range(200)}

    assert len(tokens) == 200


def test_the_secret_never_shows_in_a_repr() -> None:
    generated = generate_api_key()

    text = repr(generated) + str(generated)

    assert generated.token.get_secret_value() not in text
    assert generated.secret_hash not in text


def test_only_the_exact_key_matches_its_hash() -> None:
    generated = generate_api_key()
    token = generated.token.get_secret_value()
    other = token[:-1] + ("A" if token[-1] != "A" else "B")

    assert secret_matches(token, generated.secret_hash)
    assert not secret_matches(other, generated.secret_hash)


@pytest.mark.parametrize(
    "token",
    ["", "sw_", "sw_abc_def", "sk_0123456789ab_" + "a" * 43, "sw_0123456789AB_" + "a" * 43],
)
def test_malformed_keys_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationFailed, match="malformed"):
        parse_api_key(token)


@pytest.mark.parametrize(
    ("granted", "needed", "allowed"),
    [
        ({"read"}, "read", True),
        ({"read"}, "operate", False),
        ({"operate"}, "read", True),
        ({"operate"}, "operate", True),
        (set(), "read", False),
    ],
)
def test_operate_implies_read(granted: set[str], needed: str, allowed: bool) -> None:
    assert scope_allows(granted, needed) is allowed  # type: ignore[arg-type]


def test_a_missing_scope_says_what_was_needed() -> None:
    principal = Principal(subject="key:1", scopes=frozenset({"read"}), method="api_key")

    with pytest.raises(MissingScope, match="'operate'") as caught:
        principal.require("operate")

    assert caught.value.granted == ("read",)
