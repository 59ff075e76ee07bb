"""`NatsBus` on a real JetStream: streams, publishing, consumers, dead letters, outages.

Every test works in a stream and under a subject prefix of its own (streams with
overlapping subjects cannot coexist on one server) and deletes its streams
afterwards. Outages are played on a private nats-server started on a free port.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from seawall.config import Settings
from seawall.db import Database, inbox
from seawall.errors import PublishError, StreamMismatch
from seawall.messaging import (
    Consumer,
    Delivery,
    Event,
    EventHandler,
    Message,
    Messaging,
    NatsBus,
    Outbox,
    OutboxRelay,
    Worker,
    outbox_lag,
    subject_for,
)
from seawall.messaging._bus import Handler
from seawall.messaging._nats import _ack_refusal
from tests.conftest import need_service
from tests.messaging.nats_helpers import (
    NATS_SERVER,
    NATS_URL,
    WAIT_SECONDS,
    PrivateNatsServer,
    delete_streams,
    eventually,
    free_port,
    nats_reachable,
)

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# How long a test waits for something that should happen in about a second
# (a refused connection, one relay round); shorter than WAIT_SECONDS to keep a
# failing run short.
PROMPTLY = 5.0


class NatsTest:
    """The stream, subject prefix and buses of one test on one server."""

    def __init__(self, url: str, *, private: bool = False) -> None:
        token = uuid.uuid4().hex[:12]
        self.url = url
        self.private = private
        self.stream = f"T{token}"
        self.prefix = f"t{token}"
        self._buses: list[NatsBus] = []
        self._streams: set[str] = set()
        self._nc: Client | None = None

    def bus(self, **options: Any) -> NatsBus:
        """A `NatsBus` (not started) on this test's stream and prefix unless *options* say."""
        options = {
            "stream": self.stream,
            "subject_prefix": self.prefix,
            "fetch_timeout": 0.5,
            "publish_timeout": 2.0,
            **options,
        }
        bus = NatsBus(self.url, **options)
        self._buses.append(bus)
        self._streams.update({bus.stream, bus.dlq_stream})
        return bus

    async def started(self, **options: Any) -> NatsBus:
        """A started `NatsBus`; see `bus`."""
        bus = self.bus(**options)
        await bus.start()
        return bus

    async def jetstream(self) -> JetStreamContext:
        """A plain JetStream client, for looking at the server behind seawall's back."""
        if self._nc is None:
            self._nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=2)
        return self._nc.jetstream()

    async def max_payload(self) -> int:
        await self.jetstream()
        assert self._nc is not None
        return self._nc.max_payload

    async def messages(self, stream: str | None = None) -> int:
        """How many messages *stream* (this test's events stream by default) holds."""
        info = await (await self.jetstream()).stream_info(stream or self.stream)
        return info.state.messages

    async def close(self) -> None:
        for bus in self._buses:
            await bus.close()
        if self._nc is not None:
            await self._nc.close()
        if self._streams and not self.private:  # a private server's store goes with tmp_path
            await delete_streams(self.url, *sorted(self._streams))


@pytest.fixture
async def shared_url() -> str:
    """The URL of the test NATS server, or skip (locally) / fail (under CI) when it is down."""
    reason = await nats_reachable(NATS_URL)
    if reason is not None:
        need_service("NATS", reason)
    return NATS_URL


@pytest.fixture
async def nt(shared_url: str) -> AsyncIterator[NatsTest]:
    """This test's stream and prefix on the test NATS server; both streams deleted afterwards."""
    test = NatsTest(shared_url)
    yield test
    await test.close()


@pytest.fixture
def nats_server_binary() -> str:
    """The nats-server executable, for tests that start and stop a server of their own."""
    if NATS_SERVER is None or not Path(NATS_SERVER).exists():
        need_service("nats-server", "no nats-server binary (set SEAWALL_TEST_NATS_SERVER)")
    assert NATS_SERVER is not None
    return NATS_SERVER


