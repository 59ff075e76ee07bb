"""``GET /metrics``: the Prometheus families of the process, the app's requests, and DB gauges.

The exposition joins two registries. The default one holds what seawall's
building blocks count process-wide (external service calls, resilience events,
relay, consumers, webhooks received) plus the process and Python collectors.
The app's own registry holds what belongs to one app instance: its HTTP
requests and the gauges read from its database. Tests build many apps in one
process; each has its own request counts and database gauges.

**Database gauges.** Outbox lag, dead letters and the webhook backlog are
counts in the database. A Prometheus collector is synchronous and cannot await
a query, and running the queries in a thread would need a second, synchronous
database driver. So the async route refreshes a snapshot before it renders,
and the collector only reads that snapshot. The snapshot is reused for
``SEAWALL_METRICS_CACHE_SECONDS`` (5 s): however many scrapers there are, the
database sees at most one round of three aggregate queries per interval, and
concurrent scrapes wait for the one refresh already running instead of
starting their own. Nobody scraping means no queries at all, which a
background loop could not promise. A refresh that fails or times out keeps the
previous snapshot: its age is in ``seawall_metrics_snapshot_age_seconds`` and the
failure in ``seawall_metrics_refresh_failures_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from seawall.config import Settings
from seawall.db import Database, WriteTurnStats, dead_letters, webhook_events
from seawall.errors import ConfigurationError, DatabaseError
from seawall.messaging import outbox_lag
from seawall.observability import (
    HttpMetrics,
    SpanScope,
    bounded_method,
    configure_tracing,
    count_resilience,
)

router = APIRouter(tags=["operations"])
log = structlog.get_logger("seawall.app")

# A refresh taking longer than this is abandoned; the previous snapshot stays.
REFRESH_TIMEOUT_SECONDS: Final = 5.0
# Webhook states that are still in flight (the terminal ones are counted as they happen).
_OPEN_WEBHOOK_STATES: Final = ("received", "failed", "parked")
_OPEN_DEAD_LETTER_STATES: Final = ("dead", "replay")
UNMATCHED_ROUTE: Final = "unmatched"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The database counts one refresh read."""

    taken_at: float
    outbox_pending: int
    outbox_oldest_age_seconds: float
    outbox_retrying: int
    outbox_parked: int
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], int] = field(default_factory=dict)


async def read_snapshot(database: Database, *, now: float) -> Snapshot:
    """Read the outbox lag, open dead letters and the webhook backlog (three aggregates)."""
    lag = await outbox_lag(database)
    async with database.reading() as session:
        letters = await session.execute(
            sa.select(dead_letters.c.consumer, dead_letters.c.state, sa.func.count())
            .where(dead_letters.c.state.in_(_OPEN_DEAD_LETTER_STATES))
            .group_by(dead_letters.c.consumer, dead_letters.c.state)
        )
        hooks = await session.execute(
            sa.select(webhook_events.c.provider, webhook_events.c.status, sa.func.count())
            .where(webhook_events.c.status.in_(_OPEN_WEBHOOK_STATES))
            .group_by(webhook_events.c.provider, webhook_events.c.status)
        )
        by_consumer = {(str(c), str(s)): int(n) for c, s, n in letters.all()}
        by_provider = {(str(p), str(s)): int(n) for p, s, n in hooks.all()}
    return Snapshot(
        taken_at=now,
        outbox_pending=lag.pending,
        outbox_oldest_age_seconds=lag.oldest_age_seconds,
        outbox_retrying=lag.retrying,
        outbox_parked=lag.parked,
        dead_letters=by_consumer,
        webhooks=by_provider,
    )


