"""The health monitor: overall status, background rounds, timeouts, alerts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from seawall.health import (
    BreakerAlerts,
    DependencyResult,
    FunctionCheck,
    HealthMonitor,
    overall_status,
)
from seawall.resilience import CircuitBreaker, EventHub
from seawall.testing import FakeClock


def result(name: str, status: Any, *, critical: bool) -> DependencyResult:
    return DependencyResult(name, status, critical)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], "healthy"),
        ([result("db", "healthy", critical=True)], "healthy"),
        ([result("crm", "unhealthy", critical=False)], "degraded"),
        ([result("crm", "degraded", critical=True)], "degraded"),
        (
            [result("crm", "unhealthy", critical=False), result("db", "unhealthy", critical=True)],
            "unhealthy",
        ),
    ],
)
def test_overall_status_is_the_worst_that_matters(
    results: list[DependencyResult], expected: str
) -> None:
    assert overall_status(results) == expected


async def test_the_report_names_each_dependency_and_its_error() -> None:
    async def fine() -> dict[str, Any]:
        return {"backend": "sqlite"}

    async def down() -> None:
        raise ConnectionRefusedError("connection refused by 10.0.0.1")

    monitor = HealthMonitor(
        [
            FunctionCheck("database", fine, kind="database"),
            FunctionCheck("crm", down, critical=False),
        ]
    )

    report = (await monitor.report()).as_dict()

    assert report["status"] == "degraded"
    database, crm = report["dependencies"]["database"], report["dependencies"]["crm"]
    assert (database["status"], database["healthy"], database["details"]) == (
        "healthy",
        True,
        {"backend": "sqlite"},
    )
    assert (crm["status"], crm["critical"]) == ("unhealthy", False)
    assert crm["error"] == "ConnectionRefusedError: connection refused by 10.0.0.1"


async def test_a_check_that_hangs_counts_as_unhealthy() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    monitor = HealthMonitor([FunctionCheck("database", hangs)], timeout=0.05)

    report = await monitor.run_once()

    assert report.status == "unhealthy"
    assert report.dependencies["database"].error == "no answer within 0.05s"


async def test_the_endpoint_answers_from_the_last_round_until_the_next() -> None:
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    monitor = HealthMonitor([FunctionCheck("database", counted)], interval=0.05)
    await monitor.start()
    try:
        for _ in range(50):
            await monitor.report()
        assert calls == 1, "reports between rounds run no check"
        for _ in range(500):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls >= 3, "rounds keep running in the background"
    finally:
        await monitor.stop()
    stopped_at = calls
    await asyncio.sleep(0.12)
    assert calls == stopped_at


async def test_a_status_change_is_logged_and_told_to_listeners() -> None:
    healthy = True

    async def flips() -> None:
        if not healthy:
            raise OSError("down")

    monitor = HealthMonitor([FunctionCheck("database", flips)])
    changes: list[tuple[str, str | None]] = []
    monitor.on_change(lambda new, old: changes.append((new.status, old and old.status)))
    await monitor.run_once()
    await monitor.run_once()
    healthy = False
    with capture_logs() as logs:
        await monitor.run_once()

    assert changes == [("healthy", None), ("unhealthy", "healthy")]
    assert logs[0]["event"] == "health_changed"
    assert logs[0]["impaired"] == ["database"]


def test_two_checks_may_not_share_a_name() -> None:
    async def fine() -> None:
        return None

    with pytest.raises(ValueError, match="share a name"):
        HealthMonitor([FunctionCheck("db", fine), FunctionCheck("db", fine)])


async def test_a_breaker_opening_raises_an_alert() -> None:
    hub = EventHub()
    registry = CollectorRegistry()
    alerts = BreakerAlerts(registry=registry).attach(hub)
    breaker = CircuitBreaker(name="crm", failure_threshold=1, clock=FakeClock(), events=hub)

    async def fails() -> None:
        raise OSError("refused")

    with capture_logs() as logs, pytest.raises(OSError, match="refused"):
        await breaker.call(fails)
    await alerts.aclose()

    alert = [line for line in logs if line["event"] == "dependency_alert"]
    assert [(line["breaker"], line["log_level"]) for line in alert] == [("crm", "warning")]
    assert (
        registry.get_sample_value("seawall_alerts_total", {"kind": "breaker_opened", "name": "crm"})
        == 1.0
    )