@pytest.fixture
def private_server(nats_server_binary: str, tmp_path: Path) -> Iterator[PrivateNatsServer]:
    """A nats-server of this test's own (not started), stopped afterwards."""
    server = PrivateNatsServer(nats_server_binary, tmp_path / "jetstream")
    yield server
    server.stop()


@pytest.fixture
async def private_nt(private_server: PrivateNatsServer) -> AsyncIterator[NatsTest]:
    """The private server, started, and this test's streams on it (deleted afterwards)."""
    private_server.start()
    test = NatsTest(private_server.url, private=True)
    yield test
    await test.close()


def case_event(case_id: str, type: str = "case.created", **data: Any) -> Event:
    """A case event about *case_id*."""
    return Event.create(type, source="/seawall/cases", subject=case_id, data=data or None)


def message_of(event: Event, prefix: str) -> Message:
    """The bus message of *event*, as the relay builds it."""
    return Message(
        id=event.id,
        subject=subject_for(event, prefix=prefix),
        body=event.model_dump_json(exclude_none=True).encode(),
    )


async def add_to_outbox(database: Database, events: Sequence[Event]) -> None:
    async with database.transaction() as session:
        for event in events:
            await Outbox().add(session, event)


async def inbox_ids(database: Database, durable: str) -> list[str]:
    async with database.sessions() as session:
        query = sa.select(inbox.c.message_id).where(inbox.c.consumer == durable)
        return sorted((await session.execute(query)).scalars())


async def settled(bus: NatsBus, *durables: str) -> bool:
    """Whether every group has no message waiting or unacknowledged."""
    for durable in durables:
        if await bus.consumer_lag(durable) != {"pending": 0, "ack_pending": 0}:
            return False
    return True


