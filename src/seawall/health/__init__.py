"""Dependency health: critical or optional, healthy, degraded or unhealthy.

A `HealthMonitor` runs one `HealthCheck` per dependency (the database, the bus,
Redis, every `seawall.http.ExternalService` through a `ServiceCheck`) in the
background and keeps the last `HealthReport`; ``/health/dependencies`` answers
from it. `overall_status` is the rule: a critical dependency down is
``unhealthy`` (503), an optional one down or any one impaired is ``degraded``.
`BreakerAlerts` raises an alert (log line, metric, optional ops webhook) when a
circuit breaker opens.
"""

from seawall.health._checks import BreakerAlerts, ServiceCheck
from seawall.health._monitor import (
    DependencyResult,
    FunctionCheck,
    HealthCheck,
    HealthMonitor,
    HealthReport,
    Status,
    overall_status,
)

__all__ = [
    "BreakerAlerts",
    "DependencyResult",
    "FunctionCheck",
    "HealthCheck",
    "HealthMonitor",
    "HealthReport",
    "ServiceCheck",
    "Status",
    "overall_status",
]
