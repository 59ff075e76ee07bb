"""The messaging commands: ``seawall dlq``, ``seawall outbox``, ``seawall relay`` and ``worker``.

They run in-process through typer's `CliRunner` (a subprocess costs a second or
more each) on a migrated SQLite file that the test fills beforehand. Each command
configures process-wide logging, so a fixture puts the test process's logging back
afterwards; one test runs the real process to check its exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from seawall.cli import app
from seawall.db import Database, dead_letters, outbox
from seawall.errors import PublishError
from seawall.messaging import DeadLetters, Event, Outbox, OutboxRelay
from tests.messaging.conftest import RecordingBus

COMMAND_TIMEOUT_SECONDS = 60
T = TypeVar("T")

pytestmark = pytest.mark.usefixtures("isolated_environment", "logging_restored")


class _Result:
    """What a command did: exit status and output, as a process would report them."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _seawall(*args: str, stdin: str | None = None) -> _Result:
    result = CliRunner().invoke(app, list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Result(result.exit_code, result.stdout, result.stderr)


def _process(*args: str) -> _Result:
    done = subprocess.run(
        [sys.executable, "-m", "seawall", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    return _Result(done.returncode, done.stdout, done.stderr)


def _one_error_line(result: _Result) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seawall: ")
    return lines[0]


def _with(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(url)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def _event(subject: str = "c1") -> Event:
    return Event.create("case.updated", source="/seawall/cases", subject=subject, data={"n": 1})


def _dead_letter(url: str, *, consumer: str = "tests", error: str = "boom") -> int:
    event = _event()

    async def work(database: Database) -> int:
        letters = DeadLetters(database)
        async with database.transaction() as session:
            await letters.record(
                session,
                consumer=consumer,
                message_id=event.id,
                subject="seawall.cases.case.updated",
                event_type=event.type,
                body=event.model_dump_json(exclude_none=True),
                error=error,
                attempt=5,
            )
        [letter] = await letters.list(consumer=consumer, state=None, limit=1)
        return letter.id

    return _with(url, work)


def _states(url: str) -> dict[int, str]:
    async def work(database: Database) -> dict[int, str]:
        async with database.sessions() as session:
            rows = await session.execute(sa.select(dead_letters.c.id, dead_letters.c.state))
            return {row.id: row.state for row in rows}

    return _with(url, work)


# -- dlq ----------------------------------------------------------------------------------


def test_dlq_list_says_so_when_there_are_no_dead_letters(database_file: str) -> None:
    result = _seawall("dlq", "list")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no dead letters"  # and no empty table above it


def test_dlq_list_shows_dead_letters_as_a_table_and_as_json_lines(database_file: str) -> None:
    first = _dead_letter(database_file, consumer="audit", error="KeyError: 'x'")
    second = _dead_letter(database_file, consumer="search")

    table = _seawall("dlq", "list")
    lines = _seawall("dlq", "list", "--json")
    only_audit = _seawall("dlq", "list", "--json", "--consumer", "audit")

    assert table.returncode == 0, table.stderr
    assert "audit" in table.stdout
    assert "KeyError" in table.stdout
    assert lines.returncode == 0, lines.stderr
    summaries = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [s["id"] for s in summaries] == [second, first]
    assert summaries[1]["consumer"] == "audit"
    assert summaries[1]["error"] == "KeyError: 'x'"
    assert summaries[1]["state"] == "dead"
    assert summaries[1]["attempts"] == 5
    assert "body" not in summaries[1]
    assert [json.loads(line)["id"] for line in only_audit.stdout.splitlines()] == [first]


def test_dlq_list_filters_by_state(database_file: str) -> None:
    dead = _dead_letter(database_file)
    waiting = _dead_letter(database_file)
    _with(database_file, lambda db: DeadLetters(db).request_replay([waiting]))

    default = _seawall("dlq", "list", "--json")
    everything = _seawall("dlq", "list", "--json", "--state", "all")
    bad = _seawall("dlq", "list", "--state", "zombie")

    assert [json.loads(line)["id"] for line in default.stdout.splitlines()] == [dead]
    assert [json.loads(line)["id"] for line in everything.stdout.splitlines()] == [waiting, dead]
    assert bad.returncode == 2
    assert "--state must be one of" in _one_error_line(bad)


def test_dlq_show_prints_body_error_and_history(database_file: str) -> None:
    letter_id = _dead_letter(database_file, error="ValueError: nope")

    result = _seawall("dlq", "show", str(letter_id))

    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    assert view["id"] == letter_id
    assert view["subject"] == "seawall.cases.case.updated"
    assert view["body"]["type"] == "case.updated"
    assert view["body"]["id"] == view["message_id"]
    assert view["error"] == "ValueError: nope"
    assert [entry["attempt"] for entry in view["history"]] == [5]
    assert "created_at" in view


def test_dlq_show_prints_a_body_that_is_not_json_as_text(database_file: str) -> None:
    async def work(database: Database) -> int:
        letters = DeadLetters(database)
        async with database.transaction() as session:
            await letters.record(
                session,
                consumer="tests",
                message_id="garbage-1",
                subject="seawall.cases.case.updated",
                event_type=None,
                body="<not json>",
                error="not a CloudEvents envelope: body: Invalid JSON",
                attempt=1,
            )
        [letter] = await letters.list()
        return letter.id

    letter_id = _with(database_file, work)

    result = _seawall("dlq", "show", str(letter_id))

    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["body"] == "<not json>"
    assert view["event_type"] is None


def test_dlq_show_of_a_missing_id_fails_with_one_line(database_file: str) -> None:
    result = _seawall("dlq", "show", "4242")

    assert result.returncode == 1
    assert result.stdout == ""
    assert _one_error_line(result) == "seawall: no dead letter 4242"


@pytest.mark.parametrize("command", ["replay", "purge"])
def test_dlq_replay_and_purge_need_ids_a_consumer_or_all(database_file: str, command: str) -> None:
    letter_id = _dead_letter(database_file)

    result = _seawall("dlq", command)

    assert result.returncode == 2
    assert "name dead letter ids, or --consumer NAME, or --all" in _one_error_line(result)
    assert _states(database_file) == {letter_id: "dead"}


def test_dlq_replay_queues_the_chosen_dead_letters(database_file: str) -> None:
    a1, a2 = _dead_letter(database_file, consumer="a"), _dead_letter(database_file, consumer="a")
    b1, b2 = _dead_letter(database_file, consumer="b"), _dead_letter(database_file, consumer="b")

    by_id = _seawall("dlq", "replay", str(a1))
    by_consumer = _seawall("dlq", "replay", "--consumer", "b")
    everything = _seawall("dlq", "replay", "--all")

    assert by_id.stdout.strip() == "1 dead letter(s) queued for replay"
    assert by_consumer.stdout.strip() == "2 dead letter(s) queued for replay"
    assert everything.stdout.strip() == "1 dead letter(s) queued for replay"
    assert _states(database_file) == dict.fromkeys([a1, a2, b1, b2], "replay")


@pytest.mark.parametrize("command", ["replay", "purge"])
def test_dlq_replay_and_purge_of_ids_that_are_not_there_fail(
    database_file: str, command: str
) -> None:
    letter_id = _dead_letter(database_file)

    confirm = ["--yes"] if command == "purge" else []
    result = _seawall("dlq", command, str(letter_id), "4242", *confirm)

    assert result.returncode == 1
    assert result.stdout.strip().startswith("1 dead letter(s)")
    assert _one_error_line(result).startswith("seawall: 1 of the 2 ids given are not dead letters")
    alone = _seawall("dlq", command, "4242", *confirm)
    assert alone.returncode == 1
    assert _one_error_line(alone).startswith("seawall: no dead letter 4242 ")


def test_dlq_purge_asks_first_and_deletes_when_confirmed(database_file: str) -> None:
    kept, dropped = _dead_letter(database_file), _dead_letter(database_file)

    declined = _seawall("dlq", "purge", str(dropped), stdin="n\n")
    confirmed = _seawall("dlq", "purge", str(dropped), stdin="y\n")

    assert declined.returncode == 1
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.strip().endswith("1 dead letter(s) purged")
    assert _states(database_file) == {kept: "dead"}


def test_dlq_purge_with_yes_by_consumer_and_all(database_file: str) -> None:
    _dead_letter(database_file, consumer="a")
    _dead_letter(database_file, consumer="b")
    _dead_letter(database_file, consumer="b")

    by_consumer = _seawall("dlq", "purge", "--consumer", "b", "--yes")
    everything = _seawall("dlq", "purge", "--all", "--yes")

    assert by_consumer.stdout.strip() == "2 dead letter(s) purged"
    assert everything.stdout.strip() == "1 dead letter(s) purged"
    assert _states(database_file) == {}


def test_dlq_on_an_unmigrated_database_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")

    result = _seawall("dlq", "list")

    assert result.returncode == 1
    assert "is the schema migrated?" in _one_error_line(result)


# -- outbox --------------------------------------------------------------------------------


def _fill_outbox(url: str) -> list[Event]:
    """Four events: one published, one parked, one retrying, one waiting."""
    events = [_event(f"c{i}") for i in range(4)]
    published, parked, retrying, _waiting = events

    async def work(database: Database) -> None:
        async with database.transaction() as session:
            for event in (published, parked, retrying):
                await Outbox().add(session, event)
        bus = RecordingBus()
        bus.refuse[parked.id] = PublishError("too large", permanent=True)
        bus.refuse[retrying.id] = PublishError("down")
        await OutboxRelay(database, bus, retry_base=600, retry_max=600).relay_once()
        async with database.transaction() as session:
            await Outbox().add(session, _waiting)

    _with(url, work)
    return events


def test_outbox_status_reports_the_lag_as_json_and_as_a_table(database_file: str) -> None:
    _fill_outbox(database_file)

    as_json = _seawall("outbox", "status", "--json")
    as_table = _seawall("outbox", "status")

    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert (view["pending"], view["retrying"], view["parked"]) == (2, 1, 1)
    assert view["oldest_age_seconds"] >= 0
    assert as_table.returncode == 0, as_table.stderr
    for measure in ("pending", "oldest_age_seconds", "retrying", "parked"):
        assert measure in as_table.stdout


def test_outbox_status_of_an_empty_outbox(database_file: str) -> None:
    result = _seawall("outbox", "status", "--json")

    assert json.loads(result.stdout) == {
        "pending": 0,
        "oldest_age_seconds": 0.0,
        "retrying": 0,
        "parked": 0,
    }


def test_outbox_requeue_puts_parked_events_back(database_file: str) -> None:
    parked = _fill_outbox(database_file)[1]

    async def seq_of_parked(database: Database) -> int:
        async with database.sessions() as session:
            query = sa.select(outbox.c.seq).where(outbox.c.event_id == parked.id)
            return int((await session.execute(query)).scalar_one())

    seq = _with(database_file, seq_of_parked)

    other = _seawall("outbox", "requeue", str(seq + 100))
    chosen = _seawall("outbox", "requeue", str(seq))
    none_left = _seawall("outbox", "requeue")
    status = _seawall("outbox", "status", "--json")

    assert other.stdout.strip() == "0 event(s) requeued"
    assert chosen.stdout.strip() == "1 event(s) requeued"
    assert none_left.stdout.strip() == "0 event(s) requeued"
    assert json.loads(status.stdout)["parked"] == 0
    assert json.loads(status.stdout)["pending"] == 3


# -- relay and worker ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_relay_and_worker_need_nats_and_say_so_in_one_line(
    database_file: str, command: str
) -> None:
    result = _seawall(command)

    assert result.returncode == 2
    assert result.stdout == ""
    line = _one_error_line(result)
    assert "SEAWALL_NATS_URL is not set" in line
    assert "seawall serve" in line


def test_the_relay_process_exits_with_status_2_without_nats(database_file: str) -> None:
    result = _process("relay")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "SEAWALL_NATS_URL is not set" in _one_error_line(result)
