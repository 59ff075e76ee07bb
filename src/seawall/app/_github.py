"""GitHub ``issues`` webhooks become cases: an anti-corruption mapping and its handler.

`case_from_issue` is the mapping (pure): an issue's repository and number make
the case's ``external_id`` (``github:<owner>/<repo>#<number>``), its title the
title, its labels the priority, its state the status, and the original facts go
under ``metadata["github"]``. `issue_to_case` applies it: it creates the case
the first time an issue is seen and updates its status and priority after that,
writing ``case.created`` / ``case.updated`` through the outbox like the API
does. Deliveries can arrive out of order, so an event older than what the case
already reflects (by the issue's ``updated_at``) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import _repository as repo
from seawall.app._domain import CaseCreate, Priority, Status, transition_allowed
from seawall.app._events import case_created, case_updated, field_changes
from seawall.app._payments import release_for_case
from seawall.db import cases, dialect_of
from seawall.errors import Unprocessable
from seawall.messaging import Outbox
from seawall.webhooks import WebhookEvent

log = structlog.get_logger("seawall.app")
_outbox = Outbox()

# Labels that say how urgent an issue is, lower-cased; the first match wins.
_PRIORITY_LABELS: Final = (
    (
        {"priority: high", "priority:high", "p0", "p1", "urgent", "critical", "severity: high"},
        Priority.HIGH,
    ),
    ({"priority: low", "priority:low", "p3", "p4", "low priority"}, Priority.LOW),
)


@dataclass(frozen=True, slots=True)
class IssueCase:
    """What an issue says about its case."""

    external_id: str
    title: str
    status: Status
    priority: Priority
    updated_at: str
    github: dict[str, Any]


def _priority(labels: list[Any]) -> Priority:
    names = {
        str(label.get("name", "")).strip().lower() for label in labels if isinstance(label, dict)
    }
    for wanted, priority in _PRIORITY_LABELS:
        if names & wanted:
            return priority
    return Priority.MEDIUM


def case_from_issue(payload: Any) -> IssueCase:
    """Translate an ``issues`` webhook payload into the case it describes (pure).

    Raises:
        seawall.errors.Unprocessable: the payload has no issue or repository;
            such a delivery can never be applied.
    """
    issue = payload.get("issue") if isinstance(payload, dict) else None
    repository = payload.get("repository") if isinstance(payload, dict) else None
    if not isinstance(issue, dict) or not isinstance(repository, dict):
        raise Unprocessable("an issues event needs 'issue' and 'repository'")
    number, name = issue.get("number"), repository.get("full_name")
    if not isinstance(number, int) or not isinstance(name, str) or not name:
        raise Unprocessable("an issues event needs issue.number and repository.full_name")
    closed = issue.get("state") == "closed"
    completed = issue.get("state_reason") in (None, "completed")
    status = (Status.RESOLVED if completed else Status.CLOSED) if closed else Status.OPEN
    title = " ".join(str(issue.get("title") or f"GitHub issue #{number}").split())[:200]
    raw_labels = issue.get("labels")
    labels: list[Any] = raw_labels if isinstance(raw_labels, list) else []
    return IssueCase(
        external_id=f"github:{name}#{number}"[:200],
        title=title or f"GitHub issue #{number}",
        status=status,
        priority=_priority(labels),
        updated_at=str(issue.get("updated_at") or ""),
        github={
            "repository": name,
            "number": number,
            "url": issue.get("html_url"),
            "labels": sorted(str(label.get("name")) for label in labels if isinstance(label, dict)),
            "updated_at": issue.get("updated_at"),
        },
    )


def _newer(incoming: str, known: object) -> bool:
    if not isinstance(known, str) or not known or not incoming:
        return True
    try:
        return datetime.fromisoformat(incoming) >= datetime.fromisoformat(known)
    except ValueError:
        return True


async def issue_to_case(event: WebhookEvent, session: AsyncSession) -> None:
    """Create or update the case of a GitHub issue (a webhook handler)."""
    wanted = case_from_issue(event.json())
    if dialect_of(session) == "postgresql":
        # Two deliveries about one issue must not both create its case.
        await session.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(wanted.external_id)))
        )
    row = (
        await session.execute(
            sa.select(cases.c.id).where(cases.c.external_id == wanted.external_id)
        )
    ).first()
    if row is None:
        created = await repo.insert_case(
            session,
            CaseCreate(
                title=wanted.title,
                priority=wanted.priority,
                external_id=wanted.external_id,
                metadata={"source": "github", "github": wanted.github},
            ),
        )
        case = created
        from seawall.app.consumers import webhook_processor  # noqa: PLC0415 - avoids a cycle

        await release_for_case(webhook_processor, session, case)
        await _outbox.add(session, case_created(case))
        if wanted.status is Status.OPEN:
            return
    else:
        found = await repo.get_case(session, str(row[0]), for_update=True)
        assert found is not None
        case = found
        if not _newer(wanted.updated_at, case.metadata.get("github", {}).get("updated_at")):
            log.info("github_issue_stale", case_id=case.id, webhook_id=event.id)
            return
    changes: dict[str, str] = {}
    if wanted.status is not case.status:
        if transition_allowed(case.status, wanted.status):
            changes["status"] = wanted.status.value
        else:
            log.info(
                "github_issue_transition_refused",
                case_id=case.id,
                current=case.status.value,
                wanted=wanted.status.value,
            )
    if wanted.priority is not case.priority:
        changes["priority"] = wanted.priority.value
    if not changes:
        return
    updated = await repo.update_case(session, case, changes)
    if updated is None:
        raise RuntimeError(f"case {case.id} changed while a GitHub event was applied; retrying")
    await session.execute(
        cases.update()
        .where(cases.c.id == case.id)
        .values(metadata={**case.metadata, "source": "github", "github": wanted.github})
    )
    await _outbox.add(session, case_updated(updated, field_changes(case, changes)))
