"""`NatsBus`: NATS JetStream with durable pull consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from seawall.errors import PublishError, StreamMismatch
from seawall.messaging._bus import Bus, Delivery, Handler, Message, check_durable, check_subjects
from seawall.messaging._event import SUBJECT_PREFIX, subject_matches
from seawall.messaging._stopping import GRACE_SECONDS, finish
from seawall.observability import mask_url

log = structlog.get_logger("seawall.messaging")

MSG_ID_HEADER = "Nats-Msg-Id"

# Messages `NatsBus.publish_many` sends between two yields to the event loop: each
# yield lets nats-py's flusher write what is buffered, so the server starts on it
# while the rest are built. Every 50, the writes were small and many: against
# every 250, a 500-row relay batch cost the loop thread 3-8 µs and nats-server
# 2-4 µs more per event, and the relay's ratio to raw publish was 0.47-0.61
# against 0.59-0.68 (six alternating pairs, 2026-12-07). Not yielding within a
# batch at all measured the same as 250.
_YIELD_EVERY = 250

# Status codes on a pull consumer's deliveries: an idle heartbeat, and the end of
# a pull request that expired. Any other status also ends the request it answers.
_HEARTBEAT = "100"
_REQUEST_EXPIRED = "408"

# How long after its expiry a pull request whose end never came is forgotten.
_REQUEST_GRACE = 0.5

# How often a consumer looks whether its connection is back, to ask again.
_RECONNECT_POLL = 0.1

# JetStream API error codes that no retry can fix.
_PERMANENT_API_CODES = frozenset({10054})  # message size exceeds maximum allowed

# The status header NATS sets on a reply when nothing listens on the subject:
# no stream captures it.
_NO_RESPONDERS = "503"


class _Batch:
    """One `NatsBus.publish_many` call's results and the acknowledgements it awaits."""

    __slots__ = ("awaited", "done", "results", "sending")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.results: list[PublishError | None] = [None] * size
        self.awaited = 0
        self.sending = True
        self.done = done

    def settle(self, index: int, refusal: PublishError | None) -> None:
        self.results[index] = refusal
        self.awaited -= 1
        if not self.awaited and not self.sending and not self.done.done():
            self.done.set_result(None)


class _AckInbox:
    """One subscription that receives the acknowledgement of every publish of a bus.

    Each publish names ``<inbox>.<n>`` as its reply subject and JetStream answers
    there once the message is stored. nats-py's ``publish_async`` does the same,
    but also makes a future, a done-callback, a semaphore turn and two random
    bytes (a system call) per message, and parses every acknowledgement into a
    `PubAck`: 28-44 µs of the event loop's CPU per message against 12 µs here
    (20,000 messages, four alternating rounds, 2026-12-07).
    """

    def __init__(self, nc: Client, window: int) -> None:
        self._nc = nc
        self._window = window
        self._prefix = f"{nc.new_inbox()}."
        self._awaiting: dict[str, tuple[_Batch, int]] = {}
        self._count = 0
        self._room = asyncio.Event()
        self._room.set()

    async def subscribe(self) -> None:
        # nats-py subscribes again by itself after a reconnection.
        await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack)

    async def reply_to(self, batch: _Batch, index: int) -> str:
        """The reply subject of *batch*'s message *index*, once the window has room."""
        while len(self._awaiting) >= self._window:
            self._room.clear()
            await self._room.wait()
        self._count += 1
        token = str(self._count)
        self._awaiting[token] = (batch, index)
        batch.awaited += 1
        return self._prefix + token

    def forget(self, reply: str) -> bool:
        """Stop awaiting *reply*'s acknowledgement; False if it came already."""
        entry = self._awaiting.pop(reply[len(self._prefix) :], None)
        if entry is not None:
            entry[0].awaited -= 1
            self._room.set()
        return entry is not None

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._awaiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return  # its publish_many gave up waiting
        if not self._room.is_set():
            self._room.set()
        batch, index = entry
        batch.settle(index, _ack_refusal(msg))


class _NatsDelivery(Delivery):
    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        headers = msg.headers or {}
        metadata = msg.metadata
        super().__init__(
            message_id=headers.get(MSG_ID_HEADER)
            or f"{metadata.stream}:{metadata.sequence.stream}",
            subject=msg.subject,
            body=msg.data,
            attempt=metadata.num_delivered,
        )
        self._msg = msg

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float) -> None:
        await self._msg.nak(delay=delay)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


