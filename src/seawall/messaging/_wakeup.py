"""Wake the relays of this process when a transaction that wrote outbox rows commits.

`Outbox.add` marks its session; SQLAlchemy's ``after_commit`` event then sets
every registered waiter, so an in-process relay starts publishing right after
the commit instead of at its next poll. A commit held for a group commit on
SQLite (`seawall.db.held_commit`) sets them once the group is written. Relays in
other processes hear about the commit through PostgreSQL's ``NOTIFY`` (or their
poll on SQLite).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

from seawall.db import held_commit


class Settable(Protocol):
    """What a waiter is: an `asyncio.Event`, or the relay's `Signal`."""

    def set(self) -> None: ...


_MARK = "seawall_outbox_written"
_lock = threading.Lock()
_waiters: set[tuple[asyncio.AbstractEventLoop, Settable]] = set()


def mark(session: Session) -> None:
    """Note that *session*'s transaction wrote outbox rows."""
    session.info[_MARK] = True


def register(signal: Settable) -> None:
    """Set *signal* (in the running loop) whenever an outbox write commits in this process."""
    with _lock:
        _waiters.add((asyncio.get_running_loop(), signal))


def unregister(signal: Settable) -> None:
    """Stop setting *signal*."""
    with _lock:
        for entry in [entry for entry in _waiters if entry[1] is signal]:
            _waiters.discard(entry)


def notify() -> None:
    """Set every registered waiter, from any thread."""
    with _lock:
        waiters = list(_waiters)
    for loop, signal in waiters:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            signal.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(signal.set)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_MARK, False):
        if (held := held_commit(session)) is None:
            notify()
        else:  # held for a group commit on SQLite: not written yet
            held.add_done_callback(_notify_when_committed)


def _notify_when_committed(_held: asyncio.Future[None]) -> None:
    notify()  # even if its caller stopped waiting: the group commits all the same


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_MARK, None)
