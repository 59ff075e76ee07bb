"""Every event applied exactly once per group while relays, workers and NATS die.

Events go through the whole path as processes: a producer (this test) writes
them with `Outbox.add` in transactions of 10 to 50; two ``seawall relay``
processes publish them to a private NATS JetStream server (its own port and
store directory); two ``seawall worker`` processes run the two consumer groups
of tests/reliability_consumers.py, each of which writes one row per event into
``reliability_effects``. That table has no unique constraint, so an effect
applied twice is a second row.

While the producer writes at a steady pace, a chaos task kills a relay or a
worker with ``SIGKILL`` at random moments (at least one of each) and starts it
again, and restarts the NATS server (``SIGTERM``, then, after a downtime that
is shorter or longer than the relays' publish timeout, a new server on the same
port and store). When the writes are done, the test waits until the outbox has
nothing left to publish, both groups have an effect for every event and
JetStream has nothing pending or unacknowledged for them, then stops everything
and counts:

- lost: events without an effect in a group;
- duplicated: effects beyond the first, per event and group;
- effects of events nobody wrote, dead letters, outbox rows left unpublished,
  and processes that exited on their own (all must be zero);
- and every relay and worker must still stop with status 0 on ``SIGTERM``.

The figures of a run are printed (``-s``) and recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
import sqlalchemy as sa

from seawall.db import Database, dead_letters, inbox, migrate, outbox
from seawall.messaging import Event, Outbox
from tests.conftest import need_service
from tests.live_server import clean_environment, free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
NATS_SERVER = os.environ.get("SEAWALL_TEST_NATS_SERVER") or shutil.which(
    "nats-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/bin"
)
CONSUMER_MODULE = "tests.reliability_consumers"
GROUPS = ("effects_a", "effects_b")
STREAM = "SEAWALL"
EVENT_TYPE = "reliability.recorded"
EVENT_SOURCE = "/reliability"
EVENTS_PER_AGGREGATE = 4

STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.5
# A process killed less than this long after its start has barely connected:
# the chaos task prefers victims that have been at work for a while.
WARM_SECONDS = 2.0
# How long after its start a relay or worker surely handles SIGTERM (imports, settings,
# connections: about a second on a quiet machine); a stop waits for it.
SIGTERM_READY_SECONDS = 5.0

EFFECTS_DDL = """
CREATE TABLE reliability_effects (
    id bigserial PRIMARY KEY,
    consumer text NOT NULL,
    event_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    applied_at timestamptz NOT NULL
)
"""


@dataclass(frozen=True)
class Plan:
    """One run: how many events, how much chaos, how long to wait.

    Attributes:
        events: events written, in transactions of 10-50.
        kills: SIGKILLs of a relay or a worker (at least one of each when >= 2).
        nats_downtimes: one NATS restart per entry, the server staying down that
            many seconds. Under the publish timeout (5 s), the relays' publishes
            wait in the client's buffer and are acknowledged after the
            reconnection; over it, they fail and the rows are retried with back-off.
        produce_seconds: how long the writes are spread over; the chaos happens
            in that window.
        settle_timeout: how long to wait for the last effect afterwards.
        keep_published: False runs the relays with
            ``SEAWALL_OUTBOX_RETENTION_HOURS=0``: each row is deleted once published.
    """

    events: int
    kills: int
    nats_downtimes: tuple[float, ...]
    produce_seconds: float
    settle_timeout: float
    keep_published: bool = True


@dataclass
class Child:
    """A process the test starts, kills and starts again; output appended to one log."""

    name: str
    command: list[str]
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def died_on_its_own(self) -> int | None:
        """The exit code if the process ended without the test asking it to."""
        if self.process is None or self.process.poll() is None:
            return None
        return self.process.returncode

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, SHUTDOWN_TIMEOUT_SECONDS)

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not end in time; return the exit code.

        A process started moments ago may still be importing, before it handles
        SIGTERM at all (it would die of it): it gets to warm up first, as under a
        supervisor, whose stops reach running processes.
        """
        assert self.process is not None
        await asyncio.sleep(max(0.0, self.started_at + SIGTERM_READY_SECONDS - time.monotonic()))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -signal.SIGKILL

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


async def _wait_for_port(port: int, process: Child) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"nats-server exited at start\n{process.tail()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"nats-server did not listen on {port} within {STARTUP_TIMEOUT_SECONDS}s")


