"""`ApiKeys`: keys stored hashed, verified, listed and revoked (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from seawall.auth import ApiKeys, AuthenticationFailed
from seawall.db import Database, api_keys


async def test_a_created_key_verifies_with_its_scope(database: Database) -> None:
    keys = ApiKeys(database)
    record, token = await keys.create("ci deploys", "operate")

    principal = await keys.verify(token.get_secret_value())

    assert principal.key_id == record.id
    assert principal.name == "ci deploys"
    assert principal.scopes == frozenset({"operate"})
    assert principal.method == "api_key"


async def test_only_the_hash_is_stored(database: Database) -> None:
    _, token = await ApiKeys(database).create("ops", "read")

    async with database.reading() as session:
        rows = (await session.execute(sa.select(api_keys))).mappings().all()

    secret = token.get_secret_value()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0].values())
    # The secret part may itself hold "_" (base64url): split off only the prefix and id.
    assert secret.split("_", 2)[2] not in str(dict(rows[0]))


async def test_a_wrong_secret_for_a_known_id_is_refused(database: Database) -> None:
    keys = ApiKeys(database)
    _, token = await keys.create("ops", "read")
    secret = token.get_secret_value()
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")

    with pytest.raises(AuthenticationFailed, match="unknown API key"):
        await keys.verify(forged)


async def test_an_unknown_key_is_refused(database: Database) -> None:
    with pytest.raises(AuthenticationFailed, match="unknown API key"):
        await ApiKeys(database).verify("sw_0123456789ab_" + "a" * 43)


async def test_a_revoked_key_is_refused(database: Database) -> None:
    keys = ApiKeys(database)
    record, token = await keys.create("ops", "read")

    assert await keys.revoke(record.id) is True
    assert await keys.revoke(record.id) is False
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await keys.verify(token.get_secret_value())
    listed = await keys.list()
    assert [(k.id, k.active) for k in listed] == [(record.id, False)]


async def test_an_expired_key_is_refused(database: Database) -> None:
    now = datetime.now(UTC)
    moments = iter([now, now + timedelta(hours=2)])
    keys = ApiKeys(database, clock=lambda: next(moments))
    _, token = await keys.create("temp", "read", expires_at=now + timedelta(hours=1))

    with pytest.raises(AuthenticationFailed, match="expired"):
        await keys.verify(token.get_secret_value())


async def test_using_a_key_records_when(database: Database) -> None:
    keys = ApiKeys(database)
    record, token = await keys.create("ops", "read")

    await keys.verify(token.get_secret_value())

    found = await keys.get(record.id)
    assert found is not None
    assert found.last_used_at is not None
    assert "secret" not in str(found.summary())


@pytest.mark.parametrize(
    ("name", "scope"), [("", "read"), ("x" * 201, "read"), ("ok", "admin"), ("a\x00b", "read")]
)
async def test_bad_names_and_scopes_are_refused(database: Database, name: str, scope: str) -> None:
    with pytest.raises(ValueError, match=r"name|scope"):
        await ApiKeys(database).create(name, scope)  # type: ignore[arg-type]
