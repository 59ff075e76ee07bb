"""``POST /webhooks/{provider}``: verified, deduplicated, stored with its outbox event."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Final, Literal

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import URL, Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

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
    # `WebhookFastPath` answers these requests before FastAPI's routing; this route
    # documents the endpoint and serves any request that reaches it anyway.
    answer = await receive_delivery(
        ServiceState.of(request), provider, request.headers, request.body, lambda: str(request.url)
    )
    return JSONResponse(answer)


async def receive_delivery(
    state: ServiceState,
    provider: str,
    headers: Mapping[str, str],
    read_body: Callable[[], Awaitable[bytes]],
    url: Callable[[], str],
) -> dict[str, Any]:
    """Check, verify and store one delivery; return the answer's JSON document.

    Raises:
        Problem: the 4xx or 503 answers `receive_webhook` lists.
    """
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
    body = await read_body()
    # Only Twilio signs the URL; building it costs as much as verifying a signature.
    signed_url = url() if configured.scheme_name == "twilio" else None
    try:
        receipt = await state.webhooks.receive(configured, headers, body, url=signed_url)
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
        log.warning("database_unavailable", path=f"/webhooks/{provider[:64]}", error=str(exc))
        raise Problem(
            503,
            "database-unavailable",
            "the database is busy or unreachable; nothing was stored, retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    if receipt.status == "challenge":
        return {"challenge": receipt.challenge}
    log.info(
        "webhook_received" if receipt.status == "accepted" else "webhook_duplicate",
        provider=provider,
        webhook_id=receipt.webhook_id,
        type=receipt.event_type,
    )
    # The same document as `WebhookAnswer`, without building and dumping a model per request.
    return {"status": receipt.status, "id": receipt.webhook_id}


class WebhookFastPath:
    """Answer ``POST /webhooks/{provider}`` before FastAPI's routing, dependencies and responses.

    Webhooks are the service's hot path: providers send them in bursts and wait
    for the answer. Through FastAPI a delivery cost about as much CPU again as
    verifying and storing it (matching the route among all the others, solving
    its parameters, building a `Request` and a response object). This layer sits
    inside `RequestContextMiddleware` (correlation id, body limit, access log,
    metrics) and outside FastAPI: it sends the same answers as the route, and
    hands an error the route would not have raised to the app's own exception
    handlers. Every other request goes on to FastAPI.

    Args:
        app: the FastAPI app's middleware stack below this layer.
        fastapi: the app, for its state, its exception handlers and the route.
    """

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        # The route as this module's router declares it (the app may nest included routers).
        self.route: Any = next(
            (r for r in router.routes if getattr(r, "endpoint", None) is receive_webhook), None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        provider = path[len("/webhooks/") :]
        if not provider or "/" in provider or self.route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # for the metrics' route label, as routing would set it
        scope["app"] = self.fastapi
        state = self.fastapi.state.seawall
        try:
            answer = await receive_delivery(
                state,
                provider,
                Headers(scope=scope),
                lambda: _read_body(receive),
                lambda: str(URL(scope=scope)),
            )
        except Exception as exc:
            handler = _handler_for(self.fastapi, exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        body = json.dumps(answer, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The app's exception handler for *exc*, by its class hierarchy (as Starlette picks it)."""
    handlers = app.exception_handlers
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


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