class Cluster:
    """The private NATS server, two relays and two workers of one run."""

    def __init__(self, tmp_path: Path, database_url: str, *, keep_published: bool) -> None:
        self.port = free_port()
        self.nats_url = f"nats://127.0.0.1:{self.port}"
        store = tmp_path / "jetstream"
        store.mkdir()
        self.nats = Child(
            "nats-server",
            [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store)],
            clean_environment(),
            tmp_path,
        )
        env = clean_environment(
            SEAWALL_DATABASE_URL=database_url,
            SEAWALL_NATS_URL=self.nats_url,
            SEAWALL_NATS_STREAM=STREAM,
            SEAWALL_CONSUMER_MODULES=CONSUMER_MODULE,
            SEAWALL_LOG_LEVEL="warning",
            SEAWALL_OUTBOX_RETENTION_HOURS="24" if keep_published else "0",
            PYTHONPATH=str(ROOT),
        )
        seawall = [sys.executable, "-m", "seawall"]
        self.relays = [Child(f"relay-{n}", [*seawall, "relay"], env, tmp_path) for n in (1, 2)]
        self.workers = [Child(f"worker-{n}", [*seawall, "worker"], env, tmp_path) for n in (1, 2)]

    @property
    def seawall(self) -> list[Child]:
        return [*self.relays, *self.workers]

    async def start(self) -> None:
        self.nats.start()
        await _wait_for_port(self.port, self.nats)
        for child in self.seawall:
            child.start()

    async def restart_nats(self, downtime: float) -> None:
        await self.nats.stop()
        await asyncio.sleep(downtime)
        self.nats.start()
        await _wait_for_port(self.port, self.nats)

    def unexpected_exits(self) -> dict[str, int]:
        exits = {c.name: c.died_on_its_own() for c in [self.nats, *self.seawall]}
        return {name: code for name, code in exits.items() if code is not None}

    async def stop(self) -> dict[str, int]:
        """Stop everything with SIGTERM; return the relays' and workers' exit codes."""
        codes = {child.name: await child.stop() for child in self.seawall if child.process}
        if self.nats.process is not None:
            await self.nats.stop()  # nats-server exits with 1 after a SIGTERM
        return codes

    def log_events(self) -> Counter[str]:
        """How often each log event was written by the relays and workers (all lives)."""
        seen: Counter[str] = Counter()
        for child in self.seawall:
            for line in child.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
                    entry = json.loads(line)
                    error = entry.get("error")
                    seen[f"{entry['event']}:{error}" if error else entry["event"]] += 1
        return seen

    def tails(self) -> str:
        return "\n".join(child.tail() for child in [self.nats, *self.seawall])


@contextlib.asynccontextmanager
async def _cluster(
    tmp_path: Path, database_url: str, *, keep_published: bool
) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, database_url, keep_published=keep_published)
    try:
        yield cluster
    finally:
        for child in [*cluster.seawall, cluster.nats]:
            if child.alive():
                assert child.process is not None
                child.process.kill()
                child.process.wait()


async def _produce(database: Database, plan: Plan) -> list[str]:
    """Write *plan.events* events in transactions of 10-50, spread over *plan.produce_seconds*."""
    outbox_writer = Outbox()
    loop = asyncio.get_running_loop()
    began = loop.time()
    ids: list[str] = []
    while len(ids) < plan.events:
        size = min(random.randint(10, 50), plan.events - len(ids))
        batch = [
            Event.create(
                EVENT_TYPE,
                source=EVENT_SOURCE,
                subject=f"aggregate-{n // EVENTS_PER_AGGREGATE}",
                data={"n": n},
            )
            for n in range(len(ids), len(ids) + size)
        ]
        async with database.transaction() as session:
            for event in batch:
                await outbox_writer.add(session, event)
        ids.extend(event.id for event in batch)
        due = began + plan.produce_seconds * len(ids) / plan.events
        await asyncio.sleep(max(0.0, due - loop.time()))
    return ids


async def _chaos(cluster: Cluster, plan: Plan, figures: Counter[str]) -> None:
    """Kill relays and workers and restart NATS at random moments of the production window."""
    victims: list[str] = ["relay", "worker"][: plan.kills]
    victims += [random.choice(["relay", "worker"]) for _ in range(plan.kills - len(victims))]
    downtimes = list(plan.nats_downtimes)
    actions = victims + ["nats"] * len(downtimes)
    random.shuffle(actions)
    if not actions:
        return
    slot = plan.produce_seconds / len(actions)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for index, action in enumerate(actions):
        at = began + slot * (index + random.uniform(0.2, 0.8))
        await asyncio.sleep(max(0.0, at - loop.time()))
        if action == "nats":
            await cluster.restart_nats(downtimes.pop(0))
            figures["nats_restarts"] += 1
            continue
        pool = cluster.relays if action == "relay" else cluster.workers
        warm = [c for c in pool if time.monotonic() - c.started_at >= WARM_SECONDS]
        victim = random.choice(warm or pool)
        await victim.kill()
        figures[f"{action}_kills"] += 1
        await asyncio.sleep(random.uniform(0.1, 1.0))
        victim.start()


