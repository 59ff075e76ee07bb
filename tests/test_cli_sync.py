"""``seawall sync crm`` against `FakeCRM`: a run, and a process killed between pages resuming."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from seawall.db import Database, cases, outbox
from seawall.testing import FakeCRM
from tests.test_cli_messaging import _seawall

pytestmark = pytest.mark.usefixtures("isolated_environment", "logging_restored")

KILL_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def crm_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCRM]:
    """A fake CRM, named by the SEAWALL_SERVICES__CRM__* variables."""
    with FakeCRM() as fake:
        monkeypatch.setenv("SEAWALL_SERVICES__CRM__BASE_URL", fake.url)
        monkeypatch.setenv("SEAWALL_SERVICES__CRM__TOKEN_URL", f"{fake.url}/oauth/token")
        monkeypatch.setenv("SEAWALL_SERVICES__CRM__CLIENT_ID", "seawall-crm-client")
        monkeypatch.setenv("SEAWALL_SERVICES__CRM__CLIENT_SECRET", "seawall-crm-secret")
        monkeypatch.setenv("SEAWALL_SYNC__CRM__PAGE_SIZE", "50")
        yield fake


async def _synced(url: str) -> tuple[int, int, int]:
    """``case.synced`` events, distinct cases they name, and cases."""
    database = Database(url)
    try:
        async with database.reading() as session:
            synced = sa.select(outbox.c.subject).where(outbox.c.event_type == "case.synced")
            events = await session.scalar(sa.select(sa.func.count()).select_from(synced.subquery()))
            distinct = await session.scalar(
                sa.select(sa.func.count(sa.distinct(outbox.c.subject))).where(
                    outbox.c.event_type == "case.synced"
                )
            )
            total = await session.scalar(sa.select(sa.func.count()).select_from(cases))
        return int(events or 0), int(distinct or 0), int(total or 0)
    finally:
        await database.dispose()


def synced(url: str) -> tuple[int, int, int]:
    return asyncio.run(_synced(url))


def test_sync_crm_applies_the_feed_and_prints_a_summary(
    crm_fake: FakeCRM,
    database_file: str,
) -> None:
    crm_fake.add_tickets(120)

    first = _seawall("sync", "crm")
    again = _seawall("sync", "crm")

    assert first.returncode == 0, first.stderr
    assert "120 changes in 3 pages, 120 applied" in first.stdout
    assert "0 changes in 1 pages, 0 applied" in again.stdout
    assert synced(database_file) == (120, 120, 120)


def test_sync_crm_without_a_crm_says_what_to_set(
    database_file: str,
) -> None:
    result = _seawall("sync", "crm")

    assert result.returncode == 2
    assert "SEAWALL_SERVICES__CRM__BASE_URL" in result.stderr


def test_sync_crm_stops_with_code_1_when_the_crm_refuses(
    crm_fake: FakeCRM,
    database_file: str,
) -> None:
    crm_fake.add_tickets(10)
    crm_fake.chaos.fail_next(1, status=400, path_prefix="/api/v1/changes")

    result = _seawall("sync", "crm", "--full")

    assert result.returncode == 1
    assert "run it again to resume" in result.stderr
    assert synced(database_file) == (0, 0, 0)


def test_a_full_sync_killed_between_pages_resumes_with_every_ticket_applied_once(
    crm_fake: FakeCRM,
    database_file: str,
) -> None:
    crm_fake.add_tickets(1000)
    # Slow pages: the process is surely killed halfway through the feed.
    crm_fake.chaos.latency(0.05, path_prefix="/api/v1/changes")
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", "sync", "crm", "--full"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
        while synced(database_file)[0] < 200:
            assert process.poll() is None, "the sync ended before it could be killed"
            assert time.monotonic() < deadline, "the sync applied nothing in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    at_kill = synced(database_file)
    crm_fake.chaos.latency(0)

    resumed = _seawall("sync", "crm", "--full")

    assert process.returncode == -signal.SIGKILL
    assert 200 <= at_kill[0] < 1000
    assert at_kill[0] % 50 == 0  # whole pages only
    assert resumed.returncode == 0, resumed.stderr
    assert f"{1000 - at_kill[0]} applied" in resumed.stdout
    assert synced(database_file) == (1000, 1000, 1000)
