"""Running a mutation under an Idempotency-Key (the HTTP side of `seawall.idempotency`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app._problems import Problem
from seawall.db import Database
from seawall.errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch
from seawall.idempotency import (
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
    values = {request.headers[name] for name in IDEMPOTENCY_HEADERS if name in request.headers}
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
            "Idempotency-Key and X-Idempotency-Key differ; send one of them",
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
        stored = await store.claim(scope, key, fingerprint)
    except IdempotencyKeyMismatch as exc:
        raise Problem(422, "idempotency-key-reused", str(exc)) from None
    except IdempotencyKeyInFlight as exc:
        raise Problem(
            409, "idempotency-key-in-flight", str(exc), headers={"Retry-After": "1"}
        ) from None
    if stored is not None:
        log.info("idempotent_replayed", scope=scope)
        return Response(
            content=stored.body,
            status_code=stored.status,
            media_type="application/json",
            headers={**stored.headers, REPLAYED_HEADER: "true"},
        )
    try:
        async with database.transaction() as session:
            response = await work(session)
            kept = {k: v for k, v in response.headers.items() if k.lower() in _REPLAYED_HEADERS}
            await store.complete(
                session,
                scope,
                key,
                StoredResponse(response.status_code, bytes(response.body).decode(), kept),
            )
    except BaseException:
        # The work did not commit: free the key so the client's retry can run it.
        await store.release(scope, key)
        raise
    return response