@dataclass(frozen=True)
class Broker:
    """What JetStream reports for the run.

    Attributes:
        messages: messages in the events stream (a publish deduplicated by
            ``Nats-Msg-Id`` does not add one).
        pending: per group, messages not yet delivered.
        unacknowledged: per group, deliveries not yet acknowledged.
    """

    messages: int
    pending: dict[str, int]
    unacknowledged: dict[str, int]

    @property
    def idle(self) -> bool:
        return not any(self.pending.values()) and not any(self.unacknowledged.values())


async def _broker(url: str) -> Broker:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2)
        stream = await js.stream_info(STREAM)
        groups = {group: await js.consumer_info(STREAM, group) for group in GROUPS}
    finally:
        await nc.close()
    return Broker(
        messages=stream.state.messages,
        pending={g: info.num_pending or 0 for g, info in groups.items()},
        unacknowledged={g: info.num_ack_pending or 0 for g, info in groups.items()},
    )


_BROKER_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


async def _progress(database: Database) -> tuple[int, dict[str, int]]:
    """Outbox rows not yet published, and per group the events with an effect."""
    async with database.sessions() as session:
        unpublished = await session.scalar(
            sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
        )
        rows = await session.execute(
            sa.text(
                "SELECT consumer, count(DISTINCT event_id) FROM reliability_effects"
                " GROUP BY consumer"
            )
        )
        applied: dict[str, int] = dict(rows.all())
    return int(unpublished or 0), applied


async def _settle(database: Database, cluster: Cluster, plan: Plan) -> Broker | None:
    """Wait until everything is published, applied and acknowledged; None at the deadline."""
    deadline = time.monotonic() + plan.settle_timeout
    while time.monotonic() < deadline and not cluster.unexpected_exits():
        unpublished, applied = await _progress(database)
        if unpublished == 0 and all(applied.get(g, 0) >= plan.events for g in GROUPS):
            with contextlib.suppress(*_BROKER_ERRORS):
                broker = await _broker(cluster.nats_url)
                if broker.idle:
                    return broker
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    return None


async def _count(
    database: Database, produced: list[str], *, keep_published: bool
) -> dict[str, int | float]:
    """Lost and duplicated effects per group, and everything else that must be zero.

    With *keep_published* False every published row is gone, so a row left in
    the outbox counts as a fault and there is no publish delay to read.
    """
    async with database.sessions() as session:
        effects = (
            await session.execute(
                sa.text(
                    "SELECT consumer, event_id, count(*) FROM reliability_effects"
                    " GROUP BY consumer, event_id"
                )
            )
        ).all()
        in_outbox = set((await session.scalars(sa.select(outbox.c.event_id))).all())
        unpublished = await session.scalar(
            sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
        )
        dead = await session.scalar(sa.select(sa.func.count()).select_from(dead_letters))
        inbox_rows: dict[str, int] = dict(
            (
                await session.execute(
                    sa.select(inbox.c.consumer, sa.func.count()).group_by(inbox.c.consumer)
                )
            ).all()
        )
        publish_max = await session.scalar(
            sa.text("SELECT max(extract(epoch FROM published_at - created_at)) FROM outbox")
        )
        # From the event's time (set as the producer wrote it) to its effect's commit.
        effect_max, effect_p99 = (
            await session.execute(
                sa.text(
                    "SELECT max(extract(epoch FROM applied_at - occurred_at)),"
                    " percentile_cont(0.99) WITHIN GROUP"
                    " (ORDER BY extract(epoch FROM applied_at - occurred_at))"
                    " FROM reliability_effects"
                )
            )
        ).one()
    wanted = set(produced)
    counts: dict[str, int | float] = {
        "outbox_unpublished": int(unpublished or 0),
        "dead_letters": int(dead or 0),
        "unknown_effects": 0,
    }
    if keep_published:
        counts["outbox_rows_missing"] = len(wanted - in_outbox)
    else:
        counts["outbox_rows_left"] = len(in_outbox)
    for group in GROUPS:
        mine = {event_id: n for consumer, event_id, n in effects if consumer == group}
        counts[f"lost_{group}"] = len(wanted - set(mine))
        counts[f"duplicated_{group}"] = sum(n - 1 for n in mine.values())
        counts["unknown_effects"] += len(set(mine) - wanted)
        counts[f"inbox_{group}"] = int(inbox_rows.get(group, 0))
    if keep_published:
        counts["publish_delay_max_s"] = round(float(publish_max or 0.0), 1)
    counts["effect_delay_p99_s"] = round(float(effect_p99 or 0.0), 1)
    counts["effect_delay_max_s"] = round(float(effect_max or 0.0), 1)
    counts["lost"] = sum(counts[f"lost_{g}"] for g in GROUPS)
    counts["duplicated"] = sum(counts[f"duplicated_{g}"] for g in GROUPS)
    return counts


