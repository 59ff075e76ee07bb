"""The operations console: server-rendered pages over what the admin API shows.

An operator logs in with an admin API key (the same keys as ``/admin``); the key
travels in an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/console``
and is checked on every request, so a revoked key logs its holder out at once.
Every form carries a CSRF token derived from the key. Pages refresh their
content in place; a request with ``X-Console-Fragment: 1`` gets the content
without the frame. Reading needs the ``read`` scope, buttons ``operate``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlsplit

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from seawall.app._state import ServiceState
from seawall.auth import AuthGuard, Principal
from seawall.db import webhook_events
from seawall.messaging import DeadLetters, DeadLetterState, outbox_lag
from seawall.webhooks import STATUSES, WebhookFilter, WebhookLog

log = structlog.get_logger("seawall.app")

COOKIE: Final = "seawall_console"
REFRESH_SECONDS: Final = 5
_MAX_FORM_BYTES: Final = 4096
_PAGE_SIZE: Final = 100
DeadLetterId = Annotated[int, PathParam(ge=1, le=2**62)]
# As the admin API bounds them: PostgreSQL text cannot hold NUL, and ids are UUIDs.
WebhookId = Annotated[str, PathParam(max_length=36, pattern="^[^\\x00]*$")]
_BREAKER_ACTIONS: Final = frozenset({"open", "close", "reset"})
# What a page may say after a button: fixed texts by code, never text from the URL.
_NOTICES: Final = {
    "replay-queued": "Replay queued.",
    "no-delivery": "No such delivery.",
    "not-dead": "Nothing to replay: it is not dead.",
    "purged": "Purged.",
    "nothing-purged": "Nothing purged.",
    "breaker-open": "The breaker was forced open.",
    "breaker-close": "The breaker was closed.",
    "breaker-reset": "The breaker was reset.",
}
_DEAD_STATES: Final[dict[str, DeadLetterState]] = {
    "dead": "dead",
    "replay": "replay",
    "replayed": "replayed",
}

router = APIRouter(prefix="/console", include_in_schema=False)
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "console"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


Who = tuple[Principal, str]
"""The logged-in principal and the key it logged in with."""


def _guard(request: Request) -> AuthGuard:
    guard = ServiceState.of(request).admin_auth
    assert guard is not None, "the app was not started through its lifespan"
    return guard


async def _principal(request: Request) -> Who | None:
    """The logged-in principal and its key, or None."""
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    principal = await _guard(request).authenticate_key(key, client=_client(request))
    # A federated token may verify and still grant nothing here (no read scope).
    if principal is None or not principal.allows("read"):
        return None
    return principal, key


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _csrf(key: str) -> str:
    return hmac.new(key.encode(), b"seawall-console-csrf", hashlib.sha256).hexdigest()


def _csrf_matches(sent: str, key: str) -> bool:
    # Bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, a 500).
    return hmac.compare_digest(sent.encode("utf-8", "replace"), _csrf(key).encode())


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, first value of each field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def _local(path: str | None, default: str) -> str:
    """*path* if it is a path inside the console, else *default* (no open redirect)."""
    if not path:
        return default
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or "\\" in path:
        return default
    return path


def _render(
    request: Request,
    page: str,
    *,
    title: str,
    section: str = "",
    status_code: int = 200,
    who: Who | None = None,
    **context: Any,
) -> HTMLResponse:
    principal, key = who if who is not None else (None, "")
    values = {
        "title": title,
        "section": section,
        "principal": principal,
        "csrf": _csrf(key) if key else "",
        "can_operate": principal is not None and principal.allows("operate"),
        "refresh_seconds": REFRESH_SECONDS if section else 0,
        "notice": _NOTICES.get(request.query_params.get("notice") or ""),
        "page": f"{page}.html",
        **context,
    }
    fragment = request.headers.get("x-console-fragment") == "1"
    template = _templates.get_template(f"{page}.html" if fragment else "layout.html")
    response = HTMLResponse(template.render(values), status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response


def _to_login(request: Request) -> Response:
    if request.headers.get("x-console-fragment") == "1":
        return Response(status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)


def _back(path: str, notice: str) -> RedirectResponse:
    """Go back to *path* with the notice whose code is *notice* (see `_NOTICES`)."""
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}notice={quote(notice)}", status_code=303)


# --- logging in ----------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return _render(
        request, "login", title="Log in", next=_local(request.query_params.get("next"), "/console")
    )


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; on success set the cookie and go where the operator was heading."""
    form = await _form(request)
    key = form.get("api_key", "").strip()
    target = _local(form.get("next"), "/console")
    auth = _guard(request)
    principal = await auth.authenticate_key(key, client=_client(request)) if key else None
    if principal is None or not principal.allows("read"):
        return _render(
            request,
            "login",
            title="Log in",
            status_code=401,
            error="That key is not valid (or it was revoked).",
            next=target,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the cookie (only when the form's CSRF token matches: no logout from elsewhere)."""
    form = await _form(request)
    key = request.cookies.get(COOKIE)
    if key and not _csrf_matches(form.get("csrf", ""), key):
        return RedirectResponse("/console", status_code=303)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


async def _operator(request: Request) -> tuple[Who | None, dict[str, str]]:
    """The principal behind a button press, when the key has ``operate`` and the token matches."""
    who = await _principal(request)
    form = await _form(request)
    if who is None or not who[0].allows("operate"):
        return None, form
    if not _csrf_matches(form.get("csrf", ""), who[1]):
        return None, form
    log.info("console_action", subject=who[0].subject, path=request.url.path)
    return who, form


def _refused(request: Request, who: Who | None) -> Response:
    if who is None and request.cookies.get(COOKIE) is None:
        return _to_login(request)
    return _render(
        request,
        "not_found",
        title="Not allowed",
        status_code=403,
        who=who,
        message="That needs a key with the operate scope (or the form expired: reload).",
        back="/console",
    )


# --- pages ---------------------------------------------------------------------------


@router.get("")
async def overview(request: Request) -> Response:
    """Overall health, each dependency with its breaker and latency, outbox lag, DLQ size."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    state = ServiceState.of(request)
    report = state.health.last or await state.health.report()
    dead = await DeadLetters(state.database).count()
    breakers: dict[str, str] = {}
    for service in state.services.values():
        if service.breaker is not None:
            await service.breaker.refresh()
            breakers[service.name] = service.breaker.state.value
    return _render(
        request,
        "overview",
        title="Overview",
        section="Overview",
        who=who,
        health=report,
        outbox=await outbox_lag(state.database),
        dead_letters=sum(dead.values()),
        breakers=breakers,
        webhooks=await webhook_counts(state),
    )


async def webhook_counts(state: ServiceState) -> dict[str, int]:
    """How many stored deliveries are in each status."""
    query = sa.select(webhook_events.c.status, sa.func.count()).group_by(webhook_events.c.status)
    async with state.database.reading() as session:
        return {status: int(n) for status, n in (await session.execute(query)).all()}


@router.post("/breakers/{name}/{action}")
async def breaker_action(request: Request, name: str, action: str) -> Response:
    """Force a service's breaker open or closed, or reset it (every instance, with Redis)."""
    who, _form_fields = await _operator(request)
    if who is None:
        return _refused(request, who)
    service = ServiceState.of(request).services.get(name)
    breaker = service.breaker if service is not None else None
    if breaker is None or action not in _BREAKER_ACTIONS:
        return _missing(request, who, "No such breaker or action.", "/console")
    await getattr(breaker, action)()
    return _back("/console", f"breaker-{action}")


@router.get("/webhooks")
async def webhooks(request: Request) -> Response:
    """Stored deliveries, newest first, filtered by provider, type and status."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    params = request.query_params
    filters = {
        "provider": params.get("provider") or None,
        "type": params.get("type") or None,
        "status": params.get("status") if params.get("status") in STATUSES else None,
    }
    selection = WebhookFilter(
        provider=filters["provider"], event_type=filters["type"], status=filters["status"]
    )
    log = WebhookLog(ServiceState.of(request).database)
    return _render(
        request,
        "webhooks",
        title="Webhooks",
        section="Webhooks",
        who=who,
        webhooks=await log.list(selection, limit=_PAGE_SIZE),
        filters=filters,
        statuses=STATUSES,
        parked_view=False,
        back=_local(str(request.url.path) + "?" + request.url.query, "/console/webhooks"),
    )


@router.get("/parked")
async def parked(request: Request) -> Response:
    """Deliveries waiting for the record they refer to."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    log = WebhookLog(ServiceState.of(request).database)
    return _render(
        request,
        "webhooks",
        title="Parked webhooks",
        section="Parked",
        who=who,
        webhooks=await log.list(WebhookFilter(status="parked"), limit=_PAGE_SIZE),
        filters={},
        statuses=STATUSES,
        parked_view=True,
        back="/console/parked",
    )


@router.get("/webhooks/{webhook_id}")
async def webhook(request: Request, webhook_id: WebhookId) -> Response:
    """One delivery: facts, headers, body, replay buttons."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    hook = await WebhookLog(ServiceState.of(request).database).get(webhook_id)
    if hook is None:
        return _missing(request, who, "No such webhook delivery.", "/console/webhooks")
    detail = hook.detail()
    return _render(
        request,
        "webhook",
        title=f"Webhook {hook.id}",
        section="Webhooks",
        who=who,
        hook=hook,
        headers=_pretty(detail["headers"]),
        body=_pretty(detail["body"]),
    )


@router.post("/webhooks/{webhook_id}/replay")
async def replay_webhook(request: Request, webhook_id: WebhookId) -> Response:
    """Run a delivery's processing again (a parked one is released by this)."""
    who, form = await _operator(request)
    if who is None:
        return _refused(request, who)
    log = WebhookLog(ServiceState.of(request).database)
    queued = await log.replay([webhook_id], force=form.get("force") == "1")
    back = _local(form.get("back"), "/console/webhooks")
    return _back(back, "replay-queued" if queued else "no-delivery")


@router.get("/dead-letters")
async def dead_letters(request: Request) -> Response:
    """Dead letters, newest first, by consumer and state."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    state = ServiceState.of(request)
    params = request.query_params
    dead_state = _DEAD_STATES.get(params.get("state") or "", "dead")
    consumer = params.get("consumer") or None
    store = DeadLetters(state.database)
    letters = await store.list(consumer=consumer, state=dead_state, limit=_PAGE_SIZE)
    known = set((await store.count()).keys()) | {letter.consumer for letter in letters}
    return _render(
        request,
        "dead_letters",
        title="Dead letters",
        section="Dead letters",
        who=who,
        letters=letters,
        consumers=sorted(known),
        filters={"consumer": consumer, "state": dead_state},
        back=_local(str(request.url.path) + "?" + request.url.query, "/console/dead-letters"),
    )


@router.get("/dead-letters/{dead_letter_id}")
async def dead_letter(request: Request, dead_letter_id: DeadLetterId) -> Response:
    """One dead letter: facts, attempt history, message."""
    who = await _principal(request)
    if who is None:
        return _to_login(request)
    letter = await DeadLetters(ServiceState.of(request).database).get(dead_letter_id)
    if letter is None:
        return _missing(request, who, "No such dead letter.", "/console/dead-letters")
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body
    return _render(
        request,
        "dead_letter",
        title=f"Dead letter {letter.id}",
        section="Dead letters",
        who=who,
        letter=letter,
        body=_pretty(body),
    )


@router.post("/dead-letters/{dead_letter_id}/replay")
async def replay_dead_letter(request: Request, dead_letter_id: DeadLetterId) -> Response:
    """Hand a dead letter back to its consumer (its id is kept: the inbox still guards it)."""
    who, form = await _operator(request)
    if who is None:
        return _refused(request, who)
    queued = await DeadLetters(ServiceState.of(request).database).request_replay([dead_letter_id])
    back = _local(form.get("back"), "/console/dead-letters")
    return _back(back, "replay-queued" if queued else "not-dead")


@router.post("/dead-letters/{dead_letter_id}/purge")
async def purge_dead_letter(request: Request, dead_letter_id: DeadLetterId) -> Response:
    """Delete a dead letter for good."""
    who, _form_fields = await _operator(request)
    if who is None:
        return _refused(request, who)
    removed = await DeadLetters(ServiceState.of(request).database).purge([dead_letter_id])
    return _back("/console/dead-letters", "purged" if removed else "nothing-purged")


def _missing(request: Request, who: Who, message: str, back: str) -> HTMLResponse:
    return _render(
        request,
        "not_found",
        title="Not found",
        status_code=404,
        who=who,
        message=message,
        back=back,
    )


def _pretty(value: Any) -> str:
    if isinstance(value, Mapping | list):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return str(value)
