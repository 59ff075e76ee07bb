"""The cases domain: the case model, its API shapes and its status rules."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator


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


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ExternalRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


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
