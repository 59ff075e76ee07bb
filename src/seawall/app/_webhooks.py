"""``POST /webhooks/{provider}``: verified, deduplicated, stored with its outbox event."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any, Final, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from seawall.app._problems import Problem
from seawall.app._state import ServiceState
from seawall.config import Settings, WebhookSettings
from seawall.db import Database
from seawall.errors import DatabaseError, InvalidSignature, RateLimitExceeded
from seawall.resilience import RateLimit
from seawall.webhooks import HmacScheme, MalformedWebhook, WebhookProvider, WebhookReceiver

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger("seawall.app")

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PROBLEM: Final[dict[str, Any]] = {
    "content": {"application/problem+json": {}},
    "description": "A problem document (RFC 9457).",
}


class WebhookAnswer(BaseModel):
    """What the sender is told: stored now, or seen before."""

    status: Literal["accepted", "duplicate"]
    id: str | None = None


@router.post(
    "/webhooks/{provider}",
    response_model=WebhookAnswer,
    responses={
        400: _PROBLEM,
        401: _PROBLEM,
        404: _PROBLEM,
        413: _PROBLEM,
        429: _PROBLEM,
        503: _PROBLEM,
    },
    summary="Receive a webhook",
)
async def receive_webhook(provider: str, request: Request) -> JSONResponse:
    """Verify a delivery's signature on its raw body, store it once, answer at once.

    ``401`` when the signature does not verify (nothing is stored), ``400`` when
    the verified body cannot be parsed, ``404`` for a provider that is not
    configured, ``429`` past the provider's rate limit, ``503`` when the database
    is busy or down (nothing stored; retry). A delivery seen before
    (same delivery id, or the same body where the provider signs no id) answers
    ``200 {"status": "duplicate"}`` and stores nothing. Slack's
    ``url_verification`` is answered with its challenge.
    """
    state = ServiceState.of(request)
    configured = state.webhooks.provider(provider) if _NAME.fullmatch(provider) else None
    if configured is None:
        raise Problem(
            404,
            "webhook-provider-not-found",
            f"no webhook provider {provider[:64]!r} is configured with a secret "
            "(SEAWALL_WEBHOOKS__<NAME>__SECRETS)",
        )
    limiter = state.webhook_limits.get(provider)
    if limiter is not None:
        try:
            await limiter.acquire(provider)
        except RateLimitExceeded as exc:
            raise Problem(
                429,
                "rate-limited",
                f"too many webhooks from {provider!r}; retry in {exc.retry_after:.1f}s",
                headers={"Retry-After": str(max(1, round(exc.retry_after + 0.5)))},
            ) from None
    body = await request.body()
    # Only Twilio signs the URL; building it costs as much as verifying a signature.
    url = str(request.url) if configured.scheme_name == "twilio" else None
    try:
        receipt = await state.webhooks.receive(configured, request.headers, body, url=url)
    except InvalidSignature as exc:
        log.warning("webhook_rejected", provider=provider, reason=exc.reason)
        raise Problem(
            401,
            "invalid-signature",
            f"the webhook signature does not verify ({exc.reason}); nothing was stored",
        ) from None
    except MalformedWebhook as exc:
        log.warning("webhook_malformed", provider=provider, reason=exc.reason)
        raise Problem(400, "malformed-webhook", str(exc)) from None
    except DatabaseError as exc:
        # Could not even connect (SQLAlchemy's own errors have the app's 503 handler).
        log.warning("database_unavailable", path=request.url.path, error=str(exc))
        raise Problem(
            503,
            "database-unavailable",
            "the database is busy or unreachable; nothing was stored, retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    if receipt.status == "challenge":
        return JSONResponse({"challenge": receipt.challenge})
    log.info(
        "webhook_received" if receipt.status == "accepted" else "webhook_duplicate",
        provider=provider,
        webhook_id=receipt.webhook_id,
        type=receipt.event_type,
    )
    # The same document as `WebhookAnswer`, without building and dumping a model per request.
    return JSONResponse({"status": receipt.status, "id": receipt.webhook_id})


# Parked deliveries are looked at this often; expired dedupe keys purged every 120th round.
RELEASE_INTERVAL_SECONDS: Final = 5.0
_PURGE_EVERY_ROUNDS: Final = 120


def _scheme(name: str, config: WebhookSettings) -> str | HmacScheme:
    scheme = config.scheme_for(name)
    if scheme != "hmac":
        return scheme
    if not config.header:
        raise ValueError(f"SEAWALL_WEBHOOKS__{name.upper()}__HEADER is required for scheme hmac")
    return HmacScheme(
        header=config.header,
        algorithm=config.algorithm,
        encoding=config.encoding,
        prefix=config.prefix,
        timestamp_header=config.timestamp_header,
        id_header=config.id_header,
        template=config.template,
        name=name,
    )


def build_webhooks(
    settings: Settings, database: Database, redis: Any = None
) -> tuple[WebhookReceiver, dict[str, RateLimit]]:
    """The receiver and the per-provider rate limits that *settings* describe."""
    storage = None
    if redis is not None:
        from seawall.resilience.redis import RedisRateLimitStorage  # noqa: PLC0415

        storage = RedisRateLimitStorage(redis, prefix="seawall:webhooks:")
    providers = {}
    limits = {}
    for name, config in settings.webhooks.items():
        providers[name] = WebhookProvider(
            name=name,
            scheme=_scheme(name, config),
            secrets=tuple(config.secrets),
            tolerance=config.tolerance_seconds,
            public_url=config.public_url,
        )
        limits[name] = RateLimit(config.rate_limit, name=f"webhooks:{name}", storage=storage)
    receiver = WebhookReceiver(
        database, providers, dedup_ttl=timedelta(days=settings.webhook_dedup_days)
    )
    return receiver, limits


async def webhook_maintenance(database: Database, receiver: WebhookReceiver) -> None:
    """Release parked deliveries whose time has come; purge expired dedupe keys."""
    from seawall.app.consumers import webhook_processor  # noqa: PLC0415 - avoids a cycle

    rounds = 0
    while True:
        try:
            released = await webhook_processor.release_due(database)
            if released:
                log.info("webhooks_released", count=released)
            if rounds % _PURGE_EVERY_ROUNDS == 0:
                purged = await receiver.purge_expired()
                if purged:
                    log.info("webhook_dedup_keys_purged", count=purged)
        except Exception:
            # Never let the upkeep die silently: log it and try again next round.
            log.exception("webhook_maintenance_failed")
        rounds += 1
        await asyncio.sleep(RELEASE_INTERVAL_SECONDS)
