"""`FailedAuthLimiter` and `AuthGuard`: failures per address, blocked then let through again."""

from __future__ import annotations

import asyncio

import pytest

from seawall.auth import (
    AuthenticationFailed,
    Authenticator,
    AuthGuard,
    FailedAuthLimiter,
    Principal,
)
from seawall.errors import RateLimitExceeded
from seawall.testing import FakeClock


async def test_an_address_is_blocked_after_too_many_failures_then_freed() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter("3/minute", clock=clock)
    for _ in range(3):
        await limiter.failed("10.0.0.1")

    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.failed("10.0.0.1")
    with pytest.raises(RateLimitExceeded):
        limiter.check("10.0.0.1")
    limiter.check("10.0.0.2")
    clock.advance(caught.value.retry_after + 0.1)

    limiter.check("10.0.0.1")


async def test_a_blocked_address_is_refused_before_its_credentials_are_checked() -> None:
    guard = AuthGuard(Authenticator(), FailedAuthLimiter("1/minute", clock=FakeClock()))
    with pytest.raises(AuthenticationFailed):
        await guard.authenticate("Bearer nope", client="a")
    with pytest.raises(RateLimitExceeded):
        await guard.authenticate("Bearer nope", client="a")

    with pytest.raises(RateLimitExceeded):
        await guard.authenticate("Bearer sw_whatever", client="a")
    assert await guard.authenticate_key("nope", client="a") is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no credentials"),
        ("", "no credentials"),
        ("Basic dXNlcjpwYXNz", "Bearer scheme"),
        ("Bearer", "Bearer scheme"),
        ("Bearer sw_0123456789ab_" + "a" * 43, "API keys are not accepted"),
        ("Bearer eyJ.x.y", "no JWKS URL"),
    ],
)
async def test_what_the_authenticator_refuses_and_why(header: str | None, reason: str) -> None:
    with pytest.raises(AuthenticationFailed, match=reason):
        await Authenticator().authenticate(header)


async def test_a_burst_of_guesses_is_checked_one_at_a_time_and_stops_at_the_limit() -> None:
    checked = 0

    class Counting(Authenticator):
        async def authenticate(self, authorization: str | None) -> Principal:
            nonlocal checked
            checked += 1
            await asyncio.sleep(0)
            raise AuthenticationFailed("no")

    guard = AuthGuard(Counting(), FailedAuthLimiter("5/minute", clock=FakeClock()))

    answers = await asyncio.gather(
        *(guard.authenticate("Bearer guess", client="a") for _ in range(50)),
        return_exceptions=True,
    )

    assert checked == 6  # five counted failures, and the one that trips the block
    assert sum(isinstance(answer, RateLimitExceeded) for answer in answers) == 45
    assert guard.failures._turns == {}  # nothing is kept per address
