"""The cases domain: the case model, its API shapes and its status rules."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)


class Priority(StrEnum):
    """How urgent a case is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Status(StrEnum):
    """Where a case is in its life."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


# Which status changes are allowed. Closed is final; a resolved case can be
# reopened when the customer comes back.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.OPEN: frozenset({Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED}),
    Status.IN_PROGRESS: frozenset({Status.OPEN, Status.RESOLVED, Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset(),
}


def transition_allowed(current: Status, target: Status) -> bool:
    """Tell whether a case may move from *current* to *target* (staying put is allowed)."""
    return current == target or target in TRANSITIONS[current]


# Metadata a few hundred levels deep cannot be serialised back (pydantic gives up),
# which turned such a request into a 500; 32 levels is far more than metadata needs.
MAX_METADATA_DEPTH = 32


def _without_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _storable_json(value: object, depth: int = 0) -> None:
    """Refuse what JSON columns and JSON responses cannot hold.

    Python's JSON parser accepts NaN, Infinity (also as ``1e999``) and lone UTF-16
    surrogates (``"\\ud800"``); no database JSON column or strict encoder does.

    Raises:
        ValueError: *value* is nested too deep or holds one of those.
    """
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"must not be nested more than {MAX_METADATA_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or Infinity")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain unpaired UTF-16 surrogates") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key, depth)
            _storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, depth + 1)


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_without_nul),
]
ExternalRef = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_without_nul),
]


class CaseCreate(BaseModel):
    """The body of ``POST /cases``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"title": "Refund not received", "priority": "high", "customer_id": "cus_123"}
            ]
        },
    )

    title: Title
    priority: Priority
    external_id: ExternalRef | None = None
    customer_id: ExternalRef | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _storable_metadata(cls, value: object) -> object:
        # Before validation: pydantic would silently replace surrogates in keys.
        _storable_json(value)
        return value


class CasePatch(BaseModel):
    """The body of ``PATCH /cases/{id}``: the fields to change."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    priority: Priority | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> CasePatch:
        if self.status is None and self.priority is None:
            raise ValueError("give at least one of: status, priority")
        return self


class Case(BaseModel):
    """A case as the API returns it."""

    id: str
    title: str
    status: Status
    priority: Priority
    external_id: str | None
    customer_id: str | None
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def etag(self) -> str:
        """The strong entity tag of this version of the case."""
        return f'"v{self.version}"'


class PagePagination(BaseModel):
    """Paging facts in offset mode (``?page=``)."""

    page: int
    limit: int
    total: int
    totalPages: int  # noqa: N815 - the name our API has always used


class CursorPagination(BaseModel):
    """Paging facts in cursor mode (``?cursor=``); ``next_cursor`` is null on the last page."""

    limit: int
    next_cursor: str | None


class CaseList(BaseModel):
    """The body of ``GET /cases``."""

    data: list[Case]
    pagination: PagePagination | CursorPagination


class Activity(BaseModel):
    """One line of a case's timeline, written by the ``activity__from_cases`` consumer."""

    event_id: str
    type: str
    summary: str
    occurred_at: datetime
    recorded_at: datetime
    correlation_id: str | None = None


class ActivityList(BaseModel):
    """A case's timeline, oldest first."""

    data: list[Activity]
