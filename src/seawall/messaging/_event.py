"""The CloudEvents 1.0 envelope seawall publishes and consumes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seawall.ids import new_id
from seawall.observability import current_causation_id, current_correlation_id

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_TOKEN_JUNK = re.compile(r"[^a-z0-9_-]+")

SUBJECT_PREFIX = "seawall"


class Event(BaseModel):
    """A CloudEvents 1.0 envelope (JSON format) with correlation extensions.

    ``type`` is lower dotted (``case.created``); ``subject`` names the aggregate
    instance the event is about. Create one with `Event.create`, which fills
    the id, the time and the correlation ids of the current context.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=3, max_length=200)
    subject: str | None = Field(default=None, max_length=200)
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any] | None = None
    correlationid: str | None = Field(default=None, max_length=128)
    causationid: str | None = Field(default=None, max_length=128)

    @field_validator("type")
    @classmethod
    def _dotted_type(cls, value: str) -> str:
        if not _EVENT_TYPE.fullmatch(value):
            raise ValueError("event type must be lower dotted, like 'case.created'")
        return value

    @field_validator("time")
    @classmethod
    def _aware_time(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event time must be timezone-aware")
        return value.astimezone(UTC)

    @classmethod
    def create(
        cls,
        type: str,
        *,
        source: str,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        time: datetime | None = None,
    ) -> Event:
        """Build an event with a fresh id, the current time and the context's correlation.

        Args:
            type: the lower dotted event type, e.g. ``case.created``.
            source: the URI-reference of the producer, e.g. ``/seawall/cases``.
            subject: the aggregate instance, e.g. the case id.
            data: the JSON payload.
            correlation_id: defaults to the current correlation id.
            causation_id: defaults to the current causation id.
            time: defaults to now (UTC).
        """
        return cls(
            id=new_id(),
            source=source,
            type=type,
            subject=subject,
            time=time or datetime.now(UTC),
            data=data,
            correlationid=correlation_id or current_correlation_id(),
            causationid=causation_id or current_causation_id(),
        )

    @property
    def aggregate_type(self) -> str:
        """The aggregate kind: the first segment of the type (``case`` for ``case.created``)."""
        return self.type.split(".", 1)[0]


class ReceivedEvent(Event):
    """An event as a consumer receives it: other producers' extension attributes allowed.

    seawall's own events have exactly the fields of `Event`; envelopes from other
    producers may carry CloudEvents extensions (``traceparent``, ``partitionkey``),
    which are kept in ``model_extra`` instead of being refused.
    """

    model_config = ConfigDict(frozen=True, extra="allow")


def context_of(source: str) -> str:
    """Return the bounded context named by an event *source*: its last path segment.

    ``/seawall/cases`` gives ``cases``; anything outside ``[a-z0-9_-]`` becomes ``_``,
    so the result is always one valid NATS subject token.
    """
    segment = next((part for part in reversed(source.lower().split("/")) if part), "")
    return _TOKEN_JUNK.sub("_", segment).strip("_") or "default"


def subject_for(event: Event, *, prefix: str = SUBJECT_PREFIX) -> str:
    """Return the bus subject of *event*: ``<prefix>.<context>.<type>``.

    ``case.created`` from ``/seawall/cases`` goes to ``seawall.cases.case.created``.
    """
    return f"{prefix}.{context_of(event.source)}.{event.type}"


def subject_matches(pattern: str, subject: str) -> bool:
    """Match *subject* against a NATS subject *pattern* (``*`` one token, ``>`` the rest)."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(tokens) > index
        if index >= len(tokens) or (part != "*" and part != tokens[index]):
            return False
    return len(tokens) == len(wanted)
