"""The admin API, ``/admin``: dependencies, breakers, outbox and consumers.

Every route needs credentials (see `seawall.app._admin_auth.admin_principal`):
GET needs the ``read`` scope, POST and DELETE ``operate``. Dead letters,
webhooks and parked deliveries live in `seawall.app._admin_events`, included
here. The JSON shapes are documented in ``docs/operations.md``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from seawall.app import _admin_events
from seawall.app._admin_auth import (
    AUTH_RESPONSES,
    PROBLEM,
    Count,
    Pagination,
    admin_principal,
    decode_cursor,
    encode_cursor,
)
from seawall.app._problems import Problem
from seawall.app._state import ServiceState
from seawall.db import outbox
from seawall.errors import ConfigurationError
from seawall.http import ExternalService
from seawall.messaging import (
    Consumer,
    DeadLetters,
    InProcessBus,
    OutboxRelay,
    load_consumers,
    outbox_lag,
)
from seawall.resilience import CircuitBreaker

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(admin_principal)],
    responses=AUTH_RESPONSES,
)


# -- dependencies ---------------------------------------------------------------------


class AdminDependency(BaseModel):
    """One dependency as the last background check saw it."""

    name: str
    status: Literal["healthy", "degraded", "unhealthy"]
    healthy: bool
    critical: bool
    kind: str
    checked_at: str
    latency_ms: float | None = None
    error: str | None = None
    breaker: str | None = None
    details: dict[str, Any] = {}
    warnings: list[str] = []


class AdminDependencies(BaseModel):
    """Every dependency, sorted by name; ``status`` is the worst that matters."""

    status: Literal["healthy", "degraded", "unhealthy"]
    checked_at: str
    data: list[AdminDependency]


@router.get("/dependencies", response_model=AdminDependencies, summary="Dependencies")
async def list_dependencies(request: Request) -> AdminDependencies:
    """Each dependency's status, with its breaker state (from the background checks)."""
    report = (await ServiceState.of(request).health.report()).as_dict()
    return AdminDependencies(
        status=report["status"],
        checked_at=report["checked_at"],
        data=[
            AdminDependency(name=name, **body)
            for name, body in sorted(report["dependencies"].items())
        ],
    )


# -- breakers -------------------------------------------------------------------------


class AdminBreaker(BaseModel):
    """One external service's circuit breaker."""

    name: str
    state: Literal["closed", "open", "half_open"]
    critical: bool
    failure_count: int
    retry_after_seconds: float = Field(description="Seconds until a probe is let through.")
    recovery_timeout_seconds: float


class AdminBreakers(BaseModel):
    """The breakers of the external services, sorted by name."""

    data: list[AdminBreaker]


def _breaker_view(service: ExternalService, breaker: CircuitBreaker) -> AdminBreaker:
    state = breaker.state.value
    return AdminBreaker(
        name=service.name,
        state=state,
        critical=service.critical,
        failure_count=breaker.failure_count,
        retry_after_seconds=round(breaker.retry_after, 3),
        recovery_timeout_seconds=breaker.recovery_timeout,
    )


def _breaker(request: Request, name: str) -> tuple[ExternalService, CircuitBreaker]:
    services = ServiceState.of(request).services
    service = services.get(name)
    if service is None or service.breaker is None:
        raise Problem(404, "breaker-not-found", f"no external service {name!r} with a breaker")
    return service, service.breaker


@router.get("/breakers", response_model=AdminBreakers, summary="Circuit breakers")
async def list_breakers(request: Request) -> AdminBreakers:
    """Every external service's breaker: state, counted failures, time to the next probe."""
    services = ServiceState.of(request).services
    views = []
    for name in sorted(services):
        service = services[name]
        if service.breaker is not None:
            await service.breaker.refresh()
            views.append(_breaker_view(service, service.breaker))
    return AdminBreakers(data=views)


BreakerName = Annotated[str, Path(max_length=64, pattern="^[^\\x00]*$")]