class DatabaseGauges(Collector):
    """Gauges read from the database, refreshed by the scrape at most every *max_age* seconds.

    Families:
        ``seawall_outbox_pending``, ``seawall_outbox_lag_seconds``,
        ``seawall_outbox_retrying``, ``seawall_outbox_parked``,
        ``seawall_dead_letters{consumer, state}``,
        ``seawall_webhooks_backlog{provider, status}``,
        ``seawall_metrics_snapshot_age_seconds``,
        ``seawall_metrics_refresh_failures_total``; on SQLite
        ``seawall_db_write_turn_{acquisitions,wait_seconds,held_seconds,timeouts}_total``.

    Args:
        database: where to count.
        max_age: seconds a snapshot is reused; 0 reads on every scrape.
        timeout: seconds a refresh may take before the old snapshot is kept.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_age: float = 5.0,
        timeout: float = REFRESH_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.max_age = max_age
        self.timeout = timeout
        self._clock = clock
        self.snapshot: Snapshot | None = None
        self.failures = 0
        self._lock = asyncio.Lock()

    def fresh(self) -> bool:
        """Tell whether the snapshot is younger than ``max_age``."""
        snapshot = self.snapshot
        return snapshot is not None and self._clock() - snapshot.taken_at < self.max_age

    async def refresh(self) -> None:
        """Read a new snapshot unless the current one is fresh (one reader at a time)."""
        if self.fresh():
            return
        async with self._lock:
            if self.fresh():  # another scrape refreshed it while this one waited
                return
            try:
                async with asyncio.timeout(self.timeout):
                    self.snapshot = await read_snapshot(self.database, now=self._clock())
            except (TimeoutError, SQLAlchemyError, DatabaseError, OSError) as exc:
                self.failures += 1
                log.warning("metrics_refresh_failed", error=type(exc).__name__)

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges of the last snapshot (none before the first one).

        On SQLite, also how the process's write turn was used (kept in memory by
        `Database`, no query).
        """
        failures = CounterMetricFamily(
            "seawall_metrics_refresh_failures",
            "Refreshes of the database-derived gauges that failed or timed out.",
        )
        failures.add_metric([], self.failures)
        yield failures
        if self.database.dialect == "sqlite":
            yield from _write_turn(self.database.write_turn_stats)
        snapshot = self.snapshot
        if snapshot is None:
            return
        yield _gauge(
            "seawall_metrics_snapshot_age_seconds",
            "Age of the database snapshot behind the outbox, dead-letter and webhook gauges.",
            max(0.0, self._clock() - snapshot.taken_at),
        )
        yield _gauge(
            "seawall_outbox_pending",
            "Outbox events waiting to be published (parked ones excluded).",
            snapshot.outbox_pending,
        )
        yield _gauge(
            "seawall_outbox_lag_seconds",
            "Age of the oldest outbox event waiting to be published; 0 when none waits.",
            snapshot.outbox_oldest_age_seconds,
        )
        yield _gauge(
            "seawall_outbox_retrying",
            "Outbox events waiting for another publish attempt after a failure.",
            snapshot.outbox_retrying,
        )
        yield _gauge(
            "seawall_outbox_parked",
            "Outbox events the broker refused for good, set aside for an operator.",
            snapshot.outbox_parked,
        )
        yield _labelled(
            "seawall_dead_letters",
            "Dead letters not yet replayed, by consumer group and state (dead, replay).",
            ("consumer", "state"),
            snapshot.dead_letters,
        )
        yield _labelled(
            "seawall_webhooks_backlog",
            "Stored webhook deliveries not yet done, by provider and status "
            "(received, failed, parked).",
            ("provider", "status"),
            snapshot.webhooks,
        )