async def _prepare(url: str) -> Database:
    database = Database(url)
    await migrate(database)
    async with database.transaction() as session:
        await session.execute(sa.text(EFFECTS_DDL))
    return database


async def _wait_for_groups(cluster: Cluster) -> None:
    """Wait until the workers have created both durable consumers."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(*_BROKER_ERRORS):
            await _broker(cluster.nats_url)
            return
        if cluster.unexpected_exits():
            break
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    pytest.fail(f"the workers did not subscribe both groups\n{cluster.tails()}")


_MUST_BE_ZERO = {
    "lost",
    "duplicated",
    "outbox_rows_missing",
    "outbox_rows_left",
    "outbox_unpublished",
    "dead_letters",
    "unknown_effects",
}


async def _run(tmp_path: Path, url: str, plan: Plan) -> dict[str, int | float]:
    database = await _prepare(url)
    chaos: Counter[str] = Counter()
    try:
        async with _cluster(tmp_path, url, keep_published=plan.keep_published) as cluster:
            await cluster.start()
            await _wait_for_groups(cluster)
            began = time.monotonic()
            produced, _ = await asyncio.gather(
                _produce(database, plan), _chaos(cluster, plan, chaos)
            )
            broker = await _settle(database, cluster, plan)
            duration = time.monotonic() - began
            exited = cluster.unexpected_exits()
            log_events = cluster.log_events()
            tails = cluster.tails()
            stop_codes = await cluster.stop()
        counts = await _count(database, produced, keep_published=plan.keep_published)
    finally:
        await database.dispose()
    figures: dict[str, int | float] = {
        "events": plan.events,
        "kills": chaos["relay_kills"] + chaos["worker_kills"],
        "relay_kills": chaos["relay_kills"],
        "worker_kills": chaos["worker_kills"],
        "nats_restarts": chaos["nats_restarts"],
        **counts,
        "stream_messages": broker.messages if broker else -1,
        "duration_s": round(duration, 1),
    }
    print(f"\nmessaging reliability: {figures}")
    print(f"log events: {dict(log_events.most_common(12))}")
    problems = {k: v for k, v in figures.items() if k in _MUST_BE_ZERO and v}
    assert not exited, f"processes exited on their own: {exited}\n{tails}"
    unclean = {name: code for name, code in stop_codes.items() if code != 0}
    assert not unclean, f"processes did not stop cleanly on SIGTERM: {unclean}\n{tails}"
    assert not problems, f"{problems}\n{figures}\n{tails}"
    assert broker is not None, f"not settled in {plan.settle_timeout}s: {figures}\n{tails}"
    return figures


@pytest.fixture(autouse=True)
def _nats_server_installed() -> None:
    if NATS_SERVER is None or not Path(NATS_SERVER).is_file():
        need_service("NATS", f"no nats-server binary ({NATS_SERVER}; SEAWALL_TEST_NATS_SERVER)")


_RETENTIONS = pytest.mark.parametrize(
    "keep_published", [True, False], ids=["rows-kept", "rows-deleted"]
)


@_RETENTIONS
async def test_events_survive_killed_relays_workers_and_a_nats_restart(
    tmp_path: Path, fresh_postgres_url: str, keep_published: bool
) -> None:
    plan = Plan(
        events=1000,
        kills=3,
        nats_downtimes=(6.0,),
        produce_seconds=12.0,
        settle_timeout=120.0,
        keep_published=keep_published,
    )

    figures = await _run(tmp_path, fresh_postgres_url, plan)

    assert figures["lost"] == 0
    assert figures["duplicated"] == 0


@pytest.mark.slow
@_RETENTIONS
async def test_ten_thousand_events_through_repeated_kills_and_two_nats_restarts(
    tmp_path: Path, fresh_postgres_url: str, keep_published: bool
) -> None:
    plan = Plan(
        events=10_000,
        kills=8,
        nats_downtimes=(1.0, 7.0),
        produce_seconds=60.0,
        settle_timeout=600.0,
        keep_published=keep_published,
    )

    figures = await _run(tmp_path, fresh_postgres_url, plan)

    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
    assert figures["kills"] >= 6
    assert figures["nats_restarts"] == 2
