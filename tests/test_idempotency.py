"""`seawall.idempotency.IdempotencyStore` on SQLite and PostgreSQL, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from seawall.db import Database, idempotency_keys
from seawall.errors import IdempotencyClaimLost, IdempotencyKeyInFlight, IdempotencyKeyMismatch
from seawall.idempotency import (
    Claim,
    IdempotencyStore,
    StoredResponse,
    request_fingerprint,
    valid_idempotency_key,
)

SCOPE = "POST /things"


class WallClock:
    """A settable wall clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def store(database: Database, clock: WallClock) -> IdempotencyStore:
    return IdempotencyStore(database, ttl=3600, lock_timeout=30, clock=clock)


async def _claim(store: IdempotencyStore, key: str, fingerprint: str = "fp") -> Claim:
    claimed = await store.claim(SCOPE, key, fingerprint)
    assert isinstance(claimed, Claim)
    return claimed


async def _complete(store: IdempotencyStore, database: Database, claim: Claim, body: str) -> None:
    async with database.transaction() as session:
        await store.complete(session, claim, StoredResponse(201, body, {"etag": '"v1"'}))


async def test_first_claim_owns_the_key(store: IdempotencyStore) -> None:
    claimed = await store.claim(SCOPE, "k1", "fp")

    assert isinstance(claimed, Claim)
    assert (claimed.scope, claimed.key, len(claimed.token)) == (SCOPE, "k1", 32)


async def test_completed_key_returns_the_stored_response(
    store: IdempotencyStore, database: Database
) -> None:
    claim = await _claim(store, "k1")
    await _complete(store, database, claim, '{"id": 1}')

    replay = await store.claim(SCOPE, "k1", "fp")

    assert replay == StoredResponse(201, '{"id": 1}', {"etag": '"v1"'})


async def test_key_in_flight_is_refused(store: IdempotencyStore) -> None:
    await store.claim(SCOPE, "k1", "fp")

    with pytest.raises(IdempotencyKeyInFlight) as caught:
        await store.claim(SCOPE, "k1", "fp")

    assert caught.value.key == "k1"


async def test_key_reused_with_another_request_is_refused(
    store: IdempotencyStore, database: Database
) -> None:
    claim = await _claim(store, "k1")
    await _complete(store, database, claim, "{}")

    with pytest.raises(IdempotencyKeyMismatch):
        await store.claim(SCOPE, "k1", "other")


async def test_same_key_in_another_scope_is_independent(store: IdempotencyStore) -> None:
    await store.claim(SCOPE, "k1", "fp")

    claimed = await store.claim("PATCH /things/1", "k1", "fp")

    assert isinstance(claimed, Claim)


async def test_released_key_can_be_claimed_again(store: IdempotencyStore) -> None:
    await store.release(await _claim(store, "k1"))

    claimed = await store.claim(SCOPE, "k1", "fp")

    assert isinstance(claimed, Claim)


async def test_release_never_forgets_a_completed_key(
    store: IdempotencyStore, database: Database
) -> None:
    claim = await _claim(store, "k1")
    await _complete(store, database, claim, "{}")

    await store.release(claim)

    assert await store.claim(SCOPE, "k1", "fp") == StoredResponse(201, "{}", {"etag": '"v1"'})


async def test_abandoned_key_is_taken_over_after_the_lock_timeout(
    store: IdempotencyStore, clock: WallClock
) -> None:
    await store.claim(SCOPE, "k1", "fp")
    clock.advance(31)

    claimed = await store.claim(SCOPE, "k1", "fp")

    assert isinstance(claimed, Claim)


async def test_abandoned_key_still_refuses_another_request(
    store: IdempotencyStore, clock: WallClock
) -> None:
    await store.claim(SCOPE, "k1", "fp")
    clock.advance(31)

    with pytest.raises(IdempotencyKeyMismatch):
        await store.claim(SCOPE, "k1", "other")


async def test_expired_key_is_a_new_key(
    store: IdempotencyStore, database: Database, clock: WallClock
) -> None:
    claim = await _claim(store, "k1")
    await _complete(store, database, claim, "{}")
    clock.advance(3601)

    claimed = await store.claim(SCOPE, "k1", "another request")

    assert isinstance(claimed, Claim)


async def test_purge_removes_only_expired_keys_in_batches(
    store: IdempotencyStore, database: Database, clock: WallClock
) -> None:
    for n in range(7):
        await store.claim(SCOPE, f"old-{n}", "fp")
    clock.advance(1800)
    await store.claim(SCOPE, "young", "fp")
    clock.advance(1801)

    removed = await store.purge_expired(batch_size=3)

    async with database.sessions() as session:
        left = (await session.execute(sa.select(idempotency_keys.c.key))).scalars().all()
    assert removed == 7
    assert left == ["young"]


def test_fingerprint_ignores_json_formatting_but_not_content() -> None:
    a = request_fingerprint("POST", "/cases", b'{"a": 1, "b": [1, 2]}')
    b = request_fingerprint("post", "/cases", b'{"b":[1,2],"a":1}')
    c = request_fingerprint("POST", "/cases", b'{"a": 2, "b": [1, 2]}')
    d = request_fingerprint("POST", "/other", b'{"a": 1, "b": [1, 2]}')

    assert a == b
    assert len({a, c, d}) == 3


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("abc", True),
        ("x" * 255, True),
        ("", False),
        ("x" * 256, False),
        ("a b", False),
        ("é", False),
    ],
)
def test_keys_are_short_visible_ascii(key: str, valid: bool) -> None:
    assert valid_idempotency_key(key) is valid


def test_store_refuses_non_positive_durations(database: Database) -> None:
    with pytest.raises(ValueError, match="positive"):
        IdempotencyStore(database, ttl=0)


async def test_a_late_first_run_cannot_release_or_complete_the_takeover(
    store: IdempotencyStore, database: Database, clock: WallClock
) -> None:
    slow = await _claim(store, "k1")
    clock.advance(31)
    retry = await _claim(store, "k1")

    await store.release(slow)
    with pytest.raises(IdempotencyClaimLost):
        await _complete(store, database, slow, '{"by": "slow"}')
    with pytest.raises(IdempotencyKeyInFlight):
        await store.claim(SCOPE, "k1", "fp")
    await _complete(store, database, retry, '{"by": "retry"}')

    assert await store.claim(SCOPE, "k1", "fp") == StoredResponse(
        201, '{"by": "retry"}', {"etag": '"v1"'}
    )
