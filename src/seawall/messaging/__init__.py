"""Events, the transactional outbox and its relay, buses, consumers with an inbox, dead letters.

An `Event` is a CloudEvents 1.0 envelope with the ``correlationid`` and
``causationid`` extensions. `Outbox.add` writes it inside the caller's database
transaction, so the event exists exactly when the change that caused it does
(never "save, then publish"). An `OutboxRelay` publishes committed rows to a
`Bus` (`NatsBus` for JetStream, `InProcessBus` for the embedded default). A
`Worker` runs the handlers registered with `consumer`: each event's effects
commit with its inbox row, failures are retried with delay, and messages that
keep failing go to `DeadLetters` for an operator to replay.
"""

from typing import TYPE_CHECKING, Any

from seawall.errors import PublishError, StreamMismatch, Unprocessable
from seawall.messaging._bus import Bus, Delivery, InProcessBus, Message
from seawall.messaging._consumer import (
    Consumer,
    ConsumerRegistry,
    EventHandler,
    Worker,
    consumer,
    record_in_inbox,
    registry,
)
from seawall.messaging._dead_letters import DeadLetter, DeadLetters, DeadLetterState
from seawall.messaging._event import (
    SUBJECT_PREFIX,
    Event,
    ReceivedEvent,
    context_of,
    subject_for,
    subject_matches,
)
from seawall.messaging._lease import Lease
from seawall.messaging._outbox import Outbox
from seawall.messaging._relay import OutboxLag, OutboxRelay, outbox_lag, outbox_message
from seawall.messaging._runtime import Messaging, build_bus, load_consumers

if TYPE_CHECKING:
    from seawall.messaging._nats import NatsBus


def __getattr__(name: str) -> Any:
    # nats-py loads only for those who use NATS.
    if name == "NatsBus":
        from seawall.messaging._nats import NatsBus  # noqa: PLC0415

        return NatsBus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUBJECT_PREFIX",
    "Bus",
    "Consumer",
    "ConsumerRegistry",
    "DeadLetter",
    "DeadLetterState",
    "DeadLetters",
    "Delivery",
    "Event",
    "EventHandler",
    "InProcessBus",
    "Lease",
    "Message",
    "Messaging",
    "NatsBus",
    "Outbox",
    "OutboxLag",
    "OutboxRelay",
    "PublishError",
    "ReceivedEvent",
    "StreamMismatch",
    "Unprocessable",
    "Worker",
    "build_bus",
    "consumer",
    "context_of",
    "load_consumers",
    "outbox_lag",
    "outbox_message",
    "record_in_inbox",
    "registry",
    "subject_for",
    "subject_matches",
]
