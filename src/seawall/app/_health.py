"""Liveness and readiness: ``/health/live`` and ``/health/ready``."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from seawall.app._state import ServiceState
from seawall.errors import DatabaseError

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
