"""`FakeGitHub`: GitHub's repository webhooks and the log of their deliveries.

GitHub sends each webhook once and never retries a failed delivery; what it
keeps is a log of every attempt, readable through the REST API ("List
deliveries for a repository webhook"), with each delivery's request headers
and payload. A client recovers what it missed from that log. This fake serves
the log as GitHub does (cursor pagination through the ``Link`` header, newest
first, three days of history) and really sends deliveries with
`FakeGitHub.deliver`, recording their true outcome, a refused connection included.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Final, Unpack
from urllib.parse import urlsplit

from pydantic import SecretStr

from seawall.testing._http import FakeRequest, FakeResponse
from seawall.testing._server import FakeServer, FakeServerOptions

__all__ = ["FakeGitHub"]

_DOCS: Final = "https://docs.github.com/rest/repos/webhooks"
_DEFAULT_PER_PAGE: Final = 30
_MAX_PER_PAGE: Final = 100
_DEFAULT_RETENTION: Final = timedelta(days=3)  # GitHub keeps three days of deliveries
_CURSOR_PREFIX: Final = "v1_"
# Past 2**31, as GitHub's own delivery ids are: a client that keeps them in 32 bits fails here.
_FIRST_DELIVERY_ID: Final = 12_000_000_001
_FIRST_REPOSITORY_ID: Final = 700_000_001
_MAX_RESPONSE_BYTES: Final = 64 * 1024
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


def _message(status: int, message: str) -> FakeResponse:
    """GitHub's error body: ``{"message", "documentation_url", "status"}``."""
    return FakeResponse.json(
        {"message": message, "documentation_url": _DOCS, "status": str(status)}, status
    )


def _not_found() -> FakeResponse:
    return _message(404, "Not Found")


