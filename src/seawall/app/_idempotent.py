"""Running a mutation under an Idempotency-Key (the HTTP side of `seawall.idempotency`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app._problems import Problem
from seawall.db import Database
from seawall.errors import IdempotencyClaimLost, IdempotencyKeyInFlight, IdempotencyKeyMismatch
from seawall.idempotency import (
    Claim,
    IdempotencyStore,
    StoredResponse,
    request_fingerprint,
    valid_idempotency_key,
)

IDEMPOTENCY_HEADERS = ("Idempotency-Key", "X-Idempotency-Key")
REPLAYED_HEADER = "Idempotent-Replayed"
# Headers of the first response worth replaying; the correlation id is per request.
_REPLAYED_HEADERS = ("location", "etag")

log = structlog.get_logger("seawall.app")

Work = Callable[[AsyncSession], Awaitable[JSONResponse]]


def idempotency_key(request: Request, *, required: bool) -> str | None:
    """Read the Idempotency-Key (or X-Idempotency-Key) header.

    Raises:
        Problem: 400 when it is required and missing, malformed, or given twice
            with different values.
    """
    # getlist: the same header sent twice with two values is as ambiguous as two names.
    values = {value for name in IDEMPOTENCY_HEADERS for value in request.headers.getlist(name)}
    if not values:
        if required:
            raise Problem(
                400,
                "idempotency-key-required",
                "send an Idempotency-Key header (a UUID is a good choice) so that "
                "a retried request cannot create a second case",
            )
        return None
    if len(values) > 1:
        raise Problem(
            400,
            "idempotency-key-conflict",
            "the request carries more than one idempotency key (Idempotency-Key, "
            "X-Idempotency-Key or a repeated header); send exactly one",
        )
    key = values.pop()
    if not valid_idempotency_key(key):
        raise Problem(
            400,
            "idempotency-key-invalid",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )
    return key


async def run_idempotent(
    request: Request,
    *,
    database: Database,
    store: IdempotencyStore,
    key: str | None,
    work: Work,
) -> Response:
    """Run *work* in one transaction, at most once per idempotency *key*.

    *work* gets the transaction's session and returns the response; the response is
    stored with the key in that same transaction. Without a key, *work* simply runs.
    """
    if key is None:
        async with database.transaction() as session:
            return await work(session)
    scope = f"{request.method} {request.url.path}"
    fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    try:
        claimed = await store.claim(scope, key, fingerprint)
    except IdempotencyKeyMismatch as exc:
        raise Problem(422, "idempotency-key-reused", str(exc)) from None
    except IdempotencyKeyInFlight as exc:
        raise Problem(
            409, "idempotency-key-in-flight", str(exc), headers={"Retry-After": "1"}
        ) from None
    if isinstance(claimed, StoredResponse):
        log.info("idempotent_replayed", scope=scope)
        return Response(
            content=claimed.body,
            status_code=claimed.status,
            media_type="application/json",
            headers={**claimed.headers, REPLAYED_HEADER: "true"},
        )
    try:
        async with database.transaction() as session:
            response = await work(session)
            kept = {k: v for k, v in response.headers.items() if k.lower() in _REPLAYED_HEADERS}
            stored = StoredResponse(response.status_code, bytes(response.body).decode(), kept)
            await store.complete(session, claimed, stored)
    except IdempotencyClaimLost as exc:
        raise Problem(
            409, "idempotency-claim-lost", str(exc), headers={"Retry-After": "1"}
        ) from None
    except BaseException:
        # The work did not commit: free the key so the client's retry can run it.
        await _release(store, claimed)
        raise
    return response


async def _release(store: IdempotencyStore, claim: Claim) -> None:
    # Shielded: a cancellation of this request must not also cancel the release,
    # or the key would stay in flight (409 to every retry) until its lock expires.
    # A failed release is logged, never raised: the request's own error matters more.
    try:
        await asyncio.shield(store.release(claim))
    except Exception as exc:  # the key's lock timeout frees it later anyway
        log.warning("idempotency_release_failed", key_scope=claim.scope, error=type(exc).__name__)
