"""Nothing lost, nothing twice: ``seawall serve`` killed with SIGKILL under load.

Clients create cases with idempotency keys while the server is killed at a
random moment (after a random number of answers), then restarted on the same
database. Every request whose answer was lost is retried with its key until it
succeeds. Afterwards:

- every case the server acknowledged (a 201 reached the client) exists;
- every key created exactly one case, and every case has exactly one
  ``case.created`` outbox event: no retry did the work twice;
- every outbox event is published, and the service's own consumer
  (``activity__from_cases``) applied every ``case.created`` exactly once,
  even where a killed relay had published one without marking it.

The figures of a run are printed (``-s``) and recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from seawall import db as tables
from seawall.db import Database
from tests.live_server import Server, free_port, seawall_serve

CONCURRENCY = 16
RETRY_ROUNDS = 60


REPLAYED: list[str] = []


async def _create(client: httpx.AsyncClient, key: str) -> str | None:
    """POST one case; its id, or None when the answer was lost (server gone).

    Keys answered as replays are noted in REPLAYED: their first run committed,
    but its answer died with the server.
    """
    try:
        response = await client.post(
            "/cases",
            json={"title": f"case {key}", "priority": "low"},
            headers={"Idempotency-Key": key},
        )
    except httpx.TransportError:
        return None
    if response.status_code == 201:
        if response.headers.get("idempotent-replayed") == "true":
            REPLAYED.append(key)
        case_id: str = response.json()["id"]
        return case_id
    # 409 (in flight: the killed run still holds the key) or 503 (busy): retry later.
    assert response.status_code in {409, 503}, response.text
    return None


async def _load(
    server: Server, keys: list[str], acknowledged: dict[str, str], kill_after: int
) -> None:
    """Send *keys* with CONCURRENCY in flight; SIGKILL the server after *kill_after* answers."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            key = queue.get_nowait()
            case_id = await _create(client, key)
            if case_id is not None:
                acknowledged[key] = case_id
                if len(acknowledged) >= kill_after and server.process.poll() is None:
                    server.process.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))


async def _settle(server: Server, keys: list[str], acknowledged: dict[str, str]) -> int:
    """Retry every key until it has its case; return how many retries it took in all."""
    retries = 0
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        for _ in range(RETRY_ROUNDS):
            pending = [key for key in keys if key not in acknowledged]
            if not pending:
                return retries
            for key in pending:
                retries += 1
                case_id = await _create(client, key)
                if case_id is not None:
                    acknowledged[key] = case_id
            # Keys whose claim died with the server are free once their lock expires.
            await asyncio.sleep(0.5)
    pytest.fail(f"{len(pending)} keys never succeeded after the restart")


async def _counts(url: str, column: sa.Column[str], *where: Any) -> dict[str, int]:
    """Rows of *column*'s table per value of *column*, among those matching *where*.

    Read through `Database.reading`: on SQLite it never waits for the server's writes.
    """
    query = sa.select(column, sa.func.count()).where(*where).group_by(column)
    database = Database(url)
    try:
        async with database.reading() as session:
            return dict((await session.execute(query)).all())
    finally:
        await database.dispose()


async def _stored(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Cases per title (one title per key) and case.created events per case."""
    cases = await _counts(url, tables.cases.c.title)
    created = tables.outbox.c.event_type == "case.created"
    return cases, await _counts(url, tables.outbox.c.aggregate_id, created)


async def _applied(url: str) -> tuple[int, dict[str, int]]:
    """Outbox rows not yet published, and activity lines per ``case.created`` event."""
    unpublished = await _counts(
        url, tables.outbox.c.event_type, tables.outbox.c.published_at.is_(None)
    )
    created = tables.case_activity.c.event_type == "case.created"
    return sum(unpublished.values()), await _counts(url, tables.case_activity.c.event_id, created)


async def _until_applied(url: str, events: int) -> dict[str, int]:
    """Wait for the running server to publish everything and apply every event."""
    for _ in range(300):
        pending, lines = await _applied(url)
        if pending == 0 and len(lines) >= events:
            return lines
        await asyncio.sleep(0.2)
    pytest.fail(f"{pending} events unpublished, {len(lines)} of {events} applied after 60 s")


async def _run(tmp_path: Path, url: str, requests: int, kills: int) -> dict[str, int]:
    keys = [str(uuid.uuid4()) for _ in range(requests)]
    acknowledged: dict[str, str] = {}
    before_kill: dict[str, str] = {}
    port = free_port()
    settings = {
        "SEAWALL_DATABASE_URL": url,
        "SEAWALL_AUTO_MIGRATE": "true",
        "SEAWALL_IDEMPOTENCY_LOCK_SECONDS": "1",
    }
    chunks = [keys[i::kills] for i in range(kills)]
    for number, chunk in enumerate(chunks):
        run_dir = tmp_path / f"run-{number}"
        run_dir.mkdir()
        with seawall_serve(run_dir, port=port, **settings) as server:
            server.wait_until_ready()
            kill_after = len(acknowledged) + random.randint(len(chunk) // 5, len(chunk) // 2)
            await _load(server, chunk, acknowledged, kill_after)
            assert server.process.wait(timeout=15) == -signal.SIGKILL
        before_kill.update(acknowledged)
    in_doubt = requests - len(acknowledged)
    REPLAYED.clear()
    with seawall_serve(tmp_path, port=port, **settings) as server:
        server.wait_until_ready()
        retries = await _settle(server, keys, acknowledged)
        committed_unanswered = len(REPLAYED)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
            for key, case_id in before_kill.items():
                replay = await _create(client, key)
                assert replay == case_id, f"key {key} now answers another case"
        applied = await _until_applied(url, requests)
        server.stop()

    cases, events = await _stored(url)
    assert len(cases) == requests
    assert set(cases.values()) == {1}, "a key created more than one case"
    assert set(events.values()) == {1}, "a case has more than one case.created event"
    assert set(events) == set(acknowledged.values())
    assert len(applied) == requests
    assert set(applied.values()) == {1}, "a case.created event was applied twice"
    figures = {
        "requests": requests,
        "kills": kills,
        "acknowledged_before_kills": len(before_kill),
        "in_doubt": in_doubt,
        "retries": retries,
        "committed_but_unanswered": committed_unanswered,
        "lost": requests - len(cases),
        "duplicated": sum(count - 1 for count in cases.values()),
        "events_applied": len(applied),
        "applied_twice": sum(count - 1 for count in applied.values()),
    }
    print(f"\nreliability ({url.split(':', 1)[0]}): {figures}")
    return figures


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database the killed servers share: a SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/seawall.db"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


async def test_a_killed_server_loses_no_acknowledged_case_and_doubles_none(
    tmp_path: Path, database_url: str
) -> None:
    figures = await _run(tmp_path, database_url, requests=200, kills=1)

    assert figures["lost"] == 0
    assert figures["duplicated"] == 0


@pytest.mark.slow
async def test_repeated_kills_under_load_lose_nothing_and_double_nothing(
    tmp_path: Path, database_url: str
) -> None:
    figures = await _run(tmp_path, database_url, requests=3000, kills=5)

    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
