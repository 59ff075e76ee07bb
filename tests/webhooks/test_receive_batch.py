"""`WebhookReceiver` group commit: deliveries stored together, each answered after its commit.

Deliveries handed over in the same turn of the event loop (``asyncio.gather``)
reach the receiver's writer together and share one transaction; the tests rely
on that, not on timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError, OperationalError

from seawall.db import Database, outbox, webhook_dedup, webhook_events
from seawall.errors import DatabaseError
from seawall.messaging import Outbox, _wakeup
from seawall.observability import bind_correlation
from seawall.webhooks import Receipt, WebhookProvider, WebhookReceiver
from seawall.webhooks._batch import PendingDelivery, plan_claims

SECRET = "batch-s3cret"
only_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
GITHUB = WebhookProvider(name="github", scheme="github", secrets=(SecretStr(SECRET),))


def github_delivery(
    payload: dict[str, Any] | None = None, *, delivery: str | None = None
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload or {"action": "opened", "n": uuid.uuid4().hex}).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }, body


@pytest.fixture
async def receiver(database: Database) -> WebhookReceiver:
    return WebhookReceiver(database, {"github": GITHUB})


async def rows(database: Database, table: sa.Table) -> list[dict[str, Any]]:
    async with database.reading() as session:
        result = await session.execute(sa.select(table))
        return [dict(row) for row in result.mappings()]


async def test_copies_in_one_batch_store_one_delivery(
    receiver: WebhookReceiver, database: Database
) -> None:
    headers, body = github_delivery(delivery="same-delivery")
    other_headers, other_body = github_delivery()

    receipts = await asyncio.gather(
        *(receiver.receive(GITHUB, headers, body) for _ in range(5)),
        receiver.receive(GITHUB, other_headers, other_body),
    )

    first, *copies, other = receipts
    assert first.status == "accepted"
    assert [copy.status for copy in copies] == ["duplicate"] * 4
    assert {copy.webhook_id for copy in copies} == {first.webhook_id}
    assert other.status == "accepted"
    assert sorted(row["id"] for row in await rows(database, webhook_events)) == sorted(
        [first.webhook_id, other.webhook_id]
    )
    assert len(await rows(database, outbox)) == 2
    assert {row["webhook_id"] for row in await rows(database, webhook_dedup)} == {
        first.webhook_id,
        other.webhook_id,
    }


async def test_a_captured_body_under_a_fresh_id_in_the_same_batch_is_a_duplicate(
    receiver: WebhookReceiver, database: Database
) -> None:
    headers, body = github_delivery()
    replayed = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}

    original, replay = await asyncio.gather(
        receiver.receive(GITHUB, headers, body), receiver.receive(GITHUB, replayed, body)
    )

    assert (original.status, replay.status) == ("accepted", "duplicate")
    assert replay.webhook_id == original.webhook_id
    assert len(await rows(database, webhook_events)) == 1
    assert not await receiver.known("github", replayed["X-GitHub-Delivery"])


async def test_a_duplicate_of_a_stored_delivery_gives_back_the_keys_it_claimed(
    receiver: WebhookReceiver, database: Database
) -> None:
    headers, body = github_delivery()
    first = await receiver.receive(GITHUB, headers, body)
    replayed = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
    fresh_headers, fresh_body = github_delivery()

    replay, fresh = await asyncio.gather(
        receiver.receive(GITHUB, replayed, body),
        receiver.receive(GITHUB, fresh_headers, fresh_body),
    )

    assert (replay.status, replay.webhook_id) == ("duplicate", first.webhook_id)
    assert fresh.status == "accepted"
    # The replay's own id key was claimed in the batch, then released with it.
    assert not await receiver.known("github", replayed["X-GitHub-Delivery"])
    assert len(await rows(database, webhook_events)) == 2


async def test_racing_copies_on_two_receivers_store_one_delivery(
    database: Database, database_url: str
) -> None:
    second_database = Database(database_url)
    one = WebhookReceiver(database, {"github": GITHUB})
    two = WebhookReceiver(second_database, {"github": GITHUB})
    deliveries = [github_delivery() for _ in range(10)]

    try:
        receipts = await asyncio.gather(
            *(
                receiver.receive(GITHUB, headers, body)
                for headers, body in deliveries
                for receiver in (one, two, two, one)
            )
        )
    finally:
        await second_database.dispose()

    statuses = [receipt.status for receipt in receipts]
    assert statuses.count("accepted") == 10
    assert statuses.count("duplicate") == 30
    for index in range(10):
        group = receipts[index * 4 : index * 4 + 4]
        assert len({receipt.webhook_id for receipt in group}) == 1
    assert len(await rows(database, webhook_events)) == 10
    assert len(await rows(database, outbox)) == 10


@pytest.fixture
async def poisoned(database: Database) -> AsyncIterator[str]:
    """A trigger that refuses the ``webhook_events`` row of one delivery id."""
    poison = f"poison-{uuid.uuid4().hex[:8]}"
    async with database.transaction() as session:
        if database.dialect == "postgresql":
            await session.execute(
                sa.text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN IF NEW.delivery_id = '{poison}' THEN "
                    "RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'check_violation'; "
                    "END IF; RETURN NEW; END $$"
                )
            )
            await session.execute(
                sa.text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
        else:
            await session.execute(
                sa.text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_events "
                    f"WHEN NEW.delivery_id = '{poison}' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            )
    yield poison
    async with database.transaction() as session:
        await session.execute(
            sa.text("DROP TRIGGER refuse_poison ON webhook_events")
            if database.dialect == "postgresql"
            else sa.text("DROP TRIGGER refuse_poison")
        )
        if database.dialect == "postgresql":
            await session.execute(sa.text("DROP FUNCTION refuse_poison()"))


async def test_a_row_the_database_refuses_fails_only_its_own_request(
    receiver: WebhookReceiver, database: Database, poisoned: str
) -> None:
    good = [github_delivery() for _ in range(4)]
    bad_headers, bad_body = github_delivery(delivery=poisoned)

    outcomes = await asyncio.gather(
        *(receiver.receive(GITHUB, headers, body) for headers, body in good[:2]),
        receiver.receive(GITHUB, bad_headers, bad_body),
        *(receiver.receive(GITHUB, headers, body) for headers, body in good[2:]),
        return_exceptions=True,
    )

    refused = outcomes.pop(2)
    assert isinstance(refused, IntegrityError)
    assert all(isinstance(o, Receipt) and o.status == "accepted" for o in outcomes)
    stored = await rows(database, webhook_events)
    assert len(stored) == 4
    assert poisoned not in {row["delivery_id"] for row in stored}
    assert not await receiver.known("github", poisoned)
    assert len(await rows(database, outbox)) == 4


async def test_an_unreachable_database_fails_every_waiting_delivery() -> None:
    nowhere = Database("postgresql://127.0.0.1:9/nowhere", timeout=0.5)
    receiver = WebhookReceiver(nowhere, {"github": GITHUB})

    try:
        outcomes = await asyncio.gather(
            *(receiver.receive(GITHUB, *github_delivery()) for _ in range(3)),
            return_exceptions=True,
        )
    finally:
        await nowhere.dispose()

    assert all(isinstance(outcome, DatabaseError) for outcome in outcomes)
    assert "unreachable" in str(outcomes[0])


async def test_every_answer_comes_after_its_rows_are_committed(
    receiver: WebhookReceiver, database: Database, database_url: str
) -> None:
    observer = Database(database_url)
    deliveries = [github_delivery() for _ in range(20)]
    seen: list[tuple[bool, bool]] = []

    try:
        for arriving in asyncio.as_completed(
            [receiver.receive(GITHUB, headers, body) for headers, body in deliveries]
        ):
            receipt = await arriving
            async with observer.reading() as session:
                event = await session.scalar(
                    sa.select(sa.func.count())
                    .select_from(webhook_events)
                    .where(webhook_events.c.id == receipt.webhook_id)
                )
                staged = await session.scalar(
                    sa.select(sa.func.count())
                    .select_from(outbox)
                    .where(outbox.c.subject == receipt.webhook_id)
                )
            seen.append((event == 1, staged == 1))
    finally:
        await observer.dispose()

    assert seen == [(True, True)] * 20


@pytest.mark.postgres
async def test_no_answer_goes_out_while_the_commit_is_blocked(
    database_url: str, database: Database
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("holds a PostgreSQL table lock")
    receiver = WebhookReceiver(database, {"github": GITHUB})
    blocker = await asyncpg.connect(database_url)
    blocked = blocker.transaction()
    await blocked.start()
    await blocker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")

    tasks = [asyncio.create_task(receiver.receive(GITHUB, *github_delivery())) for _ in range(5)]
    for _ in range(500):  # until the writer's INSERT INTO outbox waits for the lock
        waiting = await blocker.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
        if waiting:
            break
        await asyncio.sleep(0.01)
    answered_while_blocked = [task.done() for task in tasks]
    await blocked.rollback()
    await blocker.close()
    receipts = await asyncio.gather(*tasks)

    assert waiting
    assert answered_while_blocked == [False] * 5
    assert [receipt.status for receipt in receipts] == ["accepted"] * 5


async def test_the_outbox_row_is_the_one_outbox_add_would_write(
    receiver: WebhookReceiver, database: Database
) -> None:
    headers, body = github_delivery()

    with bind_correlation("corr-batch-1", None):
        receipt = await receiver.receive(GITHUB, headers, body)

    [row] = await rows(database, outbox)
    event = Outbox.envelope(row)
    expected = Outbox().row(event)
    assert {k: row[k] for k in expected if k != "created_at"} == {
        k: v for k, v in expected.items() if k != "created_at"
    }
    assert (event.type, event.subject, event.correlationid) == (
        "webhook.received",
        receipt.webhook_id,
        "corr-batch-1",
    )
    assert (row["aggregate_type"], row["aggregate_id"]) == ("webhook", receipt.webhook_id)
    assert event.data == {
        "id": receipt.webhook_id,
        "provider": "github",
        "type": "issues.opened",
        "delivery_id": headers["X-GitHub-Delivery"],
    }


def test_max_batch_must_be_positive(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")

    with pytest.raises(ValueError, match="max_batch"):
        WebhookReceiver(database, {}, max_batch=0)


async def test_duplicates_of_two_providers_in_one_batch_name_their_own_first_delivery(
    database: Database,
) -> None:
    mirror = WebhookProvider(name="mirror", scheme="github", secrets=(SecretStr(SECRET),))
    receiver = WebhookReceiver(database, {"github": GITHUB, "mirror": mirror})
    headers, body = github_delivery(delivery="shared-delivery-id")
    first_github, first_mirror = await asyncio.gather(
        receiver.receive(GITHUB, headers, body), receiver.receive(mirror, headers, body)
    )

    again_github, again_mirror, fresh = await asyncio.gather(
        receiver.receive(GITHUB, headers, body),
        receiver.receive(mirror, headers, body),
        receiver.receive(GITHUB, *github_delivery()),
    )

    assert (first_github.status, first_mirror.status) == ("accepted", "accepted")
    assert first_github.webhook_id != first_mirror.webhook_id
    assert (again_github.status, again_github.webhook_id) == ("duplicate", first_github.webhook_id)
    assert (again_mirror.status, again_mirror.webhook_id) == ("duplicate", first_mirror.webhook_id)
    assert fresh.status == "accepted"
    assert len(await rows(database, webhook_events)) == 3
    assert len(await rows(database, outbox)) == 3


async def test_the_stored_row_keeps_the_body_headers_and_time_as_received(
    receiver: WebhookReceiver, database: Database
) -> None:
    headers, body = github_delivery()
    moment = datetime(2026, 12, 6, 12, 30, 15, 123456, tzinfo=UTC)

    receipt = await receiver.receive(GITHUB, headers, body, now=moment)

    [row] = await rows(database, webhook_events)
    assert row["id"] == receipt.webhook_id
    assert bytes(row["body"]) == body
    assert row["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert row["headers"] == {
        "content-type": "application/json",
        "x-github-event": "issues",
        "x-github-delivery": headers["X-GitHub-Delivery"],
    }
    assert (row["status"], row["attempts"], row["event_type"]) == ("received", 0, "issues.opened")
    assert row["received_at"] == moment
    keys = await rows(database, webhook_dedup)
    assert {key["key"] for key in keys} == {
        f"id:{headers['X-GitHub-Delivery']}",
        f"sha256:{row['body_sha256']}",
    }
    assert {key["expires_at"] for key in keys} == {moment + receiver.dedup_ttl}


@pytest.fixture
async def serialization_failure(database: Database) -> AsyncIterator[str]:
    """A trigger that fails the ``webhook_events`` insert of a batch holding one delivery id.

    It raises a serialization failure: no bad row's fault, so the batch is not
    split but fails as a whole, after its dedupe keys were claimed.
    """
    marker = f"fail-{uuid.uuid4().hex[:8]}"
    async with database.transaction() as session:
        await session.execute(
            sa.text(
                "CREATE FUNCTION fail_batch() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.delivery_id = '{marker}' THEN "
                "RAISE EXCEPTION 'could not serialize' USING ERRCODE = 'serialization_failure'; "
                "END IF; RETURN NEW; END $$"
            )
        )
        await session.execute(
            sa.text(
                "CREATE TRIGGER fail_batch BEFORE INSERT ON webhook_events "
                "FOR EACH ROW EXECUTE FUNCTION fail_batch()"
            )
        )
    yield marker
    async with database.transaction() as session:
        await session.execute(sa.text("DROP TRIGGER fail_batch ON webhook_events"))
        await session.execute(sa.text("DROP FUNCTION fail_batch()"))


@only_postgres
async def test_a_failed_batch_answers_every_waiting_delivery_and_stores_nothing(
    database: Database, serialization_failure: str
) -> None:
    marker = serialization_failure
    receiver = WebhookReceiver(database, {"github": GITHUB})
    deliveries = [github_delivery() for _ in range(3)] + [github_delivery(delivery=marker)]

    outcomes = await asyncio.gather(
        *(receiver.receive(GITHUB, headers, body) for headers, body in deliveries),
        return_exceptions=True,
    )
    retried = await receiver.receive(GITHUB, *deliveries[0])

    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
    assert retried.status == "accepted"
    assert [row["id"] for row in await rows(database, webhook_events)] == [retried.webhook_id]
    assert len(await rows(database, outbox)) == 1
    assert {row["webhook_id"] for row in await rows(database, webhook_dedup)} == {
        retried.webhook_id
    }


@only_postgres
async def test_each_batch_notifies_the_outbox_channel_on_postgres(
    database_url: str, receiver: WebhookReceiver
) -> None:
    listener = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("seawall_outbox", lambda *args: heard.put_nowait(args[2]))

    try:
        await asyncio.gather(*(receiver.receive(GITHUB, *github_delivery()) for _ in range(3)))
        channel = await asyncio.wait_for(heard.get(), timeout=10)
    finally:
        await listener.close()

    assert channel == "seawall_outbox"


async def test_a_commit_wakes_the_relays_of_this_process(receiver: WebhookReceiver) -> None:
    woken = asyncio.Event()
    _wakeup.register(woken)

    try:
        await receiver.receive(GITHUB, *github_delivery())
        await asyncio.wait_for(woken.wait(), timeout=10)
    finally:
        _wakeup.unregister(woken)

    assert woken.is_set()


def pending(provider: str, *keys: str) -> PendingDelivery:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return PendingDelivery(
        provider=provider,
        keys=keys,
        row={"id": f"{provider}-{'-'.join(keys)}"},
        event=None,  # type: ignore[arg-type]  # the plan never looks at the event
        expires_at=moment,
    )


def test_the_plan_claims_each_key_once_in_key_order_and_names_the_copies() -> None:
    deliveries = [
        pending("github", "id:b", "sha256:1"),
        pending("github", "id:a"),
        pending("github", "id:c", "sha256:1"),
        pending("stripe", "id:a"),
        pending("github", "id:a"),
    ]

    copy_of, claims = plan_claims(deliveries)

    assert copy_of == {2: 0, 4: 1}
    assert [(claim["provider"], claim["key"], claim["webhook_id"]) for claim in claims] == [
        ("github", "id:a", "github-id:a"),
        ("github", "id:b", "github-id:b-sha256:1"),
        ("github", "sha256:1", "github-id:b-sha256:1"),
        ("stripe", "id:a", "stripe-id:a"),
    ]
