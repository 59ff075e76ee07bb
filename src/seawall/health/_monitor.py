"""Dependency health: checks, the background monitor, and the report it keeps.

Each dependency has a `HealthCheck`; the `HealthMonitor` runs them all,
concurrently and each under a timeout, every *interval* seconds, and keeps the
last `HealthReport`, so ``/health/dependencies`` answers from memory however
often it is called. The overall status is the worst that matters: a critical
dependency down makes it ``unhealthy``, an optional one down or any one
impaired makes it ``degraded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog

__all__ = [
    "DependencyResult",
    "FunctionCheck",
    "HealthCheck",
    "HealthMonitor",
    "HealthReport",
    "Status",
    "overall_status",
]

Status = Literal["healthy", "degraded", "unhealthy"]

_log = structlog.get_logger("seawall.health")
_ERROR_LIMIT = 300


@dataclass(frozen=True, slots=True)
class DependencyResult:
    """One dependency's state at one check.

    Attributes:
        name: the dependency (``database``, ``bus``, a service's name).
        status: ``healthy``; ``degraded`` (working, impaired); ``unhealthy`` (down).
        critical: whether the service cannot work without it.
        kind: what it is (``database``, ``bus``, ``outbox``, ``redis``, ``http``).
        latency_ms: how long the check took, when it measured a call.
        error: the last error, one line, no secrets.
        breaker: the circuit breaker's state, for a dependency behind one.
        details: facts specific to the kind (pending events, pool size, …).
        warnings: things an operator should know although it works.
        checked_at: when the check finished (UTC).
    """

    name: str
    status: Status
    critical: bool
    kind: str = "other"
    latency_ms: float | None = None
    error: str | None = None
    breaker: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def healthy(self) -> bool:
        """Whether the status is ``healthy``."""
        return self.status == "healthy"

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (None fields left out)."""
        body: dict[str, Any] = {
            "status": self.status,
            "healthy": self.healthy,
            "critical": self.critical,
            "kind": self.kind,
            "checked_at": self.checked_at.isoformat(),
        }
        for key in ("latency_ms", "error", "breaker"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body["details"] = dict(self.details)
        body["warnings"] = list(self.warnings)
        return body


def overall_status(results: Iterable[DependencyResult]) -> Status:
    """The worst status that matters (pure).

    ``unhealthy`` when a critical dependency is unhealthy; ``degraded`` when an
    optional one is unhealthy or any one is degraded; ``healthy`` otherwise.
    """
    status: Status = "healthy"
    for result in results:
        if result.status == "unhealthy" and result.critical:
            return "unhealthy"
        if result.status != "healthy":
            status = "degraded"
    return status


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every dependency's last result and the overall status."""

    status: Status
    dependencies: Mapping[str, DependencyResult]
    checked_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "status": self.status,
            "checked_at": self.checked_at.isoformat(),
            "dependencies": {name: result.as_dict() for name, result in self.dependencies.items()},
        }


class HealthCheck(Protocol):
    """Something that can tell whether one dependency works."""

    name: str
    critical: bool

    async def check(self) -> DependencyResult:
        """Look at the dependency now; raise or return an ``unhealthy`` result if down."""
        ...


def clip(error: BaseException | str) -> str:
    """One line of at most 300 characters describing *error*."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


class FunctionCheck:
    """A check from an async function: it returns details, or raises when down.

    Args:
        name: the dependency's name.
        probe: ``await probe()`` returns a dict of details (or None) when the
            dependency works, and raises when it does not.
        critical: whether the service cannot work without it.
        kind: what it is, for the report.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[Mapping[str, Any] | None]],
        *,
        critical: bool = True,
        kind: str = "other",
    ) -> None:
        self.name = name
        self.critical = critical
        self.kind = kind
        self._probe = probe

    def __repr__(self) -> str:
        return f"FunctionCheck({self.name!r}, critical={self.critical})"

    async def check(self) -> DependencyResult:
        """Run the probe and time it."""
        started = time.perf_counter()
        try:
            details = await self._probe()
        except Exception as exc:
            return DependencyResult(
                self.name,
                "unhealthy",
                self.critical,
                self.kind,
                latency_ms=_ms_since(started),
                error=clip(exc),
            )
        return DependencyResult(
            self.name,
            "healthy",
            self.critical,
            self.kind,
            latency_ms=_ms_since(started),
            details=dict(details or {}),
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)


class HealthMonitor:
    """Runs every check in the background and keeps the last report.

    Args:
        checks: the dependencies to watch.
        interval: seconds between two rounds of checks.
        timeout: seconds one check may take before it counts as unhealthy.
    """

    def __init__(
        self, checks: Iterable[HealthCheck], *, interval: float = 10.0, timeout: float = 5.0
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError("interval and timeout must be positive")
        self.checks: list[HealthCheck] = list(checks)
        names = [check.name for check in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"two checks share a name: {sorted(names)}")
        self.interval = interval
        self.timeout = timeout
        self._report: HealthReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._round: asyncio.Lock | None = None
        self._listeners: list[Callable[[HealthReport, HealthReport | None], None]] = []

    def __repr__(self) -> str:
        return f"HealthMonitor({[check.name for check in self.checks]}, every {self.interval:g}s)"

    def add(self, check: HealthCheck) -> None:
        """Watch *check* too, from the next round."""
        if any(existing.name == check.name for existing in self.checks):
            raise ValueError(f"a check named {check.name!r} exists")
        self.checks.append(check)

    def on_change(self, listener: Callable[[HealthReport, HealthReport | None], None]) -> None:
        """Call ``listener(new, previous)`` after each round whose overall status changed."""
        self._listeners.append(listener)

    @property
    def last(self) -> HealthReport | None:
        """The last report, or None before the first round."""
        return self._report

    async def report(self) -> HealthReport:
        """The last report; the first call runs a round if none has finished yet."""
        if self._report is None:
            return await self.run_once()
        return self._report

    async def run_once(self) -> HealthReport:
        """Run every check now (concurrently, each under the timeout) and keep the report."""
        if self._round is None:
            self._round = asyncio.Lock()
        async with self._round:
            results = await asyncio.gather(*(self._check(check) for check in self.checks))
            report = HealthReport(
                status=overall_status(results),
                dependencies={result.name: result for result in results},
                checked_at=datetime.now(UTC),
            )
            previous, self._report = self._report, report
        if previous is None or previous.status != report.status:
            self._changed(report, previous)
        return report

    async def _check(self, check: HealthCheck) -> DependencyResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                return await check.check()
        except TimeoutError:
            error = f"no answer within {self.timeout:g}s"
        except Exception as exc:
            error = clip(exc)
        return DependencyResult(
            check.name,
            "unhealthy",
            check.critical,
            getattr(check, "kind", "other"),
            latency_ms=_ms_since(started),
            error=error,
        )

    def _changed(self, report: HealthReport, previous: HealthReport | None) -> None:
        down = sorted(name for name, r in report.dependencies.items() if r.status != "healthy")
        was = None if previous is None else previous.status
        if report.status == "healthy":
            _log.info("health_changed", status=report.status, previous=was)
        else:
            _log.warning("health_changed", status=report.status, previous=was, impaired=down)
        for listener in self._listeners:
            try:
                listener(report, previous)
            except Exception:
                _log.exception("health_listener_failed", listener=repr(listener))

    async def start(self) -> None:
        """Run a first round now, then one every *interval* seconds in the background."""
        if self._task is not None:
            return
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="seawall-health-monitor")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                _log.exception("health_round_failed")

    async def stop(self) -> None:
        """Stop the background rounds."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
