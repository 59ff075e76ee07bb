"""Helpers of the messaging tests: a recording bus, a settable clock, deliveries, polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from seawall.db import Database, outbox
from seawall.errors import PublishError
from seawall.messaging import Bus, Delivery, Event, Message, Outbox

# Generous bound for background work that normally takes milliseconds.
WAIT_SECONDS = 10.0

only_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Clock:
    """A UTC wall clock that moves only when the test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class RecordingBus(Bus):
    """A bus that keeps what it is given.

    It refuses the ids in `refuse` (until removed) and fails the ids in `flaky`
    that many times before it takes them.
    """

    kind = "recording"

    def __init__(self) -> None:
        self.published: list[Message] = []
        self.attempts: list[str] = []
        self.refuse: dict[str, PublishError] = {}
        self.flaky: dict[str, int] = {}
        self.dead_lettered: list[tuple[str, str, str]] = []

    @property
    def ids(self) -> list[str]:
        return [message.id for message in self.published]

    async def publish(self, message: Message) -> None:
        self.attempts.append(message.id)
        # Let other aggregates' publishes interleave, as with a real broker's round trips.
        await asyncio.sleep(0)
        refusal = self.refuse.get(message.id)
        if refusal is not None:
            raise refusal
        if self.flaky.get(message.id, 0) > 0:
            self.flaky[message.id] -= 1
            raise PublishError("broker hiccup")
        self.published.append(message)

    async def subscribe(
        self,
        durable: str,
        subjects: Sequence[str],
        handler: Callable[[Delivery], Awaitable[None]],
        *,
        concurrency: int = 8,
        ack_wait: float = 30.0,
    ) -> None:
        raise NotImplementedError("a recording bus has no subscribers")

    async def dead_letter(self, durable: str, delivery: Delivery, error: str) -> None:
        self.dead_lettered.append((durable, delivery.message_id, error))


class RecordingDelivery(Delivery):
    """A delivery that remembers how the worker settled it."""

    __slots__ = ("settled",)

    def __init__(self, body: bytes, *, message_id: str, subject: str, attempt: int = 1) -> None:
        super().__init__(message_id=message_id, subject=subject, body=body, attempt=attempt)
        self.settled: list[tuple[str, float | None]] = []

    @classmethod
    def of(cls, message: Message, *, attempt: int = 1) -> RecordingDelivery:
        return cls(message.body, message_id=message.id, subject=message.subject, attempt=attempt)

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float) -> None:
        self.settled.append(("nak", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))

    @property
    def outcome(self) -> str:
        assert len(self.settled) == 1, f"settled {len(self.settled)} times: {self.settled}"
        return self.settled[0][0]


def make_event(
    subject: str = "c1",
    *,
    type: str = "case.updated",
    source: str = "/seawall/cases",
    data: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> Event:
    """A case event about aggregate *subject*."""
    return Event.create(
        type, source=source, subject=subject, data=data, correlation_id=correlation_id
    )


async def add_events(database: Database, *events: Event) -> list[Event]:
    """Commit *events* to the outbox in one transaction, in order."""
    async with database.transaction() as session:
        for event in events:
            await Outbox().add(session, event)
    return list(events)


async def outbox_rows(database: Database) -> list[sa.RowMapping]:
    """Every outbox row, by sequence number."""
    async with database.sessions() as session:
        return list((await session.execute(sa.select(outbox).order_by(outbox.c.seq))).mappings())


async def outbox_row(database: Database, event_id: str) -> sa.RowMapping:
    """The outbox row of *event_id*."""
    async with database.sessions() as session:
        query = sa.select(outbox).where(outbox.c.event_id == event_id)
        return (await session.execute(query)).mappings().one()


async def count_rows(database: Database, table: sa.Table, *where: Any) -> int:
    """How many rows of *table* match *where*."""
    async with database.sessions() as session:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int((await session.execute(query)).scalar_one())


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, timeout: float = WAIT_SECONDS
) -> None:
    """Wait until *check* holds, polling; fail naming *what* after *timeout* seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()