def _timestamp(moment: float) -> str:
    """GitHub's time format: ISO 8601 UTC to the second, ``2026-05-12T20:33:44Z``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_text(status_code: int) -> str:
    if status_code == 0:
        return "failed to connect"
    return _REASONS.get(status_code, f"Invalid HTTP Response: {status_code}")


@dataclass(slots=True)
class _Delivery:
    id: int
    guid: str
    delivered_at: float
    redelivery: bool
    duration: float
    status_code: int
    status: str
    event: str
    action: str | None
    repository_id: int
    url: str | None
    request_headers: dict[str, str]
    raw_body: bytes
    response_headers: dict[str, str]
    response_body: str | None

    def sort_key(self) -> tuple[float, int]:
        return self.delivered_at, self.id

    def summary(self) -> dict[str, Any]:
        """The item of "List deliveries for a repository webhook"."""
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": _timestamp(self.delivered_at),
            "redelivery": self.redelivery,
            "duration": self.duration,
            "status": self.status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": None,
            "repository_id": self.repository_id,
            "throttled_at": None,
        }

    def detail(self) -> dict[str, Any]:
        """The answer of "Get a delivery for a repository webhook"."""
        return {
            **self.summary(),
            "url": self.url,
            "request": {
                "headers": dict(self.request_headers),
                "payload": json.loads(self.raw_body),
            },
            "response": {"headers": dict(self.response_headers), "payload": self.response_body},
        }


@dataclass(slots=True)
class _Hook:
    owner: str
    repo: str
    hook_id: int
    url: str | None
    secret: SecretStr | None
    repository_id: int
    created_at: float
    deliveries: list[_Delivery] = field(default_factory=list)


class FakeGitHub(FakeServer):
    """A fake of GitHub's REST API for repository webhooks (provider name ``github``).

    Every route needs ``Authorization: Bearer <token>`` (or ``token <token>``):
    without one, 401 ``Requires authentication``; with a wrong one, 401 ``Bad
    credentials``. Errors are GitHub's ``{"message", "documentation_url",
    "status"}``; an unknown repository, hook or delivery is a 404 ``Not Found``.
    Owner and repository names are matched without regard to case.

    Routes:
        ``GET /repos/{owner}/{repo}/hooks``: the hooks, ``GET .../hooks/{hook_id}``:
        one (``{"type": "Repository", "id", "name": "web", "active", "events",
        "config": {"url", "content_type", "insecure_ssl", "secret"}, ...}``).
        ``GET .../hooks/{hook_id}/deliveries``: the deliveries, newest first,
        ``per_page`` at a time (default 30, at most 100; other values are
        clamped, as GitHub does) from ``cursor``. When more follow, a ``Link:
        <.../deliveries?per_page=N&cursor=X>; rel="next"`` header gives the next
        page; the cursor is opaque and one GitHub did not give is a 400. An item
        is ``{"id", "guid", "delivered_at", "redelivery", "duration", "status",
        "status_code", "event", "action", "installation_id", "repository_id",
        "throttled_at"}``; ``status_code`` 0 (``"failed to connect"`` or
        ``"timed out"``) when the receiver never answered.
        ``GET .../deliveries/{delivery_id}``: the item with ``url`` (where it
        was sent), ``request`` (``headers``, ``payload`` as a JSON object) and
        ``response`` (``headers``, ``payload`` as text).
        ``POST .../deliveries/{delivery_id}/attempts``: 202 ``{}``; the request
        is recorded in `redelivery_requests` (nothing is sent again).

    As on GitHub, deliveries older than *retention* (3 days) are not listed,
    read nor redelivered.

    Args:
        token: the token clients must send.
        retention: how long deliveries stay readable (``math.inf``: forever).
        delivery_timeout: seconds `deliver` waits for an answer (GitHub's 10).
        host, port, record, max_recorded, seed, clock: as for `FakeServer`.
    """

    provider_name = "github"

    def __init__(
        self,
        *,
        token: str | SecretStr = "ghp_fake",  # noqa: S107 - a fake credential
        retention: float | timedelta = _DEFAULT_RETENTION,
        delivery_timeout: float = 10.0,
        **options: Unpack[FakeServerOptions],
    ) -> None:
        super().__init__(**options)
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        seconds = retention.total_seconds() if isinstance(retention, timedelta) else retention
        if not seconds > 0:
            raise ValueError(f"retention must be positive seconds, got {retention!r}")
        if not (math.isfinite(delivery_timeout) and delivery_timeout > 0):
            raise ValueError(f"delivery_timeout must be positive seconds, got {delivery_timeout!r}")
        self.retention = float(seconds)
        self.delivery_timeout = delivery_timeout
        self._lock = threading.Lock()
        self._hooks: dict[tuple[str, str, int], _Hook] = {}
        self._repository_ids: dict[tuple[str, str], int] = {}
        self._next_hook_id = 1
        self._next_delivery_id = _FIRST_DELIVERY_ID
        self._redelivery_requests: list[dict[str, Any]] = []
        hooks = "/repos/{owner}/{repo}/hooks"
        delivery = hooks + "/{hook_id}/deliveries/{delivery_id}"
        self.route("GET", hooks, self._list_hooks)
        self.route("GET", hooks + "/{hook_id}", self._get_hook)
        self.route("GET", hooks + "/{hook_id}/deliveries", self._list_deliveries)
        self.route("GET", delivery, self._get_delivery)
        self.route("POST", delivery + "/attempts", self._redeliver)

    # --- helpers for tests -------------------------------------------------------

    def add_hook(
        self,
        owner: str,
        repo: str,
        hook_id: int | None = None,
        *,
        url: str | None = None,
        secret: str | SecretStr | None = None,
    ) -> int:
        """Create a repository webhook and return its id.

        Args:
            owner: the repository's owner.
            repo: the repository's name.
            hook_id: the id to give it; the next free one when None.
            url: where `deliver` sends its deliveries.
            secret: the secret deliveries are signed with (``X-Hub-Signature-256``);
                unsigned without one.

        Raises:
            ValueError: *hook_id* is taken (in any repository) or not positive.
        """
        with self._lock:
            chosen = self._next_hook_id if hook_id is None else hook_id
            if chosen < 1 or any(key[2] == chosen for key in self._hooks):
                raise ValueError(f"hook id {chosen} is taken or not positive")
            self._next_hook_id = max(self._next_hook_id, chosen + 1)
            names = (owner.lower(), repo.lower())
            repository_id = self._repository_ids.setdefault(
                names, _FIRST_REPOSITORY_ID + len(self._repository_ids)
            )
            self._hooks[(*names, chosen)] = _Hook(
                owner=owner,
                repo=repo,
                hook_id=chosen,
                url=url,
                # An empty secret signs nothing on GitHub: the same as none.
                secret=(SecretStr(secret) if secret else None)
                if isinstance(secret, str)
                else secret,
                repository_id=repository_id,
                created_at=self.clock.wall(),
            )
        return chosen

    def add_delivery(
        self,
        owner: str,
        repo: str,
        hook_id: int,
        event: str,
        payload: Mapping[str, Any],
        *,
        action: str | None = None,
        status_code: int = 200,
        delivered_at: datetime | float | None = None,
        guid: str | None = None,
        redelivery: bool = False,
    ) -> dict[str, Any]:
        """Record a delivery as if GitHub had made it (nothing is sent), and return it.

        Its request headers are those `deliver` sends, signed with the hook's
        secret if it has one.

        Args:
            owner, repo, hook_id: the hook (see `add_hook`).
            event: the ``X-GitHub-Event``, such as ``issues``.
            payload: the JSON object sent.
            action: the payload's action; its ``"action"`` field when None.
            status_code: the receiver's answer; 0 for a connection that failed.
            delivered_at: when (an aware datetime or Unix time); now when None.
            guid: the ``X-GitHub-Delivery``; a new UUID when None (a
                redelivery shares the guid of the delivery it repeats).
            redelivery: whether this is a redelivery.

        Returns:
            The delivery as ``GET .../deliveries/{id}`` answers it, plus
            ``raw_body``: the exact bytes signed and sent.

        Raises:
            KeyError: no such hook.
            TypeError: *payload* is not a mapping.
            ValueError: *delivered_at* is a naive datetime.
        """
        if isinstance(delivered_at, datetime):
            if delivered_at.tzinfo is None:
                raise ValueError("delivered_at must be an aware datetime (or a Unix time)")
            when = delivered_at.timestamp()
        else:
            when = self.clock.wall() if delivered_at is None else float(delivered_at)
        hook = self._hook(owner, repo, hook_id)
        guid = guid or str(uuid.uuid4())
        body = _payload_bytes(payload)
        with self._lock:
            delivery = self._store(
                hook,
                event=event,
                action=_action(action, payload),
                guid=guid,
                body=body,
                when=when,
                duration=0.0,
                status_code=status_code,
                status=_status_text(status_code),
                response_headers={},
                response_body="" if status_code else None,
                redelivery=redelivery,
            )
            return {**delivery.detail(), "raw_body": body}

    def deliver(
        self,
        owner: str,
        repo: str,
        hook_id: int,
        event: str,
        payload: Mapping[str, Any],
        *,
        action: str | None = None,
    ) -> dict[str, Any]:
        """Send a delivery to the hook's URL as GitHub does, record its outcome and return it.

        POSTs the payload as compact ASCII JSON (``json.dumps(payload,
        separators=(",", ":"))``, which re-serialising the API's ``payload``
        the same way gives back byte for byte) with GitHub's headers
        (``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-GitHub-Hook-ID``,
        ``X-Hub-Signature-256`` when the hook has a secret, ``User-Agent:
        GitHub-Hookshot/fake``) and records the real answer: its status and
        body, or ``status_code`` 0 with ``"failed to connect"`` (refused or
        reset) or ``"timed out"`` (no answer within `delivery_timeout`).
        Blocks until then: call it from a test, never from a handler of this
        fake (in an async test, through ``asyncio.to_thread``).

        Returns:
            The delivery as `add_delivery` returns it.

        Raises:
            KeyError: no such hook.
            TypeError: *payload* is not a mapping.
            ValueError: the hook has no http or https URL.
        """
        hook = self._hook(owner, repo, hook_id)
        if hook.url is None:
            raise ValueError(f"hook {hook_id} has no url to deliver to; give add_hook a url")
        guid = str(uuid.uuid4())
        body = _payload_bytes(payload)
        headers = _request_headers(hook, event, guid, body)
        started, sent_at = self.clock.monotonic(), self.clock.wall()
        status_code, status, response_headers, response_body = _post(
            hook.url, body, headers, self.delivery_timeout
        )
        duration = round(self.clock.monotonic() - started, 2)
        with self._lock:
            delivery = self._store(
                hook,
                event=event,
                action=_action(action, payload),
                guid=guid,
                body=body,
                when=sent_at,
                duration=duration,
                status_code=status_code,
                status=status,
                response_headers=response_headers,
                response_body=response_body,
                redelivery=False,
            )
            return {**delivery.detail(), "raw_body": body}

    def deliveries(self, owner: str, repo: str, hook_id: int) -> list[dict[str, Any]]:
        """Every delivery of a hook, in the order recorded, with ``raw_body`` (copies).

        Deliveries past the retention window are included: only the API hides them.

        Raises:
            KeyError: no such hook.
        """
        hook = self._hook(owner, repo, hook_id)
        with self._lock:
            return [{**d.detail(), "raw_body": d.raw_body} for d in hook.deliveries]

    @property
    def redelivery_requests(self) -> list[dict[str, Any]]:
        """Redeliveries asked for through the API, oldest first (copies).

        Each is ``{"owner", "repo", "hook_id", "delivery_id", "guid"}``.
        """
        with self._lock:
            return [dict(request) for request in self._redelivery_requests]

    def _hook(self, owner: str, repo: str, hook_id: int) -> _Hook:
        with self._lock:
            hook = self._hooks.get((owner.lower(), repo.lower(), hook_id))
        if hook is None:
            raise KeyError(f"no hook {hook_id} on {owner}/{repo}; create it with add_hook")
        return hook

    def _store(
        self,
        hook: _Hook,
        *,
        event: str,
        action: str | None,
        guid: str,
        body: bytes,
        when: float,
        duration: float,
        status_code: int,
        status: str,
        response_headers: dict[str, str],
        response_body: str | None,
        redelivery: bool,
    ) -> _Delivery:
        """Record a delivery (the caller holds the lock)."""
        delivery = _Delivery(
            id=self._next_delivery_id,
            guid=guid,
            delivered_at=when,
            redelivery=redelivery,
            duration=duration,
            status_code=status_code,
            status=status,
            event=event,
            action=action,
            repository_id=hook.repository_id,
            url=hook.url,
            request_headers=_request_headers(hook, event, guid, body),
            raw_body=body,
            response_headers=response_headers,
            response_body=response_body,
        )
        self._next_delivery_id += 1
        hook.deliveries.append(delivery)
        return delivery

    # --- the API -------------------------------------------------------------------

    def _denied(self, request: FakeRequest) -> FakeResponse | None:
        header = request.headers.get("authorization")
        if header is None:
            return _message(401, "Requires authentication")
        scheme, _, token = header.partition(" ")
        expected = self._token.get_secret_value().encode()
        if scheme.lower() in ("bearer", "token") and hmac.compare_digest(
            token.strip().encode(), expected
        ):
            return None
        return _message(401, "Bad credentials")

    def _find_hook(self, request: FakeRequest) -> _Hook | FakeResponse:
        """The hook the path names, or the 401 or 404 to answer (the caller holds the lock)."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        params = request.path_params
        hook_text = params["hook_id"]
        if not hook_text.isdigit():
            return _not_found()
        hook = self._hooks.get((params["owner"].lower(), params["repo"].lower(), int(hook_text)))
        return _not_found() if hook is None else hook

    def _visible(self, hook: _Hook) -> list[_Delivery]:
        """The deliveries inside the retention window, newest first (the caller holds the lock)."""
        oldest = self.clock.wall() - self.retention
        kept = [delivery for delivery in hook.deliveries if delivery.delivered_at >= oldest]
        return sorted(kept, key=_Delivery.sort_key, reverse=True)

    def _find_delivery(self, request: FakeRequest) -> tuple[_Hook, _Delivery] | FakeResponse:
        hook = self._find_hook(request)
        if isinstance(hook, FakeResponse):
            return hook
        wanted = request.path_params["delivery_id"]
        for delivery in self._visible(hook):
            if str(delivery.id) == wanted:
                return hook, delivery
        return _not_found()

    def _list_hooks(self, request: FakeRequest) -> FakeResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        names = (request.path_params["owner"].lower(), request.path_params["repo"].lower())
        with self._lock:
            if names not in self._repository_ids:
                return _not_found()
            hooks = [hook for key, hook in self._hooks.items() if key[:2] == names]
            return FakeResponse.json([self._hook_document(request, hook) for hook in hooks])

    def _get_hook(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            hook = self._find_hook(request)
            if isinstance(hook, FakeResponse):
                return hook
            return FakeResponse.json(self._hook_document(request, hook))

    def _hook_document(self, request: FakeRequest, hook: _Hook) -> dict[str, Any]:
        base = f"{_origin(request, self.url)}/repos/{hook.owner}/{hook.repo}/hooks/{hook.hook_id}"
        config: dict[str, Any] = {"content_type": "json", "insecure_ssl": "0", "url": hook.url}
        if hook.secret is not None:
            config["secret"] = "********"  # noqa: S105 - the mask GitHub shows, never the secret
        last = max(hook.deliveries, key=_Delivery.sort_key, default=None)
        return {
            "type": "Repository",
            "id": hook.hook_id,
            "name": "web",
            "active": True,
            "events": ["*"],
            "config": config,
            "created_at": _timestamp(hook.created_at),
            "updated_at": _timestamp(hook.created_at),
            "url": base,
            "test_url": f"{base}/test",
            "ping_url": f"{base}/pings",
            "deliveries_url": f"{base}/deliveries",
            "last_response": {
                "code": None if last is None else last.status_code,
                "status": "unused" if last is None else last.status,
                "message": None,
            },
        }

    def _list_deliveries(self, request: FakeRequest) -> FakeResponse:
        per_page = _per_page(request.param("per_page"))
        cursor = request.param("cursor")
        with self._lock:
            hook = self._find_hook(request)
            if isinstance(hook, FakeResponse):
                return hook
            visible = self._visible(hook)
            if cursor:
                after = _cursor_position(cursor, hook)
                if after is None:
                    return _message(400, "Invalid cursor")
                visible = [delivery for delivery in visible if delivery.sort_key() < after]
            page = visible[:per_page]
            items = [delivery.summary() for delivery in page]
        headers: dict[str, str] = {}
        if len(visible) > per_page:
            url = f"{_origin(request, self.url)}{request.path}"
            next_cursor = f"{_CURSOR_PREFIX}{page[-1].id}"
            headers["Link"] = f'<{url}?per_page={per_page}&cursor={next_cursor}>; rel="next"'
        return FakeResponse.json(items, headers=headers)

    def _get_delivery(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            found = self._find_delivery(request)
            if isinstance(found, FakeResponse):
                return found
            return FakeResponse.json(found[1].detail())

    def _redeliver(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            found = self._find_delivery(request)
            if isinstance(found, FakeResponse):
                return found
            hook, delivery = found
            self._redelivery_requests.append(
                {
                    "owner": hook.owner,
                    "repo": hook.repo,
                    "hook_id": hook.hook_id,
                    "delivery_id": delivery.id,
                    "guid": delivery.guid,
                }
            )
        return FakeResponse.json({}, 202)


def _payload_bytes(payload: Mapping[str, Any]) -> bytes:
    """The body of a delivery: compact ASCII JSON, keys in the payload's order.

    ``json.dumps(json.loads(body), separators=(",", ":")).encode()`` gives the
    same bytes back, so a payload read from the API can be signed again.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"a payload is a JSON object (a mapping), not {type(payload).__name__}")
    return json.dumps(payload, separators=(",", ":")).encode()


def _action(action: str | None, payload: Mapping[str, Any]) -> str | None:
    if action is not None:
        return action
    found = payload.get("action")
    return found if isinstance(found, str) else None


def _request_headers(hook: _Hook, event: str, guid: str, body: bytes) -> dict[str, str]:
    """The headers GitHub sends with a delivery, signed with the hook's secret if it has one."""
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/fake",
        "X-GitHub-Delivery": guid,
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": str(hook.hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(hook.repository_id),
        "X-GitHub-Hook-Installation-Target-Type": "repository",
    }
    if hook.secret is not None:
        key = hook.secret.get_secret_value().encode()
        headers["X-Hub-Signature"] = "sha1=" + hmac.digest(key, body, hashlib.sha1).hex()
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.digest(key, body, hashlib.sha256).hex()
    return headers


def _per_page(text: str | None) -> int:
    """GitHub's ``per_page``: 30 when absent or not a positive integer, at most 100."""
    if text is None or not text.isdigit() or int(text) < 1:
        return _DEFAULT_PER_PAGE
    return min(int(text), _MAX_PER_PAGE)


def _cursor_position(cursor: str, hook: _Hook) -> tuple[float, int] | None:
    """Where the page before *cursor* ended (None for a cursor this hook never gave)."""
    text = cursor.removeprefix(_CURSOR_PREFIX)
    if text == cursor or not text.isdigit():
        return None
    for delivery in hook.deliveries:
        if delivery.id == int(text):
            return delivery.sort_key()
    return None


def _origin(request: FakeRequest, fallback: str) -> str:
    """``http://host:port`` as the client addressed the fake (for ``Link`` and ``url`` fields)."""
    host = request.headers.get("host")
    return f"http://{host}" if host else fallback


def _post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str, dict[str, str], str | None]:
    """POST a delivery: its status code, status text, response headers and response text.

    No redirects are followed (GitHub does not). A receiver that never answered
    gives status code 0, with ``"timed out"`` or ``"failed to connect"``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not the URL itself in the message: its query or user part may hold a secret.
        raise ValueError("a hook URL must be http:// or https:// with a host")
    kind: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        with connection.getresponse() as response:
            text = response.read(_MAX_RESPONSE_BYTES).decode(errors="replace")
            answered = dict(response.getheaders())
            return response.status, _status_text(response.status), answered, text
    except TimeoutError:
        return 0, "timed out", {}, None
    except (OSError, http.client.HTTPException):
        return 0, "failed to connect", {}, None
    finally:
        connection.close()
