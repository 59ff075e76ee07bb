"""The admin API's stored messages: dead letters, webhook deliveries, parked deliveries.

Included in `seawall.app._admin.router` (which adds the ``/admin`` prefix and
the authentication).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

from seawall.app._admin_auth import PROBLEM, Count, Pagination, decode_cursor, encode_cursor
from seawall.app._cases import _json_body
from seawall.app._problems import Problem
from seawall.app._state import ServiceState
from seawall.db import webhook_events
from seawall.messaging import DeadLetter, DeadLetters
from seawall.webhooks import WebhookFilter, WebhookLog

router = APIRouter()

_LIMIT = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
_CURSOR = Annotated[
    str | None, Query(max_length=200, description="The previous page's next_cursor.")
]
_NAME = Annotated[str | None, Query(max_length=200, pattern="^[^\\x00]*$")]


# -- dead letters ---------------------------------------------------------------------


class AdminDeadLetter(BaseModel):
    """A dead letter in a list: no body, no history."""

    id: int
    consumer: str
    message_id: str
    event_type: str | None
    state: Literal["dead", "replay", "replayed"]
    attempts: int
    error: str
    updated_at: datetime


class AdminDeadLetterDetail(AdminDeadLetter):
    """One dead letter with its subject, body (parsed when JSON) and attempt history."""

    subject: str
    body: Any
    history: list[dict[str, Any]]
    created_at: datetime
    replayed_at: datetime | None


class AdminDeadLetters(BaseModel):
    """Dead letters, newest first."""

    data: list[AdminDeadLetter]
    pagination: Pagination


def _letter(letter: DeadLetter) -> AdminDeadLetter:
    return AdminDeadLetter(
        id=letter.id,
        consumer=letter.consumer,
        message_id=letter.message_id,
        event_type=letter.event_type,
        state=letter.state,
        attempts=letter.attempts,
        error=letter.error,
        updated_at=letter.updated_at,
    )


@router.get(
    "/dead-letters",
    response_model=AdminDeadLetters,
    responses={400: PROBLEM, 422: PROBLEM},
    summary="Dead letters",
)
async def list_dead_letters(
    request: Request,
    consumer: _NAME = None,
    state: Literal["dead", "replay", "replayed", "all"] = "dead",
    limit: _LIMIT = 50,
    cursor: _CURSOR = None,
) -> AdminDeadLetters:
    """Messages consumers gave up on, newest first (by default those still ``dead``)."""
    before = decode_cursor(cursor, int)[0] if cursor else None
    letters = await DeadLetters(ServiceState.of(request).database).list(
        consumer=consumer,
        state=None if state == "all" else state,
        limit=limit + 1,
        before_id=before,
    )
    more = len(letters) > limit
    letters = letters[:limit]
    return AdminDeadLetters(
        data=[_letter(letter) for letter in letters],
        pagination=Pagination(
            limit=limit, next_cursor=encode_cursor(letters[-1].id) if more else None
        ),
    )


DeadLetterId = Annotated[int, Path(ge=1, le=2**62, description="The dead letter's id.")]


async def _dead_letter(request: Request, dead_letter_id: int) -> DeadLetter:
    letter = await DeadLetters(ServiceState.of(request).database).get(dead_letter_id)
    if letter is None:
        raise Problem(404, "dead-letter-not-found", f"there is no dead letter {dead_letter_id}")
    return letter


@router.get(
    "/dead-letters/{dead_letter_id}",
    response_model=AdminDeadLetterDetail,
    responses={404: PROBLEM, 422: PROBLEM},
    summary="One dead letter",
)
async def show_dead_letter(request: Request, dead_letter_id: DeadLetterId) -> AdminDeadLetterDetail:
    """The dead letter with its body and the history of its failed attempts."""
    letter = await _dead_letter(request, dead_letter_id)
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body
    return AdminDeadLetterDetail(
        **_letter(letter).model_dump(),
        subject=letter.subject,
        body=body,
        history=letter.history,
        created_at=letter.created_at,
        replayed_at=letter.replayed_at,
    )


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    status_code=202,
    response_model=Count,
    responses={404: PROBLEM, 409: PROBLEM},
    summary="Replay one dead letter",
)
async def replay_dead_letter(request: Request, dead_letter_id: DeadLetterId) -> Count:
    """Hand it back to its consumer: a worker running that group replays it, once."""
    letter = await _dead_letter(request, dead_letter_id)
    count = await DeadLetters(ServiceState.of(request).database).request_replay([letter.id])
    if count == 0:
        raise Problem(
            409, "dead-letter-not-dead", f"dead letter {letter.id} is {letter.state}, not dead"
        )
    return Count(action="replay", count=count)


@router.delete(
    "/dead-letters/{dead_letter_id}",
    status_code=204,
    responses={404: PROBLEM, 409: PROBLEM},
    summary="Purge one dead letter",
)
async def purge_dead_letter(request: Request, dead_letter_id: DeadLetterId) -> Response:
    """Delete it for good (not while a replay is pending)."""
    letter = await _dead_letter(request, dead_letter_id)
    if not await DeadLetters(ServiceState.of(request).database).purge([letter.id]):
        raise Problem(
            409, "dead-letter-replaying", f"dead letter {letter.id} is waiting for its replay"
        )
    return Response(status_code=204)


class DeadLetterSelection(BaseModel):
    """Which dead letters: ``ids``, or every one of ``consumer``, or ``all: true``."""

    ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )
    consumer: str | None = Field(default=None, max_length=200, pattern="^[^\\x00]*$")
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> DeadLetterSelection:
        if self.ids is None and self.consumer is None and not self.all:
            raise ValueError("name ids, or a consumer, or set all to true")
        return self


@router.post(
    "/dead-letters/replay",
    status_code=202,
    response_model=Count,
    dependencies=[Depends(_json_body)],
    responses={415: PROBLEM, 422: PROBLEM},
    summary="Replay dead letters",
)
async def replay_dead_letters(request: Request, body: DeadLetterSelection) -> Count:
    """Queue a replay of the selected dead letters (those still ``dead``)."""
    count = await DeadLetters(ServiceState.of(request).database).request_replay(
        body.ids, consumer=body.consumer
    )
    return Count(action="replay", count=count)


@router.post(
    "/dead-letters/purge",
    response_model=Count,
    dependencies=[Depends(_json_body)],
    responses={415: PROBLEM, 422: PROBLEM},
    summary="Purge dead letters",
)
async def purge_dead_letters(request: Request, body: DeadLetterSelection) -> Count:
    """Delete the selected dead letters (``dead`` or ``replayed``) for good."""
    count = await DeadLetters(ServiceState.of(request).database).purge(
        body.ids, consumer=body.consumer
    )
    return Count(action="purge", count=count)


# -- webhooks -------------------------------------------------------------------------


class AdminWebhook(BaseModel):
    """A stored webhook delivery in a list: no headers, no body."""

    id: str
    provider: str
    delivery_id: str | None
    type: str | None
    status: Literal["received", "processed", "ignored", "parked", "failed"]
    attempts: int
    last_error: str | None
    correlation_id: str | None
    received_at: datetime
    processed_at: datetime | None
    next_attempt_at: datetime | None
    waiting_for: str | None


class AdminWebhookDetail(AdminWebhook):
    """One delivery with its (safe) headers and its body, parsed when JSON."""

    headers: dict[str, str]
    body: Any


class AdminWebhooks(BaseModel):
    """Stored deliveries, newest first."""

    data: list[AdminWebhook]
    pagination: Pagination


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _filter(
    provider: str | None,
    event_type: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
) -> WebhookFilter:
    try:
        return WebhookFilter(
            provider=provider,
            event_type=event_type,
            status=status,
            since=_aware(since),
            until=_aware(until),
        )
    except ValueError as exc:
        raise Problem(422, "validation-error", str(exc)) from None


def _webhook(row: Any) -> AdminWebhook:
    # The row's columns are the model's fields, but for the event's type.
    return AdminWebhook.model_validate({**row, "type": row["event_type"]})


async def _page_of_webhooks(
    request: Request, selection: WebhookFilter, limit: int, cursor: str | None
) -> AdminWebhooks:
    table = webhook_events.c
    columns = [c for c in webhook_events.c if c.name not in {"body", "headers"}]
    query = (
        sa.select(*columns)
        .where(*selection.where())
        .order_by(table.received_at.desc(), table.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        moment, last_id = decode_cursor(cursor, str, str)
        try:
            at = datetime.fromisoformat(moment).astimezone(UTC)
        except (ValueError, OverflowError):
            raise Problem(
                400, "invalid-cursor", "the cursor is not one this API returned"
            ) from None
        query = query.where(
            sa.or_(table.received_at < at, sa.and_(table.received_at == at, table.id < last_id))
        )
    async with ServiceState.of(request).database.reading() as session:
        rows = (await session.execute(query)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        encode_cursor(rows[-1]["received_at"].isoformat(), rows[-1]["id"]) if more else None
    )
    return AdminWebhooks(
        data=[_webhook(row) for row in rows],
        pagination=Pagination(limit=limit, next_cursor=next_cursor),
    )


_PROVIDER = Annotated[str | None, Query(max_length=64, pattern="^[^\\x00]*$")]
_TYPE = Annotated[
    str | None,
    Query(alias="type", max_length=200, pattern="^[^\\x00]*$", description="* matches anything."),
]


@router.get(
    "/webhooks",
    response_model=AdminWebhooks,
    responses={400: PROBLEM, 422: PROBLEM},
    summary="Stored webhook deliveries",
)
async def list_webhooks(
    request: Request,
    provider: _PROVIDER = None,
    event_type: _TYPE = None,
    status: Literal["received", "processed", "ignored", "parked", "failed"] | None = None,
    since: Annotated[datetime | None, Query(description="Received at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Received before.")] = None,
    limit: _LIMIT = 50,
    cursor: _CURSOR = None,
) -> AdminWebhooks:
    """Deliveries, newest first, filtered by provider, type, status and time."""
    selection = _filter(provider, event_type, status, since, until)
    return await _page_of_webhooks(request, selection, limit, cursor)


WebhookId = Annotated[str, Path(max_length=36, pattern="^[^\\x00]*$")]


@router.get(
    "/webhooks/{webhook_id}",
    response_model=AdminWebhookDetail,
    responses={404: PROBLEM},
    summary="One webhook delivery",
)
async def show_webhook(request: Request, webhook_id: WebhookId) -> AdminWebhookDetail:
    """The delivery with its headers (signatures removed) and body."""
    found = await WebhookLog(ServiceState.of(request).database).get(webhook_id)
    if found is None:
        raise Problem(404, "webhook-not-found", f"there is no stored delivery {webhook_id!r}")
    detail = found.detail()
    return AdminWebhookDetail(
        **{key: value for key, value in detail.items() if key not in {"headers", "body"}},
        headers=detail["headers"],
        body=detail["body"],
    )


class ReplayOptions(BaseModel):
    """``force``: run the handlers even if the delivery was already processed."""

    force: bool = False


@router.post(
    "/webhooks/{webhook_id}/replay",
    status_code=202,
    response_model=Count,
    responses={404: PROBLEM, 422: PROBLEM},
    summary="Replay one webhook delivery",
)
async def replay_webhook(
    request: Request,
    webhook_id: WebhookId,
    body: Annotated[ReplayOptions | None, Body()] = None,
) -> Count:
    """Run its processing again, never its verification.

    Without ``force``, a delivery already processed or ignored is skipped.
    """
    count = await WebhookLog(ServiceState.of(request).database).replay(
        [webhook_id], force=bool(body and body.force)
    )
    if count == 0:
        raise Problem(404, "webhook-not-found", f"there is no stored delivery {webhook_id!r}")
    return Count(action="replay", count=count)


class WebhookReplay(BaseModel):
    """A bulk replay: every delivery the filter picks (at least one field), up to ``limit``."""

    provider: str | None = Field(default=None, max_length=64, pattern="^[^\\x00]*$")
    type: str | None = Field(default=None, max_length=200, pattern="^[^\\x00]*$")
    status: Literal["received", "processed", "ignored", "parked", "failed"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    force: bool = False
    limit: int = Field(default=1000, ge=1, le=10_000)


@router.post(
    "/webhooks/replay",
    status_code=202,
    response_model=Count,
    dependencies=[Depends(_json_body)],
    responses={400: PROBLEM, 415: PROBLEM, 422: PROBLEM},
    summary="Replay webhook deliveries by filter",
)
async def replay_webhooks(request: Request, body: WebhookReplay) -> Count:
    """Queue a replay of every delivery the filter picks; an empty filter is refused."""
    selection = _filter(body.provider, body.type, body.status, body.since, body.until)
    if selection.empty:
        raise Problem(
            400,
            "empty-filter",
            "give at least one of provider, type, status, since or until",
        )
    count = await WebhookLog(ServiceState.of(request).database).replay(
        None, selection, force=body.force, limit=body.limit
    )
    return Count(action="replay", count=count)


# -- parked deliveries ----------------------------------------------------------------


@router.get(
    "/parked",
    response_model=AdminWebhooks,
    responses={400: PROBLEM, 422: PROBLEM},
    summary="Parked webhook deliveries",
)
async def list_parked(
    request: Request,
    provider: _PROVIDER = None,
    limit: _LIMIT = 50,
    cursor: _CURSOR = None,
) -> AdminWebhooks:
    """Deliveries waiting for a record that did not exist yet (``waiting_for``), newest first."""
    selection = _filter(provider, None, "parked", None, None)
    return await _page_of_webhooks(request, selection, limit, cursor)


async def _release(request: Request, *conditions: Any) -> int:
    """Send the parked deliveries matching *conditions* back to processing, now.

    A release is a replay (never forced) of each: one ``webhook.replayed`` outbox
    event per delivery, in one transaction. The row stays ``parked`` until the
    worker processes it; should its scheduled try come first, the later one finds
    it processed and does nothing.
    """
    database = ServiceState.of(request).database
    query = sa.select(webhook_events.c.id).where(webhook_events.c.status == "parked", *conditions)
    async with database.reading() as session:
        ids = list((await session.execute(query.limit(10_000))).scalars())
    if not ids:
        return 0
    return await WebhookLog(database).replay(ids, WebhookFilter(status="parked"), limit=len(ids))


@router.post(
    "/parked/{webhook_id}/release",
    status_code=202,
    response_model=Count,
    responses={404: PROBLEM, 409: PROBLEM},
    summary="Release one parked delivery",
)
async def release_parked(request: Request, webhook_id: WebhookId) -> Count:
    """Process it again now instead of at its next scheduled try."""
    count = await _release(request, webhook_events.c.id == webhook_id)
    if count == 0:
        found = await WebhookLog(ServiceState.of(request).database).get(webhook_id)
        if found is None:
            raise Problem(404, "webhook-not-found", f"there is no stored delivery {webhook_id!r}")
        raise Problem(409, "webhook-not-parked", f"delivery {webhook_id!r} is {found.status}")
    return Count(action="release", count=count)


class ParkedSelection(BaseModel):
    """Which parked deliveries: ``ids``, or those ``waiting_for`` a key, or ``all: true``."""

    ids: list[Annotated[str, Field(max_length=36)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )
    waiting_for: str | None = Field(default=None, max_length=200, pattern="^[^\\x00]*$")
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> ParkedSelection:
        if self.ids is None and self.waiting_for is None and not self.all:
            raise ValueError("name ids, or waiting_for, or set all to true")
        return self


@router.post(
    "/parked/release",
    status_code=202,
    response_model=Count,
    dependencies=[Depends(_json_body)],
    responses={415: PROBLEM, 422: PROBLEM},
    summary="Release parked deliveries",
)
async def release_parked_many(request: Request, body: ParkedSelection) -> Count:
    """Process the selected parked deliveries again now."""
    conditions: list[Any] = []
    if body.ids is not None:
        conditions.append(webhook_events.c.id.in_(body.ids))
    if body.waiting_for is not None:
        conditions.append(webhook_events.c.waiting_for == body.waiting_for)
    return Count(action="release", count=await _release(request, *conditions))