def _write_turn(stats: WriteTurnStats) -> Iterator[Metric]:
    for name, documentation, value in (
        (
            "seawall_db_write_turn_acquisitions",
            "SQLite write transactions of this process that got their turn at the write lock.",
            stats.acquired,
        ),
        (
            "seawall_db_write_turn_wait_seconds",
            "Time SQLite write transactions waited for their turn, in all.",
            stats.waited_seconds,
        ),
        (
            "seawall_db_write_turn_held_seconds",
            "Time the SQLite write turn was held; its rate near 1 means writers queue.",
            stats.held_seconds,
        ),
        (
            "seawall_db_write_turn_timeouts",
            "SQLite write transactions that gave up waiting for their turn.",
            stats.timeouts,
        ),
        (
            "seawall_db_write_turn_held_commits",
            "SQLite write transactions held to commit with others (a group commit).",
            stats.held_commits,
        ),
    ):
        family = CounterMetricFamily(name, documentation)
        family.add_metric([], value)
        yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(
    name: str, documentation: str, labels: Iterable[str], values: dict[tuple[str, str], int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class _Joined(Collector):
    """Everything in several registries, as one collector (their families are disjoint)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


class AppMetrics:
    """One app instance's metrics: its registry, request metrics and database gauges.

    Args:
        settings: the service's settings.
        shared: the registry seawall's building blocks count into (the default one).
    """

    def __init__(self, settings: Settings, *, shared: CollectorRegistry = REGISTRY) -> None:
        self.settings = settings
        self.shared = shared
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = HttpMetrics(self.registry)
        self.gauges: DatabaseGauges | None = None
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_Joined(shared, self.registry))

    async def start(self, database: Database) -> Callable[[], None]:
        """Start counting resilience events, reading database gauges and tracing.

        Returns:
            The function that undoes it (at shutdown).
        """
        if self.gauges is None:
            self.gauges = DatabaseGauges(database, max_age=self.settings.metrics_cache_seconds)
            self.registry.register(self.gauges)
        release = count_resilience(registry=self.shared)
        tracing = self.settings.tracing
        stop_tracing: Callable[[], None] | None = None
        if tracing.enabled:
            stop_tracing = configure_tracing(
                exporter=tracing.exporter,
                endpoint=tracing.endpoint,
                service_name=tracing.service_name,
                sample_ratio=tracing.sample_ratio,
            )

        def stop() -> None:
            release()
            if stop_tracing is not None:
                stop_tracing()

        return stop

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (text, or OpenMetrics when *accept* asks for it) and its type."""
        if self.gauges is not None:
            await self.gauges.refresh()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._exposed), content_type


def install_metrics(app: FastAPI, settings: Settings) -> AppMetrics:
    """Give *app* its `AppMetrics` and the ``GET /metrics`` route.

    Raises:
        ConfigurationError: tracing is enabled but OpenTelemetry is not installed.
    """
    if settings.tracing.enabled:
        _require_opentelemetry(settings.tracing.exporter)
    metrics = AppMetrics(settings)
    app.state.metrics = metrics
    app.include_router(router)
    return metrics


def _require_opentelemetry(exporter: str) -> None:
    import importlib.util  # noqa: PLC0415 - only when tracing is asked for

    wanted = ["opentelemetry.sdk"]
    if exporter == "otlp":
        wanted.append("opentelemetry.exporter.otlp.proto.http")
    for module in wanted:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigurationError(
                f"tracing needs {module}: pip install 'seawall[otel]'",
                key="SEAWALL_TRACING__ENABLED",
            )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    """Answer the Prometheus text format (OpenMetrics when the Accept header asks for it).

    Like ``/health``, it needs no credentials: it holds counts and names, never
    ids or payloads. Block it at the edge if it must not be public.
    """
    app_metrics = request.app.state.metrics
    assert isinstance(app_metrics, AppMetrics)
    body, content_type = await app_metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def route_of(scope: Any) -> str:
    """The path template of the route that served *scope*, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def observe_request(
    metrics: HttpMetrics | None,
    traced: SpanScope | None,
    scope: Any,
    status: int,
    seconds: float,
) -> None:
    """Count an answered request and finish its span's naming (the middleware calls it)."""
    if metrics is None and traced is None:
        return
    route = route_of(scope)
    if metrics is not None:
        metrics.observe(scope["method"], route, status, seconds)
    if traced is not None:
        traced.rename(f"{bounded_method(scope['method'])} {route}")
        traced.set_attribute("http.route", route)
        traced.set_attribute("http.response.status_code", status)
        if status >= 500:
            traced.fail(f"answered {status}")
