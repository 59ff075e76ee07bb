"""The `Bus` seam and `InProcessBus`, the broker of the embedded default.

A bus carries envelopes from the relay to consumer groups. Consumers with the
same durable name share one queue (each message goes to one of them); every
durable name gets its own copy of each message (fan-out). Delivery is
at-least-once: a handler acknowledges, asks for a delayed redelivery, or
terminates a message; the inbox turns that into exactly-once effects.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from seawall.errors import PublishError
from seawall.messaging._event import subject_matches
from seawall.messaging._stopping import GRACE_SECONDS, finish

log = structlog.get_logger("seawall.messaging")

_DURABLE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_SUBJECT = re.compile(r"[A-Za-z0-9_*>-]+(\.[A-Za-z0-9_*>-]+)*")

# Largest message either bus accepts; NATS's default max_payload is 1 MiB.
DEFAULT_MAX_PAYLOAD = 1 << 20


def check_durable(durable: str) -> str:
    """Return *durable* if it is a valid consumer group name, else raise ValueError."""
    if not _DURABLE.fullmatch(durable):
        raise ValueError(
            f"durable name {durable!r} must be 1-200 characters of letters, digits, '_' and '-'"
        )
    return durable


def check_subjects(subjects: Sequence[str]) -> tuple[str, ...]:
    """Return *subjects* as a tuple if each is a valid subject pattern, else raise ValueError."""
    if isinstance(subjects, str) or not subjects:
        raise ValueError("subjects must be a non-empty list of subject patterns")
    for subject in subjects:
        tokens = subject.split(".")
        if not _SUBJECT.fullmatch(subject) or any(
            ("*" in t and t != "*") or (">" in t and t != ">") for t in tokens
        ):
            raise ValueError(f"invalid subject pattern {subject!r}")
        if ">" in tokens[:-1]:
            raise ValueError(f"'>' must be the last token of {subject!r}")
    return tuple(subjects)


@dataclass(frozen=True, slots=True)
class Message:
    """An envelope on its way to the bus.

    Attributes:
        id: the event id; brokers deduplicate on it (``Nats-Msg-Id``).
        subject: where it goes, ``seawall.<context>.<type>``.
        body: the CloudEvents JSON.
        headers: extra headers (correlation ids, CloudEvents attributes).
    """

    id: str
    subject: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Delivery(ABC):
    """One delivery of a message to one consumer group.

    Attributes:
        message_id: the message's id (the event id).
        subject: the subject it was published to.
        body: the raw bytes as published.
        attempt: 1 on the first delivery, 2 on the first redelivery, ...
    """

    __slots__ = ("attempt", "body", "message_id", "subject")

    def __init__(self, *, message_id: str, subject: str, body: bytes, attempt: int) -> None:
        self.message_id = message_id
        self.subject = subject
        self.body = body
        self.attempt = attempt

    @abstractmethod
    async def ack(self) -> None:
        """Done: never deliver this message to this group again."""

    @abstractmethod
    async def nak(self, delay: float) -> None:
        """Not done: deliver it again after *delay* seconds."""

    @abstractmethod
    async def term(self) -> None:
        """Give up on it: never deliver it again (it was dead-lettered)."""

    async def in_progress(self) -> None:  # noqa: B027 - optional for buses without ack deadlines
        """Still working: push the redelivery deadline back."""


Handler = Callable[[Delivery], Awaitable[None]]


class Bus(ABC):
    """A message broker as seawall uses it: publish with acknowledgement, durable groups."""

    #: Whether messages survive a restart of this process (False for `InProcessBus`).
    durable: bool = True
    #: Short name for logs and health ("nats", "inprocess").
    kind: str = "bus"

    async def start(self) -> None:  # noqa: B027 - buses without a connection need nothing
        """Connect and make sure the streams exist."""

    async def close(self) -> None:  # noqa: B027
        """Stop every subscription and disconnect."""

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @abstractmethod
    async def publish(self, message: Message) -> None:
        """Publish *message* and wait until the broker has it.

        Raises:
            PublishError: the broker did not take it; ``permanent`` says whether
                trying again could help.
        """

    async def publish_many(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Publish *messages* together and wait until the broker has answered for each.

        The messages may be in flight side by side, so they should not depend on
        each other's order (the relay passes at most one per aggregate). This
        default publishes them concurrently through `publish`; a broker with
        pipelined acknowledgements does better.

        Returns:
            For each message, in order: None when the broker has it, else the
            `PublishError` that says why not.
        """
        return list(await asyncio.gather(*(self._refusal(message) for message in messages)))

    async def _refusal(self, message: Message) -> PublishError | None:
        """`publish` *message*; None if the broker took it, else why not."""
        try:
            await self.publish(message)
        except PublishError as exc:
            return exc
        return None

    @abstractmethod
    async def subscribe(
        self,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 8,
        ack_wait: float = 30.0,
    ) -> None:
        """Deliver every message on *subjects* to the group *durable*, through *handler*.

        Subscribing twice with one durable name shares the group's queue.
        """

    async def dead_letter(self, durable: str, delivery: Delivery, error: str) -> None:  # noqa: B027
        """Copy a message a group gave up on to the broker's dead-letter place, if it has one."""

    async def health(self) -> dict[str, Any]:
        """Describe the connection and the durability of what the broker stores."""
        return {"kind": self.kind, "status": "up"}