class OpenBreaker(BaseModel):
    """How long to hold a breaker open (its recovery timeout when omitted)."""

    duration_seconds: float | None = Field(default=None, gt=0, le=86400)


@router.post(
    "/breakers/{name}/open",
    response_model=AdminBreaker,
    responses={404: PROBLEM, 422: PROBLEM},
    summary="Force a breaker open",
)
async def open_breaker(
    request: Request,
    name: BreakerName,
    body: Annotated[OpenBreaker | None, Body()] = None,
) -> AdminBreaker:
    """Open the breaker now (every instance, with Redis); it probes after the duration."""
    service, breaker = _breaker(request, name)
    await breaker.open(duration=body.duration_seconds if body else None)
    return _breaker_view(service, breaker)


@router.post(
    "/breakers/{name}/close",
    response_model=AdminBreaker,
    responses={404: PROBLEM},
    summary="Force a breaker closed",
)
async def close_breaker(request: Request, name: BreakerName) -> AdminBreaker:
    """Close the breaker now and forget its counted failures."""
    service, breaker = _breaker(request, name)
    await breaker.close()
    return _breaker_view(service, breaker)


@router.post(
    "/breakers/{name}/reset",
    response_model=AdminBreaker,
    responses={404: PROBLEM},
    summary="Reset a breaker",
)
async def reset_breaker(request: Request, name: BreakerName) -> AdminBreaker:
    """Return the breaker to its initial state (closed, nothing counted, shared state removed)."""
    service, breaker = _breaker(request, name)
    await breaker.reset()
    return _breaker_view(service, breaker)


# -- outbox ---------------------------------------------------------------------------


class AdminOutboxLag(BaseModel):
    """How far publishing is behind."""

    pending: int
    oldest_age_seconds: float
    retrying: int
    parked: int


class AdminOutboxEvent(BaseModel):
    """One outbox row (the payload is left out)."""

    seq: int
    event_id: str
    type: str
    subject: str | None
    aggregate: str
    state: Literal["pending", "retrying", "parked", "published"]
    attempts: int
    created_at: datetime
    published_at: datetime | None
    next_attempt_at: datetime | None
    parked_at: datetime | None
    last_error: str | None
    correlation_id: str | None


class AdminOutboxEvents(BaseModel):
    """Outbox rows, newest first."""

    data: list[AdminOutboxEvent]
    pagination: Pagination


@router.get("/outbox", response_model=AdminOutboxLag, summary="Outbox lag")
async def outbox_status(request: Request) -> AdminOutboxLag:
    """Pending rows, the oldest one's age, rows retrying and rows parked."""
    lag = await outbox_lag(ServiceState.of(request).database)
    return AdminOutboxLag(
        pending=lag.pending,
        oldest_age_seconds=round(lag.oldest_age_seconds, 3),
        retrying=lag.retrying,
        parked=lag.parked,
    )


def _outbox_state(row: Any) -> Literal["pending", "retrying", "parked", "published"]:
    if row["published_at"] is not None:
        return "published"
    if row["parked_at"] is not None:
        return "parked"
    return "retrying" if row["next_attempt_at"] is not None else "pending"


