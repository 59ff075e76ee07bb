"""Health: ``/health/live``, ``/health/ready`` and ``/health/dependencies``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from seawall.app._state import ServiceState
from seawall.config import Settings
from seawall.db import Database, WriteTurnStats
from seawall.errors import DatabaseError
from seawall.health import (
    DependencyResult,
    FunctionCheck,
    HealthCheck,
    HealthMonitor,
    ServiceCheck,
    Status,
)
from seawall.http import ServiceRegistry
from seawall.messaging import Messaging, outbox_lag

router = APIRouter(tags=["health"])


class Check(BaseModel):
    """The outcome of one readiness check."""

    status: Literal["ok", "unavailable"]
    latency_ms: float
    error: str | None = None


class Health(BaseModel):
    """The body of a health endpoint."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, Check] = {}


@router.get("/health/live", response_model=Health, summary="The process is up")
async def live() -> Health:
    """Answer 200 while the process can serve requests at all."""
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="The service can do its work",
)
async def ready(request: Request) -> JSONResponse:
    """Answer 200 when the database answers, 503 otherwise."""
    state = ServiceState.of(request)
    started = time.perf_counter()
    try:
        await state.database.ping()
        check = Check(status="ok", latency_ms=_ms_since(started))
    except DatabaseError as exc:
        check = Check(status="unavailable", latency_ms=_ms_since(started), error=str(exc))
    health = Health(status=check.status, checks={"database": check})
    return JSONResponse(
        health.model_dump(exclude_none=True), status_code=200 if check.status == "ok" else 503
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


class Dependency(BaseModel):
    """The state of one dependency, as ``/health/dependencies`` reports it."""

    status: Status
    healthy: bool
    critical: bool
    kind: str
    checked_at: str
    latency_ms: float | None = None
    error: str | None = None
    breaker: str | None = None
    details: dict[str, Any] = {}
    warnings: list[str] = []


class DependencyReport(BaseModel):
    """Every dependency with its state; ``status`` is the worst that matters."""

    status: Status
    checked_at: str
    dependencies: dict[str, Dependency]


# The outbox counts as degraded when its oldest pending event is older than this.
OUTBOX_LAG_DEGRADED_SECONDS = 60.0
# Share of the time between two checks SQLite's write turn may be held before a warning.
WRITE_TURN_BUSY_WARNING = 0.8


@router.get(
    "/health/dependencies",
    response_model=DependencyReport,
    responses={503: {"model": DependencyReport}},
    summary="Each dependency's state",
)
async def dependencies(request: Request) -> JSONResponse:
    """Report every dependency from the last background check.

    The database is critical; the message bus, the outbox, Redis and each
    external service declared optional degrade the service instead. A critical
    dependency that is down makes the answer ``503`` and ``unhealthy``; an
    optional one makes it ``degraded`` (still ``200``): with the broker down the
    API keeps accepting changes and their events wait in the outbox. The checks
    run every ``SEAWALL_HEALTH_INTERVAL_SECONDS``, so calling this often costs
    nothing; ``checked_at`` says how fresh the answer is.
    """
    state = ServiceState.of(request)
    report = await state.health.report()
    return JSONResponse(report.as_dict(), status_code=503 if report.status == "unhealthy" else 200)


def build_monitor(
    settings: Settings,
    database: Database,
    messaging: Messaging | None,
    services: ServiceRegistry,
    redis: Any = None,
) -> HealthMonitor:
    """The health monitor of the service: every dependency it has, checked in the background."""
    checks: list[HealthCheck] = [_DatabaseCheck(database)]
    if messaging is not None:
        checks.append(_BusCheck(messaging))
    checks.append(_OutboxCheck(database))
    if redis is not None:
        checks.append(FunctionCheck("redis", _redis_probe(redis), critical=False, kind="redis"))
    checks.extend(ServiceCheck(service) for service in services.values())
    return HealthMonitor(checks, interval=settings.health_interval_seconds)


def _database_probe(database: Database) -> Any:
    async def probe() -> dict[str, Any]:
        await database.ping()
        return {"backend": database.dialect}

    return probe


class _DatabaseCheck:
    """The database answers a ping; on SQLite, also how busy its writer was since the last check.

    SQLite takes one writer at a time (`Database.write_turn`). Held most of the
    time, writes queue behind each other: everything still works, slower, and
    an operator should know (a warning, not a degraded status).
    """

    name = "database"
    critical = True
    kind = "database"

    def __init__(self, database: Database, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._ping = FunctionCheck(
            self.name, _database_probe(database), critical=self.critical, kind=self.kind
        )
        self._clock = clock
        self._last: tuple[float, WriteTurnStats] | None = None

    async def check(self) -> DependencyResult:
        result = await self._ping.check()
        if self._database.dialect != "sqlite" or not result.healthy:
            return result
        usage = self._write_turn_since_last()
        if usage is None:
            return result
        details, warnings = usage
        return dataclasses.replace(
            result,
            details={**result.details, "write_turn": details},
            warnings=(*result.warnings, *warnings),
        )

    def _write_turn_since_last(self) -> tuple[dict[str, Any], tuple[str, ...]] | None:
        now, stats = self._clock(), self._database.write_turn_stats.snapshot()
        last, self._last = self._last, (now, stats)
        if last is None or now <= last[0]:
            return None  # the first check: nothing to compare with yet
        seconds, used = now - last[0], stats.since(last[1])
        timeouts = used.timeouts
        # A turn held across the previous check counts whole here: never above all the time.
        busy = min(1.0, used.held_seconds / seconds)
        details = {
            "busy": round(busy, 3),
            "turns_per_second": round(used.acquired / seconds, 1),
            "wait_ms": round(used.waited_seconds / max(used.acquired + timeouts, 1) * 1000.0, 2),
            "timeouts": timeouts,
            "seconds": round(seconds, 1),
        }
        warnings: list[str] = []
        if busy >= WRITE_TURN_BUSY_WARNING:
            warnings.append(
                f"SQLite's writer was busy {busy:.0%} of the last {seconds:.0f} s: writes "
                "queue behind each other; PostgreSQL takes many writers at once"
            )
        if timeouts:
            warnings.append(
                f"{timeouts} write(s) gave up waiting for SQLite's writer in the last "
                f"{seconds:.0f} s (database is locked)"
            )
        return details, tuple(warnings)


def _redis_probe(redis: Any) -> Any:
    async def probe() -> dict[str, Any]:
        await redis.ping()
        return {}

    return probe


class _BusCheck:
    name = "bus"
    critical = False
    kind = "bus"

    def __init__(self, messaging: Messaging) -> None:
        self._messaging = messaging

    async def check(self) -> DependencyResult:
        started = time.perf_counter()
        health = await self._messaging.health()
        warnings = tuple(health.pop("durability_warnings", []))
        error = health.pop("error", None)
        up = health.pop("status", "down") == "up"
        return DependencyResult(
            self.name,
            "healthy" if up else "unhealthy",
            self.critical,
            self.kind,
            latency_ms=_ms_since(started),
            error=None if up else (error or "the message bus is not connected"),
            details=health,
            warnings=warnings,
        )


class _OutboxCheck:
    name = "outbox"
    critical = False
    kind = "outbox"

    def __init__(self, database: Database) -> None:
        self._database = database

    async def check(self) -> DependencyResult:
        started = time.perf_counter()
        lag = await outbox_lag(self._database)
        warnings: tuple[str, ...] = ()
        if lag.parked:
            warnings = (
                f"{lag.parked} event(s) parked: the broker refused them; "
                "see `seawall outbox status`",
            )
        late = lag.oldest_age_seconds > OUTBOX_LAG_DEGRADED_SECONDS
        return DependencyResult(
            self.name,
            "degraded" if late or lag.parked else "healthy",
            self.critical,
            self.kind,
            latency_ms=_ms_since(started),
            error=f"oldest unpublished event is {lag.oldest_age_seconds:.0f}s old"
            if late
            else None,
            details={
                "pending": lag.pending,
                "oldest_age_seconds": round(lag.oldest_age_seconds, 3),
                "retrying": lag.retrying,
                "parked": lag.parked,
            },
            warnings=warnings,
        )