class _LocalDelivery(Delivery):
    __slots__ = ("_group", "_settled")

    def __init__(self, group: _LocalGroup, message: Message, attempt: int) -> None:
        super().__init__(
            message_id=message.id, subject=message.subject, body=message.body, attempt=attempt
        )
        self._group = group
        self._settled = False

    def _settle(self) -> bool:
        first = not self._settled
        self._settled = True
        return first

    async def ack(self) -> None:
        self._settle()

    async def term(self) -> None:
        self._settle()

    async def nak(self, delay: float) -> None:
        if self._settle():
            self._group.redeliver(
                Message(self.message_id, self.subject, self.body), self.attempt + 1, delay
            )


@dataclass(eq=False)
class _LocalGroup:
    durable: str
    subjects: tuple[str, ...]
    queue: asyncio.Queue[tuple[Message, int]] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    timers: set[asyncio.TimerHandle] = field(default_factory=set)

    def matches(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.subjects)

    def redeliver(self, message: Message, attempt: int, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def put() -> None:
            self.timers.discard(handle)
            self.queue.put_nowait((message, attempt))

        handle = loop.call_later(max(0.0, delay), put)
        self.timers.add(handle)


class InProcessBus(Bus):
    """A bus inside one process: the embedded default, fed by the same outbox relay.

    Durable names behave as on JetStream (shared queue per name, fan-out across
    names), but queued messages live in memory: after a crash, `seawall.messaging.Worker`
    hands each group the published events its inbox has not recorded, so nothing
    committed is lost.

    Args:
        max_payload: the largest body accepted; larger is a permanent `PublishError`.
    """

    durable = False
    kind = "inprocess"

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._groups: dict[str, _LocalGroup] = {}
        self._busy: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"InProcessBus(groups={sorted(self._groups)})"

    async def publish(self, message: Message) -> None:
        if self._closed:
            raise PublishError("the in-process bus is closed")
        if len(message.body) > self.max_payload:
            raise PublishError(
                f"message of {len(message.body)} bytes exceeds max_payload {self.max_payload}",
                permanent=True,
            )
        for group in self._groups.values():
            if group.matches(message.subject):
                group.queue.put_nowait((message, 1))

    async def publish_many(self, messages: Sequence[Message]) -> list[PublishError | None]:
        # Nothing to wait for: each is queued at once, in order.
        return [await self._refusal(message) for message in messages]

    def deliver(self, durable: str, message: Message) -> None:
        """Queue *message* for the one group *durable* (recovery after a restart)."""
        self._groups[durable].queue.put_nowait((message, 1))

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
        group = self._groups.get(durable)
        if group is None:
            group = self._groups[durable] = _LocalGroup(durable, patterns)
        elif group.subjects != patterns:
            raise ValueError(f"durable {durable!r} is already subscribed to {group.subjects}")
        for index in range(concurrency):
            group.workers.append(
                asyncio.create_task(
                    self._work(group, handler), name=f"seawall-inprocess-{durable}-{index}"
                )
            )

    async def _work(self, group: _LocalGroup, handler: Handler) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._closed:
            message, attempt = await group.queue.get()
            delivery = _LocalDelivery(group, message, attempt)
            self._busy.add(me)
            try:
                await handler(delivery)
            except Exception:
                # A handler is expected to settle every delivery itself; if it raised
                # instead, redeliver rather than lose the message.
                log.exception("consumer_handler_crashed", consumer=group.durable)
                await delivery.nak(1.0)
            finally:
                self._busy.discard(me)

    def pending(self, durable: str) -> int:
        """Messages queued (not yet handed to a handler) for group *durable*."""
        group = self._groups.get(durable)
        return group.queue.qsize() if group else 0

    async def close(self) -> None:
        """Stop: idle workers at once, busy ones after their current message (or the grace)."""
        self._closed = True
        workers: list[asyncio.Task[None]] = []
        for group in self._groups.values():
            for handle in group.timers:
                handle.cancel()
            for task in group.workers:
                if task not in self._busy:
                    task.cancel()
            workers.extend(group.workers)
        await finish(workers, GRACE_SECONDS)
        self._groups.clear()

    async def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": "up",
            "durability": "memory: queued messages are rebuilt from the outbox after a restart",
            "groups": {name: group.queue.qsize() for name, group in self._groups.items()},
        }