@router.get(
    "/outbox/recent",
    response_model=AdminOutboxEvents,
    responses={400: PROBLEM, 422: PROBLEM},
    summary="Recent outbox events",
)
async def outbox_recent(
    request: Request,
    state: Literal["all", "unpublished", "parked", "published"] = "all",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AdminOutboxEvents:
    """The newest outbox rows (optionally only unpublished, parked or published ones)."""
    query = sa.select(outbox).order_by(outbox.c.seq.desc()).limit(limit + 1)
    if state == "unpublished":
        query = query.where(outbox.c.published_at.is_(None))
    elif state == "parked":
        query = query.where(outbox.c.parked_at.is_not(None))
    elif state == "published":
        query = query.where(outbox.c.published_at.is_not(None))
    if cursor:
        (before,) = decode_cursor(cursor, int)
        query = query.where(outbox.c.seq < before)
    async with ServiceState.of(request).database.reading() as session:
        rows = (await session.execute(query)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return AdminOutboxEvents(
        data=[
            AdminOutboxEvent(
                seq=row["seq"],
                event_id=row["event_id"],
                type=row["event_type"],
                subject=row["subject"],
                aggregate=f"{row['aggregate_type']}:{row['aggregate_id']}",
                state=_outbox_state(row),
                attempts=row["attempts"],
                created_at=row["created_at"],
                published_at=row["published_at"],
                next_attempt_at=row["next_attempt_at"],
                parked_at=row["parked_at"],
                last_error=row["last_error"],
                correlation_id=row["correlation_id"],
            )
            for row in rows
        ],
        pagination=Pagination(
            limit=limit, next_cursor=encode_cursor(rows[-1]["seq"]) if more else None
        ),
    )


class Requeue(BaseModel):
    """Which parked outbox events to requeue: the given sequence numbers, or all."""

    seqs: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, max_length=10_000)


@router.post(
    "/outbox/requeue",
    response_model=Count,
    responses={422: PROBLEM},
    summary="Requeue parked outbox events",
)
async def outbox_requeue(request: Request, body: Annotated[Requeue | None, Body()] = None) -> Count:
    """Put parked events (refused by the broker) back in line for the relay."""
    state = ServiceState.of(request)
    relay = state.messaging.relay if state.messaging is not None else None
    relay = relay or OutboxRelay(state.database, InProcessBus())
    count = await relay.requeue(body.seqs if body and body.seqs is not None else None)
    return Count(action="requeue", count=count)


# -- consumers ------------------------------------------------------------------------


class AdminConsumer(BaseModel):
    """One consumer group (durable name) and how far behind it is."""

    durable: str
    subjects: list[str]
    bus: str
    running_here: bool
    pending: int | None = Field(description="Messages not yet delivered; None if unknown.")
    ack_pending: int | None = Field(description="Delivered, not yet acknowledged (NATS).")
    dead_letters: int
    replays_requested: int
    error: str | None = None


class AdminConsumers(BaseModel):
    """Every consumer group this service knows, sorted by durable name."""

    data: list[AdminConsumer]


def _known_consumers(state: ServiceState) -> tuple[list[Consumer], set[str]]:
    worker = state.messaging.worker if state.messaging is not None else None
    if worker is not None:
        return list(worker.consumers.values()), set(worker.consumers)
    try:
        return load_consumers(state.settings.consumer_modules), set()
    except ConfigurationError:
        return [], set()


@router.get("/consumers", response_model=AdminConsumers, summary="Consumer lag")
async def list_consumers(request: Request) -> AdminConsumers:
    """Each consumer group's lag on the bus, dead letters and requested replays."""
    state = ServiceState.of(request)
    consumers, here = _known_consumers(state)
    letters = DeadLetters(state.database)
    dead = await letters.count(state="dead")
    replays = await letters.count(state="replay")
    bus = state.messaging.bus if state.messaging is not None else None
    connected = state.messaging is not None and state.messaging.connected
    views = []
    for spec in sorted(consumers, key=lambda c: c.durable):
        pending: int | None = None
        ack_pending: int | None = None
        error = None
        if isinstance(bus, InProcessBus):
            pending, ack_pending = bus.pending(spec.durable), 0
        elif bus is not None and connected and hasattr(bus, "consumer_lag"):
            try:
                lag = await bus.consumer_lag(spec.durable)
                pending, ack_pending = lag["pending"], lag["ack_pending"]
            except Exception as exc:
                # Reported in the answer, not raised: one group's error is not the page's.
                error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            error = "the bus is not connected in this process"
        views.append(
            AdminConsumer(
                durable=spec.durable,
                subjects=list(spec.subjects),
                bus=bus.kind if bus is not None else "none",
                running_here=spec.durable in here,
                pending=pending,
                ack_pending=ack_pending,
                dead_letters=dead.get(spec.durable, 0),
                replays_requested=replays.get(spec.durable, 0),
                error=error,
            )
        )
    return AdminConsumers(data=views)


router.include_router(_admin_events.router)
