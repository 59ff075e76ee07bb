"""`JwtValidator`: tokens of a real loopback identity provider, checked against its JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from joserfc.jwk import KeySet, RSAKey

from seawall.auth import AuthenticationFailed, JwtValidator, scopes_of
from seawall.testing import FakeClock, FakeResponse, FakeServer
from tests.auth.identity import AUDIENCE, ISSUER, FakeIdentityProvider


@pytest.fixture
def idp() -> Iterator[FakeIdentityProvider]:
    with FakeIdentityProvider() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def validator(idp: FakeIdentityProvider, clock: FakeClock) -> AsyncIterator[JwtValidator]:
    checker = JwtValidator(
        idp.jwks_url, issuer=ISSUER, audience=AUDIENCE, clock=clock, min_refresh=30.0
    )
    yield checker
    await checker.aclose()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unsigned(token: str, alg: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    _, payload, _ = token.split(".")
    return f"{header.decode().rstrip('=')}.{payload}."


async def test_a_valid_token_gives_its_subject_and_scopes(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    token = idp.token(scope="read operate other", now=clock.wall())

    principal = await validator.verify(token)

    assert principal.subject == "alice@example.test"
    assert principal.scopes == frozenset({"read", "operate"})
    assert principal.method == "jwt"
    assert principal.allows("operate")


async def test_the_key_set_is_fetched_once_and_cached(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    for _ in range(3):
        await validator.verify(idp.token(now=clock.wall()))

    assert idp.jwks_fetches() == 1


async def test_an_expired_token_is_refused(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    token = idp.token(now=clock.wall() - 3600, expires_in=60)

    with pytest.raises(AuthenticationFailed, match="expired"):
        await validator.verify(token)


async def test_a_token_without_exp_is_refused(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    token = idp.token(now=clock.wall(), exp=None)

    with pytest.raises(AuthenticationFailed):
        await validator.verify(token)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"issuer": "https://evil.example.test/"}, "iss"),
        ({"audience": "someone-else"}, "aud"),
    ],
)
async def test_another_issuer_or_audience_is_refused(
    idp: FakeIdentityProvider,
    validator: JwtValidator,
    clock: FakeClock,
    claims: dict[str, Any],
    reason: str,
) -> None:
    token = idp.token(now=clock.wall(), **claims)

    with pytest.raises(AuthenticationFailed, match=reason):
        await validator.verify(token)


async def test_a_token_signed_by_another_key_with_a_known_kid_is_forged(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    intruder = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    token = idp.token(now=clock.wall(), key=intruder)

    with pytest.raises(AuthenticationFailed, match="invalid token"):
        await validator.verify(token)


async def test_a_tampered_payload_is_refused(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    header, _, signature = idp.token(now=clock.wall(), scope="read").split(".")
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(clock.wall()) + 60, "scope": "operate"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    with pytest.raises(AuthenticationFailed):
        await validator.verify(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("alg", ["none", "HS256"])
async def test_unsigned_and_symmetric_tokens_are_refused_before_any_key_lookup(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock, alg: str
) -> None:
    token = _unsigned(idp.token(now=clock.wall()), alg)

    with pytest.raises(AuthenticationFailed, match="not allowed"):
        await validator.verify(token)
    assert idp.jwks_fetches() == 0


async def test_an_hs256_token_signed_with_the_public_key_is_refused(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    # The classic key-confusion attack: HMAC keyed with the public key's bytes.
    public_pem = idp.keys[0].as_pem(private=False)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(clock.wall()) + 60, "scope": "operate"}
    signing_input = ".".join(
        _b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "kid": "rsa-1"}, claims)
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(mac)}"

    with pytest.raises(AuthenticationFailed):
        await validator.verify(token)


@pytest.mark.parametrize("garbage", ["", "a.b", "not-a-jwt", "x" * 9000, "é.é.é"])
async def test_malformed_tokens_are_refused(validator: JwtValidator, garbage: str) -> None:
    with pytest.raises(AuthenticationFailed):
        await validator.verify(garbage)


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    await validator.verify(idp.token(now=clock.wall()))
    idp.rotate()
    clock.advance(31)

    principal = await validator.verify(idp.token(kid="ec-2", now=clock.wall()))

    assert principal.subject == "alice@example.test"
    assert idp.jwks_fetches() == 2


async def test_unknown_key_ids_do_not_refetch_more_than_once_per_interval(
    idp: FakeIdentityProvider, validator: JwtValidator, clock: FakeClock
) -> None:
    await validator.verify(idp.token(now=clock.wall()))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "who"})

    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await validator.verify(idp.token(now=clock.wall(), key=stranger))

    assert idp.jwks_fetches() == 1


async def test_an_unreachable_provider_is_an_authentication_failure(clock: FakeClock) -> None:
    with FakeIdentityProvider() as idp:
        url = idp.jwks_url
        token = idp.token(now=clock.wall())
    checker = JwtValidator(url, issuer=ISSUER, audience=AUDIENCE, clock=clock)

    with pytest.raises(AuthenticationFailed, match="unavailable"):
        await checker.verify(token)
    await checker.aclose()


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], []])
def test_symmetric_or_no_algorithms_are_a_configuration_mistake(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        JwtValidator(
            "http://127.0.0.1:9/jwks", issuer=ISSUER, audience=AUDIENCE, algorithms=algorithms
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("read operate", {"read", "operate"}),
        (["operate", "admin"], {"operate"}),
        (["read", 3, None], {"read"}),
        (42, set()),
        (None, set()),
    ],
)
def test_scopes_are_read_from_strings_and_lists(value: object, expected: set[str]) -> None:
    assert scopes_of(value) == expected


async def test_a_bad_key_in_the_set_does_not_void_the_good_ones(
    idp: FakeIdentityProvider, clock: FakeClock
) -> None:
    document = KeySet(idp.keys).as_dict(private=False)
    document["keys"].append({"kty": "EC", "crv": "BP-256", "x": "AAAA", "y": "AAAA", "kid": "odd"})
    with FakeServer() as provider:
        provider.route("GET", "/jwks", lambda _request: FakeResponse.json(document))
        checker = JwtValidator(
            f"{provider.url}/jwks", issuer=ISSUER, audience=AUDIENCE, clock=clock
        )
        try:
            principal = await checker.verify(idp.token(now=clock.wall()))
        finally:
            await checker.aclose()

    assert principal.subject == "alice@example.test"


async def test_a_provider_answering_garbage_is_asked_once_per_interval(
    idp: FakeIdentityProvider, clock: FakeClock
) -> None:
    token = idp.token(now=clock.wall(), expires_in=3600)
    with FakeServer() as provider:
        provider.route("GET", "/jwks", lambda _request: FakeResponse.json({"error": "maintenance"}))
        checker = JwtValidator(
            f"{provider.url}/jwks", issuer=ISSUER, audience=AUDIENCE, clock=clock, min_refresh=30.0
        )
        try:
            for _ in range(20):
                with pytest.raises(AuthenticationFailed, match="unavailable"):
                    await checker.verify(token)
            asked_first = len(provider.requests)
            clock.advance(31.0)
            with pytest.raises(AuthenticationFailed):
                await checker.verify(token)
        finally:
            await checker.aclose()

    assert asked_first == 1
    assert len(provider.requests) == 2
