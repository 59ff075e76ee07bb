"""The two consumer groups of tests/test_messaging_reliability.py.

`seawall worker` subprocesses load this module through
``SEAWALL_CONSUMER_MODULES=tests.reliability_consumers``. The test process must
not import it: its ``@consumer`` handlers would join the global registry and
run in every later in-process worker.

Each group applies one effect per event: a row in ``reliability_effects``,
written in the handler's session, so it commits with the group's inbox row.
The table has no unique constraint: an event applied twice shows as two rows.
Group A takes its deliveries one per transaction (`Consumer`'s defaults); group
B batches them (100 in flight, up to 100 per transaction), as the service's
activity consumer does, so both ways are killed mid-transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.messaging import Event, consumer

SUBJECTS = ["seawall.reliability.>"]
# Short, so that deliveries a killed worker held come back within the run; the
# worker's heartbeat keeps slow handlers' deliveries from being redelivered early.
ACK_WAIT_SECONDS = 5.0

_INSERT = sa.text(
    "INSERT INTO reliability_effects (consumer, event_id, occurred_at, applied_at)"
    " VALUES (:consumer, :event_id, :occurred_at, now())"
)


async def _apply(group: str, event: Event, session: AsyncSession) -> None:
    parameters = {"consumer": group, "event_id": event.id, "occurred_at": event.time}
    await session.execute(_INSERT, parameters)


@consumer(durable="effects_a", subjects=SUBJECTS, ack_wait=ACK_WAIT_SECONDS)
async def apply_a(event: Event, session: AsyncSession) -> None:
    """Record group A's effect of *event*."""
    await _apply("effects_a", event, session)


@consumer(
    durable="effects_b",
    subjects=SUBJECTS,
    ack_wait=ACK_WAIT_SECONDS,
    concurrency=100,
    batch_size=100,
)
async def apply_b(event: Event, session: AsyncSession) -> None:
    """Record group B's effect of *event*."""
    await _apply("effects_b", event, session)
