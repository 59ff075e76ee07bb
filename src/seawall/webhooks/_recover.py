"""Recovering deliveries that never arrived, from the provider's own API.

GitHub never retries a failed delivery, and an outage on our side loses
Stripe's retries past their window: both providers keep a record that can be
read. `recover_github` lists a repository webhook's deliveries and
`recover_stripe` the account's events since a time, each through an
`ExternalService` (so with its timeouts, retries, breaker and auth); what is not
already stored goes through `WebhookReceiver.store`, the same dedupe → store →
process path as a delivery that arrived. No signature is checked: the API's
authentication vouches for the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from seawall.errors import InvalidResponse
from seawall.http import ExternalService
from seawall.webhooks._receive import WebhookProvider, WebhookReceiver

__all__ = ["RecoveryReport", "recover_github", "recover_stripe"]

# Marks a stored delivery as read back from the provider's API, not received.
RECOVERED_HEADER: Final = "x-seawall-recovered"
_NEXT_LINK: Final = re.compile(r'<([^>]+)>;\s*rel="next"')
_MAX_PAGES: Final = 1000


@dataclass(slots=True)
class RecoveryReport:
    """What a recovery found.

    Attributes:
        examined: deliveries or events the provider listed in the window.
        stored: the ones stored now (they had never arrived).
        duplicates: the ones already stored.
        failed_upstream: listed deliveries the provider had not delivered (GitHub).
        stored_ids: the ids of the deliveries stored now.
    """

    examined: int = 0
    stored: int = 0
    duplicates: int = 0
    failed_upstream: int = 0
    stored_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "examined": self.examined,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "failed_upstream": self.failed_upstream,
        }


def _body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def _keep(
    receiver: WebhookReceiver,
    provider: WebhookProvider,
    report: RecoveryReport,
    body: bytes,
    headers: dict[str, str],
    *,
    delivery_id: str,
    event_type: str | None,
    by_body: bool,
) -> None:
    receipt = await receiver.store(
        provider, body, headers, delivery_id=delivery_id, event_type=event_type, by_body=by_body
    )
    if receipt.status == "accepted":
        report.stored += 1
        if receipt.webhook_id:
            report.stored_ids.append(receipt.webhook_id)
    else:
        report.duplicates += 1


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def recover_github(
    api: ExternalService,
    receiver: WebhookReceiver,
    provider: WebhookProvider,
    *,
    repository: str,
    hook_id: int,
    since: datetime,
    page_size: int = 100,
) -> RecoveryReport:
    """Store the deliveries of a repository webhook since *since* that never arrived.

    Lists ``/repos/{repository}/hooks/{hook_id}/deliveries`` (newest first,
    following the ``Link: rel="next"`` cursor until *since*), and for each
    delivery not stored yet reads its request (headers and payload) and stores
    it with its ``X-GitHub-Delivery`` id.

    Args:
        api: the GitHub REST API (``https://api.github.com``, with a token).
        receiver: where deliveries are stored.
        provider: the webhook provider they are stored under.
        repository: ``owner/name``.
        hook_id: the repository webhook's id.
        since: the start of the window (aware datetime).
        page_size: deliveries per page (1 to 100).

    Raises:
        seawall.errors.ExternalServiceError: the API failed (after its retries).
        ValueError: a malformed repository or an unaware *since*.
    """
    if repository.count("/") != 1 or not all(repository.split("/")):
        raise ValueError("repository must be owner/name")
    if since.tzinfo is None:
        raise ValueError("since must carry its timezone")
    owner, name = repository.split("/")
    base = "/repos/{owner}/{repo}/hooks/{hook}/deliveries"
    ids = {"owner": owner, "repo": name, "hook": hook_id}
    report = RecoveryReport()
    params: dict[str, Any] = {"per_page": max(1, min(100, page_size))}
    for _ in range(_MAX_PAGES):
        page = await api.get(base, path_params=ids, params=params)
        items = page.json()
        if not isinstance(items, list):
            raise InvalidResponse("the deliveries are not a list", service=api.name)
        reached_start = False
        for item in items:
            if not isinstance(item, dict):
                continue
            delivered = _when(item.get("delivered_at"))
            if delivered is not None and delivered < since:
                reached_start = True
                break
            report.examined += 1
            status = item.get("status_code")
            if not (isinstance(status, int) and 200 <= status < 300):
                report.failed_upstream += 1
            guid = item.get("guid")
            if not isinstance(guid, str) or not guid:
                continue
            if await receiver.known(provider.name, guid):
                report.duplicates += 1
                continue
            detail = await api.get(
                base + "/{delivery}", path_params={**ids, "delivery": item.get("id")}
            )
            request = detail.json().get("request") or {}
            payload = request.get("payload")
            if payload is None:
                continue
            headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
            headers[RECOVERED_HEADER] = "github-deliveries-api"
            event = headers.get("X-GitHub-Event") or item.get("event")
            action = item.get("action")
            kind = f"{event}.{action}" if event and action else event
            await _keep(
                receiver,
                provider,
                report,
                _body(payload),
                headers,
                delivery_id=guid,
                event_type=str(kind)[:200] if kind else None,
                by_body=False,
            )
        next_link = _NEXT_LINK.search(page.headers.get("link") or "")
        if reached_start or next_link is None:
            return report
        cursor = re.search(r"[?&]cursor=([^&]+)", next_link.group(1))
        if cursor is None:
            return report
        params = {**params, "cursor": cursor.group(1)}
    return report


async def recover_stripe(
    api: ExternalService,
    receiver: WebhookReceiver,
    provider: WebhookProvider,
    *,
    since: datetime,
    until: datetime | None = None,
    types: str | None = None,
    page_size: int = 100,
) -> RecoveryReport:
    """Store the Stripe events created since *since* that never arrived.

    Pages through ``GET /v1/events`` (``created[gte]``, newest first,
    ``starting_after``) and stores each event not stored yet, keyed by its id as
    a delivery of it would be.

    Args:
        api: the Stripe API (``https://api.stripe.com``, with the secret key).
        receiver: where events are stored.
        provider: the webhook provider they are stored under.
        since: the start of the window (aware datetime).
        until: the end of the window, if any.
        types: only events of this type (``charge.*`` allowed, as Stripe takes it).
        page_size: events per page (1 to 100).

    Raises:
        seawall.errors.ExternalServiceError: the API failed (after its retries).
        ValueError: an unaware *since* or *until*.
    """
    if since.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError("since and until must carry their timezone")
    params: dict[str, Any] = {
        "limit": max(1, min(100, page_size)),
        "created[gte]": int(since.timestamp()),
    }
    if until is not None:
        params["created[lt]"] = int(until.timestamp())
    if types:
        params["type"] = types
    report = RecoveryReport()
    for _ in range(_MAX_PAGES):
        page = (await api.get("/v1/events", params=params)).json()
        events = page.get("data") if isinstance(page, dict) else None
        if not isinstance(events, list):
            raise InvalidResponse("the events are not a list", service=api.name)
        for event in events:
            if not isinstance(event, dict) or not isinstance(event.get("id"), str):
                continue
            report.examined += 1
            if await receiver.known(provider.name, event["id"]):
                report.duplicates += 1
                continue
            kind = event.get("type")
            await _keep(
                receiver,
                provider,
                report,
                _body(event),
                {"content-type": "application/json", RECOVERED_HEADER: "stripe-events-api"},
                delivery_id=event["id"],
                event_type=str(kind)[:200] if isinstance(kind, str) else None,
                by_body=False,
            )
        if not page.get("has_more") or not events:
            return report
        params = {**params, "starting_after": events[-1]["id"]}
    return report