class _PullConsumer:
    """A consumer group's deliveries: a pull request for its free slots, messages handed on at once.

    Not nats-py's ``fetch``: when nothing is waiting, ``fetch(n)`` leaves a
    request for n open and, once the first message comes, holds it until the
    other n - 1 come or the timeout ends. A quiet consumer's message waited up to
    the fetch timeout that way (16-563 ms for 5 of 30 messages published one at
    a time to a consumer with 100 slots).

    One request is open at a time, for every free slot, and expires after
    *expires* seconds. Its messages are handed to handlers as they arrive; it
    ends when all it asked for came, or with a status message on its own reply
    subject (408 when it expired). Then the next one asks for the slots free by
    then. With several open at once, JetStream shares messages among them in
    turn, so none can be counted down without its end: a review found the count
    drifting and 28 handlers running for a concurrency of 4. A request whose end
    never came (the connection dropped) is forgotten a moment after it would have
    expired, and none is sent while the connection is down (nats-py would buffer
    them and send them all at once on reconnecting).
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        handler: Handler,
        concurrency: int,
        local_filter: tuple[str, ...] | None,
        *,
        expires: float,
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = f"{nc.new_inbox()}."
        self._durable = durable
        self._handler = handler
        self._local_filter = local_filter
        self._expires = expires
        self._asked = 0  # requests sent, each replying to <prefix><its number>
        self._open: str | None = None  # the open request's reply subject
        self._due = 0  # messages it may still deliver
        self._forget_at = 0.0  # when to stop waiting for its end
        self._running: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._free = concurrency
        self._refused = False  # a request was answered with an error status
        self._backoff = 0.1  # before asking again after a failure; reset by an answer

    async def run(self) -> None:
        """Ask, wait for a change (a message handled, a request ended), ask again."""
        loop = asyncio.get_running_loop()
        subscription = await self._nc.subscribe(f"{self._prefix}*", cb=self._arrived)
        try:
            while True:
                if self._refused:
                    # The consumer was deleted, or the server is changing leaders:
                    # ask again, but not at once.
                    self._refused = False
                    await asyncio.sleep(self._backoff)
                    self._backoff = min(self._backoff * 2, 5.0)
                if self._open is not None and loop.time() >= self._forget_at:
                    self._open = None  # its end was lost with the connection
                if self._open is None and self._free > 0 and self._nc.is_connected:
                    try:
                        await self._ask(self._free)
                    except (nats.errors.Error, OSError) as exc:
                        log.warning(
                            "consumer_fetch_failed",
                            consumer=self._durable,
                            error=type(exc).__name__,
                        )
                        await asyncio.sleep(self._backoff)
                        self._backoff = min(self._backoff * 2, 5.0)
                        continue
                self._changed.clear()
                if self._open is not None:
                    wait = self._forget_at - loop.time()
                elif self._free > 0:
                    wait = _RECONNECT_POLL  # not connected: look again soon
                else:
                    wait = self._expires  # every slot busy: a handler's end wakes this
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.001)):
                        await self._changed.wait()
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            # Let handlers in a database transaction finish; cancel only the late ones.
            await finish(set(self._running), GRACE_SECONDS)

    async def _ask(self, count: int) -> None:
        self._asked += 1
        reply = f"{self._prefix}{self._asked}"
        request = {"batch": count, "expires": int(self._expires * 1e9)}
        self._open, self._due = reply, count
        self._forget_at = asyncio.get_running_loop().time() + self._expires + _REQUEST_GRACE
        try:
            await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply)
        except BaseException:
            self._open = None
            raise

    async def _arrived(self, msg: Msg) -> None:
        status = msg.headers.get(api.Header.STATUS) if msg.headers else None
        if status == _HEARTBEAT:
            return
        if status:
            if msg.subject != self._open:
                return  # the end of a request already counted out, or forgotten
            self._open = None
            if status == _REQUEST_EXPIRED:
                self._backoff = 0.1
            else:  # 409 and the like: refused or cut short
                self._refused = True
                description = msg.headers.get(api.Header.DESCRIPTION, "") if msg.headers else ""
                log.warning(
                    "consumer_pull_refused",
                    consumer=self._durable,
                    status=status,
                    description=description,
                )
            self._changed.set()
            return
        if self._open is not None:
            self._due -= 1
            if self._due <= 0:
                self._open = None  # all it asked for came: no status follows
                self._changed.set()
        self._free -= 1
        self._backoff = 0.1
        task = asyncio.create_task(self._handle(msg))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            delivery = _NatsDelivery(msg)
            if self._local_filter is not None and not any(
                subject_matches(p, msg.subject) for p in self._local_filter
            ):
                await delivery.ack()
                return
            await self._handler(delivery)
        except Exception:
            log.exception("consumer_handler_crashed", consumer=self._durable)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
        finally:
            self._free += 1
            self._changed.set()


class NatsBus(Bus):
    """NATS JetStream: one file-backed stream for events, one for dead letters.

    Events go to ``<subject_prefix>.<context>.<type>`` in ``stream``; dead letters
    are copied to ``<subject_prefix>_dlq.<durable>`` in ``<stream>_DLQ``.

    Each durable name is a durable pull consumer with explicit acks. seawall
    counts deliveries itself and dead-letters a message after the consumer's
    ``max_deliver`` attempts, so the JetStream consumer redelivers without limit:
    a worker killed between "last attempt failed" and "dead letter written"
    sees the message again instead of leaving it stranded in the stream.

    Args:
        url: the NATS server URL(s), comma separated.
        stream: the events stream; it captures ``<subject_prefix>.>``.
        subject_prefix: first token of every event subject.
        duplicate_window: seconds JetStream remembers ``Nats-Msg-Id`` values.
        max_age: seconds a message is kept in the stream.
        storage: ``file`` (survives a restart) or ``memory``.
        publish_timeout: seconds `publish_many` waits for all its acknowledgements.
        max_in_flight: publishes awaiting their acknowledgement at most, across
            every `publish_many` call (nats-py's default for ``publish_async``);
            one that finds them all taken waits for room.
        fetch_timeout: seconds one pull request waits for messages.
        name: the client name shown by the server.
    """

    kind = "nats"

    def __init__(
        self,
        url: str,
        *,
        stream: str = "SEAWALL",
        subject_prefix: str = SUBJECT_PREFIX,
        duplicate_window: float = 120.0,
        max_age: float = 7 * 86400.0,
        storage: str = "file",
        publish_timeout: float = 5.0,
        max_in_flight: int = 4000,
        fetch_timeout: float = 1.0,
        name: str = "seawall",
    ) -> None:
        if storage not in {"file", "memory"}:
            raise ValueError("storage must be 'file' or 'memory'")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.url = url
        self.stream = stream
        self.dlq_stream = f"{stream}_DLQ"
        self.subject_prefix = subject_prefix
        self.dlq_prefix = f"{subject_prefix}_dlq"
        self.duplicate_window = duplicate_window
        self.max_age = max_age
        self.storage = storage
        self.publish_timeout = publish_timeout
        self.max_in_flight = max_in_flight
        self.fetch_timeout = fetch_timeout
        self.name = name
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: _AckInbox | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"NatsBus({mask_url(self.url)!r}, stream={self.stream!r})"

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context; `start` must have been called."""
        if self._js is None:
            raise RuntimeError("NatsBus is not started")
        return self._js

    async def start(self) -> None:
        """Connect (reconnecting forever afterwards) and create or check both streams.

        Raises:
            StreamMismatch: a stream exists with other subjects or storage.
            OSError, nats.errors.Error: the server cannot be reached.
        """
        if self._nc is not None:
            return

        async def on_error(exc: Exception) -> None:
            log.warning("nats_error", error=type(exc).__name__)

        async def on_disconnected() -> None:
            # nats-py calls this on its own close() too: a bus that stops is no warning.
            if nc.is_closed:
                log.info("nats_closed")
            else:
                log.warning("nats_disconnected")

        async def on_reconnected() -> None:
            log.info("nats_reconnected")

        nc = Client()
        try:
            # nats-py retries a first connection for ever when reconnects are unlimited:
            # try each server twice, then make reconnects unlimited (the client reads
            # these options each time a connection fails).
            await nc.connect(
                servers=self.url.split(","),
                name=self.name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        nc.options["max_reconnect_attempts"] = -1
        try:
            js = nc.jetstream(timeout=self.publish_timeout)
            await self._ensure_stream(js, self.stream, f"{self.subject_prefix}.>")
            await self._ensure_stream(js, self.dlq_stream, f"{self.dlq_prefix}.>")
            acks = _AckInbox(nc, self.max_in_flight)
            await acks.subscribe()
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js, self._acks = nc, js, acks

    async def _ensure_stream(self, js: JetStreamContext, name: str, subject: str) -> None:
        storage = api.StorageType.FILE if self.storage == "file" else api.StorageType.MEMORY
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=name,
                    subjects=[subject],
                    storage=storage,
                    retention=api.RetentionPolicy.LIMITS,
                    duplicate_window=self.duplicate_window,
                    max_age=self.max_age,
                )
            )
            log.info("stream_created", stream=name, subject=subject, storage=self.storage)
            return
        config = info.config
        differences: dict[str, tuple[object, object]] = {}
        if sorted(config.subjects or []) != [subject]:
            differences["subjects"] = (config.subjects, [subject])
        if config.storage != storage:
            differences["storage"] = (_storage_name(config.storage), self.storage)
        if differences:
            raise StreamMismatch(stream=name, differences=differences)

    async def publish(self, message: Message) -> None:
        (refusal,) = await self.publish_many([message])
        if refusal is not None:
            raise refusal

    async def publish_many(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Send every message, then wait for all their acknowledgements at once.

        One ``publish_timeout`` covers the whole call: a message not acknowledged
        by then is reported as not published (a retry is deduplicated by its
        ``Nats-Msg-Id``).
        """
        acks = self._acks
        if acks is None or self._nc is None:
            raise RuntimeError("NatsBus is not started")
        publish = self._nc.publish
        max_payload = self._nc.max_payload
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        batch = _Batch(len(messages), loop.create_future())
        replies: list[tuple[int, str]] = []
        processed = 0
        try:
            async with asyncio.timeout_at(deadline):
                for index, message in enumerate(messages):
                    if loop.time() >= deadline:
                        # nats-py swallows a cancellation that comes while it waits
                        # for its flusher (over 2 MB buffered): the timeout's own
                        # cancellation may never arrive here.
                        raise TimeoutError
                    headers = {**message.headers, MSG_ID_HEADER: message.id}
                    size = len(message.body) + _headers_size(headers)
                    if size > max_payload:
                        # Checked here because the server counts the headers too and
                        # answers an oversized message by closing the connection.
                        batch.results[index] = PublishError(
                            f"message of {size} bytes (headers included) exceeds the "
                            f"server's max_payload of {max_payload}",
                            permanent=True,
                        )
                        processed += 1
                        continue
                    reply = await acks.reply_to(batch, index)
                    replies.append((index, reply))
                    try:
                        await publish(message.subject, message.body, reply, headers)
                    except (nats.errors.Error, OSError) as exc:
                        acks.forget(reply)
                        batch.results[index] = _publish_error(exc)
                    processed += 1
                    if len(replies) % _YIELD_EVERY == 0:
                        # Let nats-py's flusher send what is buffered, so the server
                        # works on these while the rest are built (and acks come in).
                        await asyncio.sleep(0)
            batch.sending = False
            if batch.awaited:
                # Bounded on its own, for the same reason.
                await asyncio.wait({batch.done}, timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            for late in range(processed, len(messages)):
                batch.results[late] = PublishError("publish not acknowledged (TimeoutError)")
        finally:
            for index, reply in replies:
                if acks.forget(reply):
                    batch.results[index] = PublishError("publish not acknowledged (TimeoutError)")
        return batch.results

    async def subscribe(
        self,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 8,
        ack_wait: float = 30.0,
    ) -> None:
        check_durable(durable)
        patterns = check_subjects(subjects)
        js = self.jetstream
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, concurrency * 4),
        )
        local_filter: tuple[str, ...] | None = None
        if len(patterns) == 1:
            config.filter_subject = patterns[0]
        elif self._server_supports_filter_subjects():
            config.filter_subjects = list(patterns)
        else:
            # NATS before 2.10 takes one filter per consumer: take the whole stream
            # and acknowledge what this group did not ask for.
            config.filter_subject = f"{self.subject_prefix}.>"
            local_filter = patterns
        subscription = await js.pull_subscribe(
            config.filter_subject or patterns[0],
            durable=durable,
            stream=self.stream,
            config=config,
        )
        existing = (await subscription.consumer_info()).config
        wanted = (config.filter_subject, sorted(config.filter_subjects or []))
        found = (existing.filter_subject, sorted(existing.filter_subjects or []))
        if found != wanted:
            # A durable keeps the filter it was created with; seawall does not change it.
            log.warning(
                "consumer_filter_mismatch",
                consumer=durable,
                found=str(found),
                wanted=str(wanted),
                fix=f"delete the consumer {durable!r} of stream {self.stream!r} to recreate it",
            )
        # The consumer is made and checked; its messages come through requests of
        # `_consume_forever`'s own, not this subscription's ``fetch``.
        await subscription.unsubscribe()
        assert self._nc is not None
        task = asyncio.create_task(
            _PullConsumer(
                self._nc,
                self.stream,
                durable,
                handler,
                concurrency,
                local_filter,
                expires=self.fetch_timeout,
            ).run(),
            name=f"seawall-nats-{durable}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _server_supports_filter_subjects(self) -> bool:
        assert self._nc is not None
        version = self._nc.connected_server_version
        return (version.major, version.minor) >= (2, 10)

    async def dead_letter(self, durable: str, delivery: Delivery, error: str) -> None:
        headers = {
            "Seawall-Consumer": durable,
            "Seawall-Subject": delivery.subject,
            "Seawall-Error": " ".join(error.split())[:500],
        }
        copy = Message(
            id=f"{durable}:{delivery.message_id}",
            subject=f"{self.dlq_prefix}.{durable}",
            body=delivery.body,
            headers=headers,
        )
        (refusal,) = await self.publish_many([copy])
        if refusal is not None:
            # The dead_letters table is the record; the stream copy is for NATS tooling.
            log.warning("dead_letter_stream_copy_failed", consumer=durable, error=str(refusal))

    async def consumer_lag(self, durable: str) -> dict[str, int]:
        """Return ``pending`` (not yet delivered) and ``ack_pending`` for group *durable*."""
        info = await self.jetstream.consumer_info(self.stream, durable)
        return {"pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0}

    async def health(self) -> dict[str, Any]:
        if self._nc is None or not self._nc.is_connected:
            return {"kind": self.kind, "status": "down", "url": mask_url(self.url)}
        try:
            info = await self.jetstream.stream_info(self.stream)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            return {"kind": self.kind, "status": "down", "error": type(exc).__name__}
        config = info.config
        storage = _storage_name(config.storage)
        replicas = config.num_replicas or 1
        warnings = []
        if storage != "file":
            warnings.append("the stream is in memory: a server restart loses every message")
        if replicas < 2:
            warnings.append(
                "one replica: acknowledged messages are only as safe as one disk, and NATS "
                "fsyncs every 2 minutes unless the server sets sync_interval: always"
            )
        return {
            "kind": self.kind,
            "status": "up",
            "url": mask_url(self.url),
            "stream": self.stream,
            "storage": storage,
            "replicas": replicas,
            "messages": info.state.messages,
            "durability_warnings": warnings,
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._js = self._acks = None


def _storage_name(storage: object) -> str:
    # nats-py hands back a StorageType or, from stream_info, the plain string.
    value = getattr(storage, "value", storage)
    return str(value) if value else "unknown"


def _publish_error(exc: BaseException) -> PublishError:
    """The `PublishError` of what nats-py raised for one publish, caused by it."""
    if isinstance(exc, nats.errors.MaxPayloadError):
        error = PublishError(f"message too large for the server ({exc})", permanent=True)
    elif isinstance(exc, nats.js.errors.APIError):
        error = PublishError(
            f"JetStream refused the message: {exc.description}",
            permanent=exc.err_code in _PERMANENT_API_CODES,
        )
    else:
        error = PublishError(f"publish not acknowledged ({type(exc).__name__})")
    error.__cause__ = exc
    return error


def _ack_refusal(msg: Msg) -> PublishError | None:
    """None if *msg* acknowledges a stored message, else why it was not stored."""
    status = msg.headers.get(api.Header.STATUS) if msg.headers else None
    if status == _NO_RESPONDERS:
        return PublishError("no stream takes this subject (no responders)")
    if status:
        return PublishError(f"publish answered with status {status}")
    data = msg.data
    if data.startswith(b'{"stream":') and b'"seq":' in data and b'"error"' not in data:
        return None  # {"stream":"SEAWALL","seq":1}: read no further
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        return _publish_error(
            nats.js.errors.APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=str(error.get("description", "no description")),
            )
        )
    if isinstance(answer, dict) and "stream" in answer and "seq" in answer:
        return None  # a stream named "error", or fields in another order
    return PublishError("unreadable publish acknowledgement")


def _headers_size(headers: dict[str, str]) -> int:
    # "NATS/1.0\r\n", one "Key: value\r\n" per header, then "\r\n".
    return 10 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()) + 2