class Recorder:
    """Handlers that record which events they were given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (name, event id)

    def handler(self, name: str) -> EventHandler:
        async def handle(event: Event, session: AsyncSession) -> None:
            self.seen.append((name, event.id))

        return handle

    def ids(self, *names: str) -> list[str]:
        return sorted(event_id for name, event_id in self.seen if name in names)

    async def count(self) -> int:
        return len(self.seen)


# -- streams -------------------------------------------------------------------------


async def test_start_creates_file_streams_for_events_and_dead_letters(nt: NatsTest) -> None:
    bus = nt.bus(duplicate_window=90.0)

    await bus.start()

    js = await nt.jetstream()
    events = (await js.stream_info(nt.stream)).config
    dead = (await js.stream_info(f"{nt.stream}_DLQ")).config
    assert events.subjects == [f"{nt.prefix}.>"]
    assert dead.subjects == [f"{bus.dlq_prefix}.>"]
    assert (events.storage, dead.storage) == (api.StorageType.FILE, api.StorageType.FILE)
    assert events.duplicate_window == pytest.approx(90.0)
    assert (events.max_age or 0) > 0


async def test_start_accepts_streams_that_already_match(nt: NatsTest) -> None:
    first = await nt.started()
    await first.publish(message_of(case_event("c1"), nt.prefix))
    await first.close()

    second = await nt.started()

    await second.publish(message_of(case_event("c2"), nt.prefix))
    assert await nt.messages() == 2


async def test_start_refuses_a_stream_with_other_subjects_and_leaves_it_alone(
    nt: NatsTest,
) -> None:
    js = await nt.jetstream()
    await js.add_stream(
        name=nt.stream, subjects=[f"{nt.prefix}.cases.>"], storage=api.StorageType.FILE
    )
    bus = nt.bus()

    with pytest.raises(StreamMismatch) as caught:
        await bus.start()

    assert caught.value.stream == nt.stream
    assert caught.value.differences == {"subjects": ([f"{nt.prefix}.cases.>"], [f"{nt.prefix}.>"])}
    assert f"{nt.prefix}.cases.>" in str(caught.value)
    config = (await js.stream_info(nt.stream)).config
    assert config.subjects == [f"{nt.prefix}.cases.>"]


async def test_start_refuses_a_stream_with_other_storage_and_leaves_it_alone(
    nt: NatsTest,
) -> None:
    js = await nt.jetstream()
    await js.add_stream(name=nt.stream, subjects=[f"{nt.prefix}.>"], storage=api.StorageType.MEMORY)
    bus = nt.bus()

    with pytest.raises(StreamMismatch) as caught:
        await bus.start()

    assert caught.value.stream == nt.stream
    assert caught.value.differences == {"storage": ("memory", "file")}
    assert "storage" in str(caught.value)
    config = (await js.stream_info(nt.stream)).config
    assert config.storage == api.StorageType.MEMORY


async def test_buses_with_their_own_stream_and_prefix_share_one_server(
    nt: NatsTest, shared_url: str
) -> None:
    other = NatsTest(shared_url)
    try:
        first = await nt.started()

        second = await other.started()

        await first.publish(message_of(case_event("c1"), nt.prefix))
        await second.publish(message_of(case_event("c1"), other.prefix))
        assert (await nt.messages(), await other.messages()) == (1, 1)
    finally:
        await other.close()


# -- publishing ----------------------------------------------------------------------


async def test_publish_sets_the_message_id_so_a_repeat_is_stored_once(nt: NatsTest) -> None:
    bus = await nt.started()
    message = message_of(case_event("c1"), nt.prefix)

    await bus.publish(message)
    await bus.publish(message)

    assert await nt.messages() == 1
    stored = await (await nt.jetstream()).get_msg(nt.stream, 1)
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == message.id
    assert stored.data == message.body


async def test_a_body_over_max_payload_is_refused_for_good(nt: NatsTest) -> None:
    bus = await nt.started()
    limit = await nt.max_payload()
    too_big = Message(id="big", subject=f"{nt.prefix}.cases.case.created", body=b"x" * (limit + 1))

    with pytest.raises(PublishError) as caught:
        await bus.publish(too_big)

    assert caught.value.permanent
    await bus.publish(message_of(case_event("c1"), nt.prefix))
    assert await nt.messages() == 1


async def test_refusing_many_oversized_bodies_leaves_publishing_working(nt: NatsTest) -> None:
    # nats-py's publish_async takes one of its 4000 in-flight slots before its own
    # size check raises; a bus must not let parked events use them up.
    bus = await nt.started(publish_timeout=1.0)
    limit = await nt.max_payload()
    too_big = Message(id="big", subject=f"{nt.prefix}.cases.case.created", body=b"x" * (limit + 1))

    for _ in range(4001):
        with pytest.raises(PublishError) as caught:
            await bus.publish(too_big)
        assert caught.value.permanent, caught.value

    await bus.publish(message_of(case_event("c1"), nt.prefix))
    assert await nt.messages() == 1


async def test_a_body_that_fits_only_without_its_headers_is_refused_for_good(
    nt: NatsTest,
) -> None:
    # The server counts headers (Nats-Msg-Id, correlation id) in max_payload; nats-py
    # checks only the body, and the server answers an oversized HPUB by closing the
    # connection.
    bus = await nt.started()
    limit = await nt.max_payload()
    subject = f"{nt.prefix}.cases.case.created"
    borderline = Message(id=str(uuid.uuid4()), subject=subject, body=b"x" * (limit - 16))

    with pytest.raises(PublishError) as caught:
        await bus.publish(borderline)

    assert caught.value.permanent
    await bus.publish(message_of(case_event("c1"), nt.prefix))
    assert await nt.messages() == 1


async def test_the_relay_parks_an_oversized_event_and_publishes_the_rest(
    database: Database, nt: NatsTest
) -> None:
    bus = await nt.started()
    huge = case_event("c1", blob="x" * await nt.max_payload())
    after_it = case_event("c1", "case.updated")
    elsewhere = case_event("c2")
    await add_to_outbox(database, [huge, after_it, elsewhere])
    relay = OutboxRelay(database, bus, subject_prefix=nt.prefix)

    published = await relay.relay_once()

    assert published == 2
    lag = await outbox_lag(database)
    assert (lag.pending, lag.parked) == (0, 1)
    assert await nt.messages() == 2
    js = await nt.jetstream()
    stored = [(await js.get_msg(nt.stream, seq)).headers or {} for seq in (1, 2)]
    assert {headers.get("Nats-Msg-Id") for headers in stored} == {after_it.id, elsewhere.id}


async def test_a_batch_larger_than_the_window_waits_for_room_and_is_all_stored(
    nt: NatsTest,
) -> None:
    bus = await nt.started(max_in_flight=7)
    first = [message_of(case_event(f"a{i}"), nt.prefix) for i in range(60)]
    second = [message_of(case_event(f"b{i}"), nt.prefix) for i in range(40)]
    awaiting = bus._acks._awaiting if bus._acks else {}
    most = 0

    async def watch() -> None:  # at every turn of the event loop
        nonlocal most
        while True:
            most = max(most, len(awaiting))
            await asyncio.sleep(0)

    watching = asyncio.ensure_future(watch())
    try:
        results = await asyncio.gather(bus.publish_many(first), bus.publish_many(second))
    finally:
        watching.cancel()

    assert results == [[None] * 60, [None] * 40]
    assert await nt.messages() == 100
    assert 0 < most <= 7
    assert not awaiting


async def test_a_refusal_in_an_acknowledgement_fails_that_message_only(nt: NatsTest) -> None:
    bus = await nt.started()
    before = message_of(case_event("c1"), nt.prefix)
    subject = f"{nt.prefix}.cases.case.created"
    # JetStream refuses a message whose expected last sequence is not the stream's.
    refused = Message(
        id="refused", subject=subject, body=b"{}", headers={"Nats-Expected-Last-Sequence": "99"}
    )
    after = message_of(case_event("c2"), nt.prefix)

    results = await bus.publish_many([before, refused, after])

    assert results[0] is None
    assert results[2] is None
    refusal = results[1]
    assert isinstance(refusal, PublishError)
    assert not refusal.permanent
    assert "wrong last sequence" in str(refusal)
    assert await nt.messages() == 2


async def test_a_subject_no_stream_takes_fails_at_once_for_now(nt: NatsTest) -> None:
    bus = await nt.started(publish_timeout=WAIT_SECONDS)
    nowhere = Message(id="nowhere", subject=f"{nt.prefix}_elsewhere.cases.x", body=b"{}")

    async with asyncio.timeout(WAIT_SECONDS / 2):  # an answer, not the publish timeout
        (refusal,) = await bus.publish_many([nowhere])

    assert isinstance(refusal, PublishError)
    assert not refusal.permanent
    assert "no stream" in str(refusal)


async def test_acknowledgements_that_come_too_late_are_reported_and_ignored(
    private_server: PrivateNatsServer, private_nt: NatsTest
) -> None:
    bus = await private_nt.started(publish_timeout=0.5)
    private_server.pause()  # the server takes the messages but answers nothing
    try:
        waiting = [message_of(case_event(f"c{i}"), private_nt.prefix) for i in range(3)]
        results = await bus.publish_many(waiting)
    finally:
        private_server.resume()

    assert [str(r) for r in results] == ["publish not acknowledged (TimeoutError)"] * 3
    assert bus._acks is not None
    assert not bus._acks._awaiting  # given up on, not kept
    later = message_of(case_event("d1"), private_nt.prefix)
    await eventually(lambda: bus.publish_many([later]), until=lambda r: r == [None])
    assert await private_nt.messages() == 4  # the late ones were stored; their acks went nowhere


async def test_publish_many_returns_when_its_acknowledgements_died_with_the_server(
    private_server: PrivateNatsServer, private_nt: NatsTest
) -> None:
    # 16 MB of messages for a frozen server: nats-py waits for its flusher and
    # swallows the cancellation of the publish timeout while it does. The call must
    # still end once the connection is gone, not wait for those acks for ever.
    bus = await private_nt.started(publish_timeout=1.0)
    subject = f"{private_nt.prefix}.cases.case.created"
    large = [Message(id=f"m{n}", subject=subject, body=b"x" * 8000) for n in range(2000)]
    private_server.pause()
    publishing = asyncio.ensure_future(bus.publish_many(large))
    await asyncio.sleep(2.0)
    private_server.kill()
    private_server.start()

    async with asyncio.timeout(WAIT_SECONDS):
        results = await publishing

    assert all(isinstance(result, PublishError) for result in results)
    assert {str(result) for result in results} == {"publish not acknowledged (TimeoutError)"}


@pytest.mark.parametrize(
    ("data", "headers", "refused"),
    [
        (b'{"stream":"SEAWALL","seq":7}', None, None),
        (b'{"stream":"SEAWALL","seq":7,"duplicate":true}', None, None),
        (b'{"stream":"error","seq":7}', None, None),
        (b'{"seq":7,"stream":"SEAWALL"}', None, None),
        (
            b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}',
            None,
            "JetStream refused the message: wrong last sequence: 1",
        ),
        (b"", {"Status": "503"}, "no stream takes this subject (no responders)"),
        (b"", {"Status": "408"}, "publish answered with status 408"),
        (b"", None, "unreadable publish acknowledgement"),
        (b"not json", None, "unreadable publish acknowledgement"),
        (b'{"stream":"SEAWALL"}', None, "unreadable publish acknowledgement"),
    ],
)
def test_an_acknowledgement_is_success_only_when_it_says_so(
    data: bytes, headers: dict[str, str] | None, refused: str | None
) -> None:
    ack = Msg(_client=Client(), subject="_INBOX.x.1", data=data, headers=headers)

    refusal = _ack_refusal(ack)

    assert (None if refusal is None else str(refusal)) == refused
    assert refusal is None or not refusal.permanent


async def test_start_fails_when_no_server_listens() -> None:
    bus = NatsBus(f"nats://127.0.0.1:{free_port()}", stream="UNREACHABLE")
    starting = asyncio.ensure_future(bus.start())

    done, _ = await asyncio.wait({starting}, timeout=PROMPTLY)

    if not done:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        pytest.fail(f"NatsBus.start() was still connecting after {PROMPTLY}s")
    assert isinstance(starting.exception(), OSError | nats.errors.Error)
    assert (await bus.health())["status"] == "down"


async def test_closing_the_bus_is_not_reported_as_a_disconnection(nt: NatsTest) -> None:
    bus = await nt.started()

    with capture_logs() as logs:
        await bus.close()

    assert [line["event"] for line in logs if line["log_level"] != "debug"] == ["nats_closed"]
    assert logs[-1]["log_level"] == "info"


async def test_publish_during_an_outage_fails_for_now_and_a_retry_is_stored_once(
    private_server: PrivateNatsServer, private_nt: NatsTest
) -> None:
    bus = await private_nt.started(publish_timeout=1.0)
    await bus.publish(message_of(case_event("c1"), private_nt.prefix))
    with capture_logs() as logs:
        private_server.stop()
        await eventually(bus.health, until=lambda health: health["status"] == "down")
    assert {"event": "nats_disconnected", "log_level": "warning"} in logs
    during = message_of(case_event("c2"), private_nt.prefix)

    with pytest.raises(PublishError) as caught:
        await bus.publish(during)

    assert not caught.value.permanent
    private_server.start()

    async def retried() -> bool:
        try:
            await bus.publish(during)
        except PublishError:
            return False
        return True

    await eventually(retried)
    # The first survived the restart; the retry is not doubled.
    assert await private_nt.messages() == 2


# -- consumers -----------------------------------------------------------------------


async def test_every_group_gets_each_event_once_and_a_shared_group_splits_them(
    database: Database, nt: NatsTest
) -> None:
    relay_bus, bus_a, bus_b = await nt.started(), await nt.started(), await nt.started()
    recorder = Recorder()
    subjects = (f"{nt.prefix}.cases.>",)
    worker_a = Worker(
        database,
        bus_a,
        [
            Consumer("audit", subjects, recorder.handler("audit")),
            Consumer("shared", subjects, recorder.handler("shared-a")),
        ],
        subject_prefix=nt.prefix,
    )
    worker_b = Worker(
        database,
        bus_b,
        [Consumer("shared", subjects, recorder.handler("shared-b"))],
        subject_prefix=nt.prefix,
    )
    await worker_a.start()
    await worker_b.start()
    events = [case_event(f"c{i % 4}", "case.updated", n=i) for i in range(20)]
    ids = sorted(event.id for event in events)
    relay = OutboxRelay(database, relay_bus, subject_prefix=nt.prefix, poll_interval=0.1)
    relaying = asyncio.create_task(relay.run())

    try:
        await add_to_outbox(database, events)
        await eventually(recorder.count, until=lambda n: n >= 2 * len(events))
        await eventually(lambda: settled(relay_bus, "audit", "shared"))
    finally:
        relay.stop()
        await relaying

    assert recorder.ids("audit") == ids
    assert recorder.ids("shared-a", "shared-b") == ids
    assert await inbox_ids(database, "audit") == ids
    assert await inbox_ids(database, "shared") == ids
    assert (await outbox_lag(database)).pending == 0


async def test_a_failing_handler_is_retried_after_a_delay_then_dead_lettered(
    database: Database, nt: NatsTest
) -> None:
    bus = await nt.started()
    calls: Counter[str] = Counter()

    async def flaky(event: Event, session: AsyncSession) -> None:
        calls[event.id] += 1
        assert event.data is not None
        if event.data["fail"] == "always" or calls[event.id] == 1:
            raise RuntimeError(f"attempt {calls[event.id]} failed")

    spec = Consumer(
        "flaky",
        (f"{nt.prefix}.cases.>",),
        flaky,
        max_deliver=3,
        retry_base=0.05,
        retry_max=0.2,
    )
    worker = Worker(database, bus, [spec], subject_prefix=nt.prefix)
    await worker.start()
    once = case_event("c1", fail="once")
    always = case_event("c2", fail="always")

    await bus.publish(message_of(once, nt.prefix))
    await bus.publish(message_of(always, nt.prefix))
    await eventually(lambda: worker.dead_letters.list(consumer="flaky"))
    await eventually(lambda: settled(bus, "flaky"))

    assert calls == {once.id: 2, always.id: 3}
    assert await inbox_ids(database, "flaky") == [once.id]
    [dead] = await worker.dead_letters.list(consumer="flaky")
    assert (dead.message_id, dead.attempts) == (always.id, 3)
    assert "RuntimeError: attempt 3 failed" in dead.error
    copy = await (await nt.jetstream()).get_msg(bus.dlq_stream, 1)
    assert copy.subject == f"{bus.dlq_prefix}.flaky"
    assert copy.data == message_of(always, nt.prefix).body
    assert copy.headers is not None
    assert "RuntimeError: attempt 3 failed" in copy.headers["Seawall-Error"]
    assert copy.headers["Seawall-Consumer"] == "flaky"


async def test_consumer_lag_counts_messages_not_yet_delivered(nt: NatsTest) -> None:
    bus = await nt.started()
    for n in range(3):
        await bus.publish(message_of(case_event(f"c{n}"), nt.prefix))
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(delivery: Delivery) -> None:
        await release.wait()
        handled.append(delivery.message_id)
        await delivery.ack()

    await bus.subscribe("slow", [f"{nt.prefix}.>"], slow, concurrency=1)

    busy = await eventually(
        lambda: bus.consumer_lag("slow"), until=lambda lag: lag["ack_pending"] == 1
    )
    release.set()
    await eventually(lambda: settled(bus, "slow"))

    assert busy == {"pending": 2, "ack_pending": 1}
    assert len(handled) == 3


def acking_into(handled: list[str]) -> Handler:
    """A bus handler that notes each message id in *handled* and acknowledges it."""

    async def record(delivery: Delivery) -> None:
        handled.append(delivery.message_id)
        await delivery.ack()

    return record


async def test_a_quiet_consumer_hands_each_message_on_as_it_arrives(nt: NatsTest) -> None:
    # A request for 100 is open; one message must not wait for 99 more, nor for the
    # request to expire (a minute here).
    bus = await nt.started(fetch_timeout=60.0)
    handled: list[str] = []
    record = acking_into(handled)
    await bus.subscribe("quiet", [f"{nt.prefix}.>"], record, concurrency=100)
    await asyncio.sleep(0.2)  # the consumer's request is open, nothing waiting

    for n in range(10):
        message = message_of(case_event(f"c{n}"), nt.prefix)
        await bus.publish(message)
        await eventually(lambda: asyncio.sleep(0, handled), timeout=WAIT_SECONDS / 2)
        assert handled.pop() == message.id
        await asyncio.sleep(0.01 * n)  # some while the next request is being asked for


async def test_a_consumer_never_runs_more_handlers_than_its_concurrency(nt: NatsTest) -> None:
    # Trickles that leave a request half served, expiries, then a burst: with several
    # requests open at once, their count drifted and the handlers with it.
    bus = await nt.started(fetch_timeout=0.3)
    running, peak, handled = 0, 0, 0

    async def slow(delivery: Delivery) -> None:
        nonlocal running, peak, handled
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        handled += 1
        await delivery.ack()

    await bus.subscribe("bounded", [f"{nt.prefix}.>"], slow, concurrency=4)
    sent = 0
    for _ in range(4):
        for _ in range(2):
            await bus.publish(message_of(case_event(f"c{sent}"), nt.prefix))
            sent += 1
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # requests expire
    await bus.publish_many([message_of(case_event(f"b{n}"), nt.prefix) for n in range(40)])

    await eventually(lambda: asyncio.sleep(0, handled), until=lambda n: n == sent + 40)
    assert peak <= 4


async def test_a_consumer_keeps_asking_after_its_requests_expire(nt: NatsTest) -> None:
    bus = await nt.started(fetch_timeout=0.2)
    handled: list[str] = []
    record = acking_into(handled)
    await bus.subscribe("patient", [f"{nt.prefix}.>"], record, concurrency=4)
    await asyncio.sleep(1.0)  # five requests expired meanwhile
    sent = [message_of(case_event(f"c{n}"), nt.prefix) for n in range(9)]
    await bus.publish_many(sent)

    await eventually(lambda: asyncio.sleep(0, len(handled)), until=lambda n: n == 9)
    assert sorted(handled) == sorted(message.id for message in sent)
    assert await bus.consumer_lag("patient") == {"pending": 0, "ack_pending": 0}


async def test_a_consumer_whose_durable_is_deleted_says_so_and_backs_off(nt: NatsTest) -> None:
    bus = await nt.started(fetch_timeout=5.0)

    async def ignore(delivery: Delivery) -> None:
        await delivery.ack()

    await bus.subscribe("doomed", [f"{nt.prefix}.>"], ignore, concurrency=4)
    await asyncio.sleep(0.2)  # its request is open
    with capture_logs() as logs:
        await (await nt.jetstream()).delete_consumer(nt.stream, "doomed")
        await asyncio.sleep(1.0)

    refused = [line for line in logs if line["event"] == "consumer_pull_refused"]
    assert refused, logs
    assert refused[0]["consumer"] == "doomed"
    assert refused[0]["log_level"] == "warning"
    assert len(refused) <= 5  # 0.1, 0.2, 0.4 s apart: not a tight loop


@only_sqlite
async def test_a_consumer_of_several_subjects_gets_only_those(
    database: Database, nt: NatsTest
) -> None:
    # On NATS before 2.10 a consumer has one filter: NatsBus takes the whole stream
    # and acknowledges, unhandled, what the group did not ask for.
    bus = await nt.started()
    recorder = Recorder()
    spec = Consumer(
        "picky",
        (f"{nt.prefix}.cases.case.created", f"{nt.prefix}.cases.case.closed"),
        recorder.handler("picky"),
    )
    await Worker(database, bus, [spec], subject_prefix=nt.prefix).start()
    created, updated, closed = (
        case_event("c1", "case.created"),
        case_event("c1", "case.updated"),
        case_event("c1", "case.closed"),
    )

    for event in (created, updated, closed):
        await bus.publish(message_of(event, nt.prefix))
    await eventually(lambda: settled(bus, "picky"))
    await eventually(recorder.count, until=lambda n: n >= 2)

    assert recorder.ids("picky") == sorted([created.id, closed.id])
    assert await inbox_ids(database, "picky") == sorted([created.id, closed.id])


# -- health --------------------------------------------------------------------------


async def test_health_reports_storage_replicas_and_durability_warnings(nt: NatsTest) -> None:
    on_disk = await nt.started()
    in_memory = await nt.started(
        stream=f"{nt.stream}M", subject_prefix=f"{nt.prefix}m", storage="memory"
    )

    disk, memory = await on_disk.health(), await in_memory.health()

    assert (disk["status"], disk["storage"], disk["replicas"]) == ("up", "file", 1)
    assert any("replica" in warning for warning in disk["durability_warnings"])
    assert not any("memory" in warning for warning in disk["durability_warnings"])
    assert memory["storage"] == "memory"
    assert any("memory" in warning for warning in memory["durability_warnings"])


# -- the runtime ---------------------------------------------------------------------


async def test_messaging_connects_when_the_broker_comes_up_later(
    database: Database, settings: Settings, private_server: PrivateNatsServer
) -> None:
    # Messaging's relay publishes under the default prefix, which a private server
    # can give this test alone.
    nt = NatsTest(private_server.url, private=True)
    bus = nt.bus(subject_prefix="seawall")
    recorder = Recorder()
    spec = Consumer("late", ("seawall.cases.>",), recorder.handler("late"))
    messaging = Messaging(settings, database, consumers=[spec], bus=bus)
    events = [case_event(f"c{n}") for n in range(3)]
    try:
        await messaging.start()
        await add_to_outbox(database, events)
        before = await messaging.health()

        private_server.start()
        await eventually(recorder.count, until=lambda n: n >= 3)

        assert before["status"] == "down"
        assert recorder.ids("late") == sorted(event.id for event in events)
        assert messaging.connected
        # On SQLite the relay marks rows after publishing: a handler may come first.
        await eventually(lambda: outbox_lag(database), until=lambda lag: lag.pending == 0)
    finally:
        await messaging.stop()
        await nt.close()


async def test_messaging_says_why_the_broker_is_down(
    database: Database, settings: Settings
) -> None:
    bus = NatsBus(f"nats://127.0.0.1:{free_port()}", stream="UNREACHABLE")
    messaging = Messaging(settings, database, consumers=[], bus=bus)
    try:
        await messaging.start()

        health = await eventually(
            messaging.health, until=lambda report: "error" in report, timeout=PROMPTLY
        )

        assert health["status"] == "down"
    finally:
        await messaging.stop()


@only_sqlite
async def test_messaging_relays_under_the_subject_prefix_of_its_bus(
    database: Database, settings: Settings, private_server: PrivateNatsServer
) -> None:
    private_server.start()
    nt = NatsTest(private_server.url, private=True)
    recorder = Recorder()
    spec = Consumer("prefixed", (f"{nt.prefix}.cases.>",), recorder.handler("prefixed"))
    messaging = Messaging(settings, database, consumers=[spec], bus=nt.bus())
    event = case_event("c1")
    try:
        await messaging.start()

        await add_to_outbox(database, [event])

        await eventually(recorder.count, timeout=PROMPTLY)
        assert recorder.ids("prefixed") == [event.id]
    finally:
        await messaging.stop()
        await nt.close()
