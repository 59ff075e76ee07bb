"""Health: ``/health/live``, ``/health/ready`` and ``/health/dependencies``."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from seawall.app._state import ServiceState
from seawall.errors import DatabaseError
from seawall.messaging import outbox_lag

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

    status: Literal["ok", "degraded", "unavailable"]
    critical: bool
    latency_ms: float | None = None
    error: str | None = None
    details: dict[str, Any] = {}
    warnings: list[str] = []


class DependencyReport(BaseModel):
    """Every dependency with its state; ``status`` is the worst that matters."""

    status: Literal["ok", "degraded", "unavailable"]
    dependencies: dict[str, Dependency]


# The outbox counts as degraded when its oldest pending event is older than this.
OUTBOX_LAG_DEGRADED_SECONDS = 60.0


@router.get(
    "/health/dependencies",
    response_model=DependencyReport,
    responses={503: {"model": DependencyReport}},
    summary="Each dependency's state",
)
async def dependencies(request: Request) -> JSONResponse:
    """Report the database (critical), the message bus and the outbox (optional).

    A critical dependency that is down makes the answer ``503`` and ``unavailable``;
    an optional one makes it ``degraded`` (still ``200``): with the broker down the
    API keeps accepting changes and their events wait in the outbox. Durability
    risks of the broker (a stream in memory, one replica, acks not fsynced) are
    listed as warnings.
    """
    state = ServiceState.of(request)
    report: dict[str, Dependency] = {}
    started = time.perf_counter()
    try:
        await state.database.ping()
        report["database"] = Dependency(status="ok", critical=True, latency_ms=_ms_since(started))
    except DatabaseError as exc:
        report["database"] = Dependency(
            status="unavailable", critical=True, latency_ms=_ms_since(started), error=str(exc)
        )
    if state.messaging is not None:
        report["bus"] = await _bus_dependency(state)
    if report["database"].status == "ok":
        report["outbox"] = await _outbox_dependency(state)
    overall: Literal["ok", "degraded", "unavailable"] = "ok"
    for dependency in report.values():
        if dependency.status != "ok":
            if dependency.critical:
                overall = "unavailable"
                break
            overall = "degraded"
    body = DependencyReport(status=overall, dependencies=report)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=503 if overall == "unavailable" else 200
    )


async def _bus_dependency(state: ServiceState) -> Dependency:
    assert state.messaging is not None
    started = time.perf_counter()
    health = await state.messaging.health()
    warnings = list(health.pop("durability_warnings", []))
    error = health.pop("error", None)
    up = health.pop("status", "down") == "up"
    return Dependency(
        status="ok" if up else "degraded",
        critical=False,
        latency_ms=_ms_since(started),
        error=None if up else (error or "the message bus is not connected"),
        details=health,
        warnings=warnings,
    )


async def _outbox_dependency(state: ServiceState) -> Dependency:
    lag = await outbox_lag(state.database)
    warnings = []
    if lag.parked:
        warnings.append(
            f"{lag.parked} event(s) parked: the broker refused them; see `seawall outbox status`"
        )
    late = lag.oldest_age_seconds > OUTBOX_LAG_DEGRADED_SECONDS
    return Dependency(
        status="degraded" if late or lag.parked else "ok",
        critical=False,
        error=f"oldest unpublished event is {lag.oldest_age_seconds:.0f}s old" if late else None,
        details={
            "pending": lag.pending,
            "oldest_age_seconds": round(lag.oldest_age_seconds, 3),
            "retrying": lag.retrying,
            "parked": lag.parked,
        },
        warnings=warnings,
    )
