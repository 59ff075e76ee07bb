"""What the running service holds: settings, database, stores."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from seawall.auth import AuthGuard
from seawall.config import Settings
from seawall.db import Database
from seawall.health import HealthMonitor
from seawall.http import ServiceRegistry
from seawall.idempotency import IdempotencyStore
from seawall.messaging import Messaging
from seawall.resilience import RateLimit
from seawall.storage import BlobStore
from seawall.webhooks import WebhookReceiver


@dataclass(slots=True)
class ServiceState:
    """The service's collaborators, created at start-up and shared by every request."""

    settings: Settings
    database: Database
    idempotency: IdempotencyStore
    health: HealthMonitor
    services: ServiceRegistry
    webhooks: WebhookReceiver
    webhook_limits: dict[str, RateLimit]
    messaging: Messaging | None = None
    blobs: BlobStore | None = None
    admin_auth: AuthGuard | None = None

    @staticmethod
    def of(request: Request) -> ServiceState:
        """Return the state of the app serving *request*."""
        state = request.app.state.seawall
        assert isinstance(state, ServiceState), "the app was not started through its lifespan"
        return state
