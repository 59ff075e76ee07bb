"""`Lease`: one holder at a time, renewed at half-life, lost on expiry, given up on release."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from seawall.db import Database, leases
from seawall.messaging import Lease
from tests.messaging.conftest import Clock

TTL = 10.0


def _pair(database: Database, clock: Clock, name: str = "job") -> tuple[Lease, Lease]:
    return (
        Lease(database, name, ttl=TTL, holder="alpha", clock=clock),
        Lease(database, name, ttl=TTL, holder="beta", clock=clock),
    )


async def _row(database: Database, name: str = "job") -> sa.Row[tuple[str, object]] | None:
    async with database.sessions() as session:
        query = sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
        return (await session.execute(query)).first()


async def test_the_first_to_ask_holds_the_lease_and_the_other_does_not(
    database: Database, clock: Clock
) -> None:
    alpha, beta = _pair(database, clock)

    alpha_has_it = await alpha.hold()
    beta_has_it = await beta.hold()

    assert (alpha_has_it, beta_has_it) == (True, False)
    row = await _row(database)
    assert row is not None
    assert tuple(row) == ("alpha", clock.now + alpha.ttl)


async def test_the_holder_keeps_the_lease_while_it_renews(database: Database, clock: Clock) -> None:
    alpha, beta = _pair(database, clock)
    await alpha.hold()

    results = []
    for _ in range(6):
        clock.advance(TTL * 0.6)
        results.append((await alpha.hold(), await beta.hold()))

    assert results == [(True, False)] * 6
    row = await _row(database)
    assert row is not None
    assert tuple(row) == ("alpha", clock.now + alpha.ttl)


async def test_the_lease_is_renewed_only_after_half_its_time(
    database: Database, clock: Clock
) -> None:
    alpha, _ = _pair(database, clock)
    await alpha.hold()
    taken_until = clock.now + alpha.ttl

    clock.advance(TTL * 0.4)
    early = await alpha.hold()
    row_early = await _row(database)
    clock.advance(TTL * 0.2)
    late = await alpha.hold()
    row_late = await _row(database)

    assert (early, late) == (True, True)
    assert row_early is not None
    assert row_early.expires_at == taken_until
    assert row_late is not None
    assert row_late.expires_at == clock.now + alpha.ttl


async def test_an_expired_lease_goes_to_the_next_holder_who_asks(
    database: Database, clock: Clock
) -> None:
    alpha, beta = _pair(database, clock)
    await alpha.hold()
    clock.advance(TTL + 0.001)  # alpha stalled past its lease

    beta_takes_it = await beta.hold()
    alpha_lost_it = not await alpha.hold()

    assert beta_takes_it
    assert alpha_lost_it
    row = await _row(database)
    assert row is not None
    assert row.holder == "beta"


async def test_a_lease_expires_exactly_at_its_expiry_time(database: Database, clock: Clock) -> None:
    alpha, beta = _pair(database, clock)
    await alpha.hold()

    clock.advance(TTL - 0.001)
    before = await beta.hold()
    clock.advance(0.001)
    at_expiry = await beta.hold()

    assert (before, at_expiry) == (False, True)


async def test_a_released_lease_is_free_at_once(database: Database, clock: Clock) -> None:
    alpha, beta = _pair(database, clock)
    await alpha.hold()

    await alpha.release()
    beta_takes_it = await beta.hold()
    alpha_asks_again = await alpha.hold()

    assert beta_takes_it
    assert not alpha_asks_again


async def test_releasing_a_lease_held_by_another_changes_nothing(
    database: Database, clock: Clock
) -> None:
    alpha, beta = _pair(database, clock)
    await alpha.hold()

    await beta.release()

    assert not await beta.hold()
    row = await _row(database)
    assert row is not None
    assert row.holder == "alpha"


async def test_leases_with_different_names_are_independent(
    database: Database, clock: Clock
) -> None:
    alpha = Lease(database, "relay", ttl=TTL, holder="alpha", clock=clock)
    beta = Lease(database, "purge", ttl=TTL, holder="beta", clock=clock)

    assert await alpha.hold()
    assert await beta.hold()


async def test_two_holders_asking_at_once_get_one_lease(database: Database, clock: Clock) -> None:
    holders = [
        Lease(database, "race", ttl=TTL, holder=f"holder-{i}", clock=clock) for i in range(4)
    ]

    results = await asyncio.gather(*(holder.hold() for holder in holders))

    assert sum(results) == 1
    row = await _row(database, "race")
    assert row is not None
    assert row.holder == holders[results.index(True)].holder


async def test_a_default_holder_names_this_process(database: Database) -> None:
    first, second = Lease(database, "job"), Lease(database, "job")

    assert first.holder != second.holder
    assert len(first.holder) <= 100
    assert repr(first).startswith("Lease('job', holder=")
