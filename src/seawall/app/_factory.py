"""`create_app`: the cases service as a FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

import seawall
from seawall.app import _admin, _cases, _console, _documents, _health, _webhooks
from seawall.app._admin_auth import build_admin_auth
from seawall.app._health import build_monitor
from seawall.app._metrics import AppMetrics, install_metrics
from seawall.app._middleware import RequestContextMiddleware
from seawall.app._problems import install_problem_handlers
from seawall.app._state import ServiceState
from seawall.app._sync import consumers_with_crm, start_crm_sync
from seawall.app._webhooks import build_webhooks, webhook_maintenance
from seawall.config import Settings, load_settings
from seawall.db import Database, migrate, require_schema
from seawall.errors import DatabaseError
from seawall.health import BreakerAlerts
from seawall.http import ExternalService, ServiceRegistry
from seawall.idempotency import IdempotencyStore
from seawall.messaging import Messaging
from seawall.resilience import Retry

log = structlog.get_logger("seawall.app")

# Expired idempotency keys are purged this often (and once at start-up).
PURGE_INTERVAL_SECONDS = 300.0


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    """Build the cases service.

    Args:
        settings: the configuration; read from the environment when omitted.
        database: an already open database to use (and not close); by default the
            app opens ``settings.database_url`` at start-up and closes it at shutdown.

    Returns:
        The FastAPI application; its lifespan opens the database, applies migrations
        on the embedded SQLite (or when ``SEAWALL_AUTO_MIGRATE`` is set) and starts
        the purge of expired idempotency keys.
    """
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        db = database or Database(
            settings.database_url.get_secret_value(),
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout_seconds,
        )
        try:
            try:
                if owned and settings.should_auto_migrate:
                    await migrate(db)
                    log.info("database_migrated", database=repr(db))
                else:
                    await require_schema(db)
            except DatabaseError as exc:
                log.error("service_start_failed", error=str(exc))
                raise
            async with _running(app, settings, db):
                yield
        finally:
            if owned:
                await db.dispose()
            log.info("service_stopped")

    app = FastAPI(
        title="seawall cases service",
        version=seawall.__version__,
        summary="Cases API with idempotent mutations and a transactional outbox.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    metrics = install_metrics(app, settings)
    # Inside the request context (added first = nearer the app), outside FastAPI's routing.
    app.add_middleware(_webhooks.WebhookFastPath, fastapi=app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics.http,
        body_limits=_documents.upload_body_limit(settings),
    )
    app.include_router(_cases.router)
    app.include_router(_health.router)
    app.include_router(_webhooks.router)
    app.include_router(_documents.router)
    app.include_router(_admin.router)
    app.include_router(_console.router)
    return app


@asynccontextmanager
async def _running(app: FastAPI, settings: Settings, db: Database) -> AsyncIterator[None]:
    """Start everything the service runs on top of its database; stop it on exit."""
    store = IdempotencyStore(
        db,
        ttl=settings.idempotency_ttl_seconds,
        lock_timeout=settings.idempotency_lock_seconds,
    )
    blobs = await _documents.open_blob_store(settings)
    messaging = None
    if settings.relay or settings.worker:
        messaging = Messaging(
            settings,
            db,
            relay=settings.relay,
            worker=settings.worker,
            consumers=consumers_with_crm(settings),
        )
    redis = _redis(settings)
    services = ServiceRegistry.from_settings(settings.services, redis=redis)
    receiver, limits = build_webhooks(settings, db, redis)
    alerts = _alerts(settings).attach()
    health = build_monitor(settings, db, messaging, services, redis)
    admin_auth = build_admin_auth(settings, db, redis)
    app.state.seawall = ServiceState(
        settings=settings,
        database=db,
        idempotency=store,
        health=health,
        services=services,
        webhooks=receiver,
        webhook_limits=limits,
        messaging=messaging,
        blobs=blobs,
        admin_auth=admin_auth,
    )
    observing: AppMetrics = app.state.metrics
    stop_observing = await observing.start(db)
    purger = asyncio.create_task(_purge_forever(store), name="seawall-idempotency-purge")
    webhook_upkeep = asyncio.create_task(
        webhook_maintenance(db, receiver), name="seawall-webhook-maintenance"
    )
    stop_crm_sync = start_crm_sync(settings, services, db)
    try:
        services.open()
        if messaging is not None:
            await messaging.start()
        await health.start()
        log.info(
            "service_started",
            version=seawall.__version__,
            database=repr(db),
            messaging=repr(messaging),
            services=sorted(services),
        )
        yield
    finally:
        await health.stop()
        if messaging is not None:
            await messaging.stop()
        for task in (purger, webhook_upkeep):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stop_crm_sync()
        await alerts.aclose()
        await services.aclose()
        await admin_auth.aclose()
        if alerts.webhook is not None:
            await alerts.webhook.aclose()
        if redis is not None:
            await redis.aclose()
        await _documents.close_blob_store(blobs)
        stop_observing()


def _redis(settings: Settings) -> Any:
    if settings.redis_url is None:
        return None
    import redis.asyncio  # noqa: PLC0415 - only a service configured with Redis loads it

    return redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())


def _alerts(settings: Settings) -> BreakerAlerts:
    """Breaker alerts, posted to ``SEAWALL_ALERT_WEBHOOK_URL`` when it is set."""
    if settings.alert_webhook_url is None:
        return BreakerAlerts()
    # The whole URL is the base, called with an empty path: a webhook's path is
    # its secret, and logs show the path of each call.
    webhook = ExternalService(
        "ops-alerts",
        settings.alert_webhook_url.get_secret_value(),
        critical=False,
        retry=Retry(max_attempts=3, name="ops-alerts", budget=False),
        breaker=False,
    )
    return BreakerAlerts(webhook, path="")


async def _purge_forever(store: IdempotencyStore) -> None:
    while True:
        try:
            removed = await store.purge_expired()
            if removed:
                log.info("idempotency_keys_purged", count=removed)
        except (SQLAlchemyError, DatabaseError, OSError) as exc:
            log.warning("idempotency_purge_failed", error=type(exc).__name__)
        except Exception:
            # Never let the purge die silently: log it and try again next round.
            log.exception("idempotency_purge_failed")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
