"""The database in ``/health/dependencies``: a ping, and on SQLite how busy its writer was."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from seawall.app import create_app
from seawall.app._health import WRITE_TURN_BUSY_WARNING, _DatabaseCheck
from seawall.config import Settings
from seawall.db import Database

NEW_CASE = {"title": "Printer on fire", "priority": "high", "customer_id": "c-1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_first_check_only_pings_then_each_reports_the_writer_since_the_last(
    database: Database,
) -> None:
    clock = Clock()
    check = _DatabaseCheck(database, clock=clock)

    first = await check.check()
    stats = database.write_turn_stats
    stats.acquired += 50
    stats.held_seconds += 4.0
    stats.waited_seconds += 0.5
    clock.now += 10.0
    second = await check.check()

    assert first.healthy
    assert first.details == {"backend": database.dialect}
    assert first.warnings == ()
    assert second.healthy
    if database.dialect != "sqlite":  # one writer at a time is SQLite's alone
        assert second.details == {"backend": database.dialect}
        return
    assert second.details["write_turn"] == {
        "busy": 0.4,
        "turns_per_second": 5.0,
        "wait_ms": 10.0,
        "timeouts": 0,
        "seconds": 10.0,
    }
    assert second.warnings == ()


async def test_a_busy_sqlite_writer_and_writes_that_gave_up_are_warnings_not_a_failure(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path}/busy.db")
    clock = Clock()
    check = _DatabaseCheck(database, clock=clock)
    try:
        await check.check()
        stats = database.write_turn_stats
        stats.acquired += 900
        stats.held_seconds += 9.5
        stats.timeouts += 3
        stats.waited_seconds += 30.0
        clock.now += 10.0
        busy = await check.check()
        clock.now += 10.0  # then a quiet interval
        quiet = await check.check()
    finally:
        await database.dispose()

    assert busy.status == "healthy"
    assert busy.details["write_turn"]["busy"] == 0.95 >= WRITE_TURN_BUSY_WARNING
    assert busy.details["write_turn"]["timeouts"] == 3
    assert busy.details["write_turn"]["wait_ms"] == round(30.0 / 903 * 1000, 2)
    assert len(busy.warnings) == 2
    assert "busy 95% of the last 10 s" in busy.warnings[0]
    assert "3 write(s) gave up" in busy.warnings[1]
    assert quiet.details["write_turn"]["busy"] == 0.0
    assert quiet.warnings == ()


async def test_an_unreachable_database_is_unhealthy_without_writer_figures(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    database = Database(f"sqlite:///{tmp_path}/a-directory")  # SQLite cannot open it
    check = _DatabaseCheck(database)
    threads = set(threading.enumerate())
    try:
        results = [await check.check(), await check.check()]
    finally:
        await database.dispose()
        # aiosqlite stops the thread of a connection that failed to open with a
        # future of this loop: let it finish while the loop still runs.
        for _ in range(500):
            if not [
                t for t in set(threading.enumerate()) - threads if "_connection_worker" in t.name
            ]:
                break
            await asyncio.sleep(0.01)

    for result in results:
        assert result.status == "unhealthy"
        assert result.critical
        assert "write_turn" not in result.details
        assert result.error


async def test_the_service_reports_its_writer_after_real_writes(
    settings: Settings, database: Database
) -> None:
    app = create_app(
        settings.model_copy(update={"health_interval_seconds": 0.05}), database=database
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        created = await client.post("/cases", json=NEW_CASE, headers={"Idempotency-Key": "h-1"})
        assert created.status_code == 201
        entry: dict[str, Any] = {}
        for _ in range(200):
            body = (await client.get("/health/dependencies")).json()
            entry = body["dependencies"]["database"]
            if database.dialect != "sqlite" or "write_turn" in entry["details"]:
                break
            await asyncio.sleep(0.02)

    assert entry["status"] == "healthy"
    if database.dialect != "sqlite":
        assert "write_turn" not in entry["details"]
        return
    turn = entry["details"]["write_turn"]
    assert set(turn) == {"busy", "turns_per_second", "wait_ms", "timeouts", "seconds"}
    assert 0.0 <= turn["busy"] <= 1.0
    assert turn["timeouts"] == 0
