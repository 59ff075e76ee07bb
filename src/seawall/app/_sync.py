"""CRM sync: CRM tickets become cases, and our case events flow back out as tickets.

Inbound, `CrmSync` pulls the CRM's change feed through the `CRM` adapter (and
its anti-corruption layer) with `seawall.sync.PagedSync`: each page is applied
by `apply_changes` and committed with its cursor. A CRM webhook naming one
ticket syncs just that ticket (`crm_record_changed`). Cases are upserted by
``(source, external_id)`` through the ``sync_links`` table; every change that
writes something writes one ``case.synced`` event through the outbox in the same
transaction, and an unchanged ticket writes nothing.

Outbound, the ``crm__from_cases`` consumer (`push_case_to_crm`) creates or
updates the CRM ticket of a case on ``case.created`` and ``case.updated``.

The rules (`decide`, pure; see ``docs/sync.md``):

- A ticket without a case creates one; a deleted ticket without a case is skipped.
- A deleted ticket closes its case (the case is never dropped).
- A change older than the last one seen for the ticket is stale: skipped.
- A ticket that says what the case already says is unchanged: nothing is written.
  (A resolved case is pushed as ``Closed``, the CRM's nearest state; ``closed``
  coming back for it counts as unchanged.)
- A conflict is a case changed here since the last sync, later than the CRM's
  change: the local change is kept and the conflict reported (log line
  ``crm_sync_conflict``, `SyncOutcome` ``conflict``); the bridge then pushes it.
- A closed case stays closed: a ticket reopened in the CRM does not reopen it.

Loop prevention: sync writes ``case.synced`` events (``data.origin`` is
``"crm"``), which the bridge skips; the bridge's own update of a ticket comes
back through the feed as a ticket that says what the case says, and so writes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import sqlalchemy as sa
import structlog
from pydantic import TypeAdapter
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app._domain import Status, transition_allowed
from seawall.app._events import EVENT_SOURCE
from seawall.config import Settings, load_settings
from seawall.db import (
    Database,
    affected_rows,
    cases,
    dialect_of,
    insert_ignoring_conflicts,
    insert_rows,
    sync_links,
)
from seawall.errors import DatabaseError, SeawallError, Unprocessable
from seawall.http import ServiceRegistry
from seawall.ids import new_ids
from seawall.integrations import (
    CRM,
    CaseDraft,
    CasePriority,
    CaseStatus,
    CaseUpdate,
    CrmCase,
    CrmChange,
    DuplicateRecord,
    RecordNotFound,
    SalesforceCRM,
)
from seawall.messaging import Consumer, Event, Outbox, load_consumers
from seawall.observability import current_causation_id, current_correlation_id
from seawall.process import freeze_startup_heap
from seawall.process import run as run_process
from seawall.resilience import RateLimit
from seawall.sync import Page, PagedSync, SyncProgress
from seawall.webhooks import WebhookEvent

log = structlog.get_logger("seawall.app")

SOURCE: Final = "crm"
"""The ``source`` of CRM links, the cursor's name and the ``origin`` of ``case.synced``."""
SERVICE: Final = "crm"
"""The external service the CRM is (``SEAWALL_SERVICES__CRM__...``)."""
BRIDGE_CONSUMER: Final = "crm__from_cases"
SYNCED: Final = "case.synced"

_outbox = Outbox()
_MAX_ID: Final = 200  # the longest external id a case (and a link) can hold


class SyncOutcome(StrEnum):
    """What a change did to its case."""

    CREATED = "created"
    UPDATED = "updated"
    CLOSED = "closed"
    UNCHANGED = "unchanged"
    STALE = "stale"
    CONFLICT = "conflict"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Link:
    """A case synced with a CRM ticket (a ``sync_links`` row)."""

    external_id: str
    case_id: str
    case_version: int
    remote_updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class LocalCase:
    """What `decide` needs of a case."""

    id: str
    title: str
    status: str
    priority: str
    customer_id: str | None
    version: int
    updated_at: datetime
    row: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one change (pure result of `decide`).

    Attributes:
        outcome: the kind of effect.
        changes: ``{field: new value}`` for an update or a close.
        refused: fields the CRM wanted changed but the rules kept (``status`` of a closed case).
    """

    outcome: SyncOutcome
    changes: dict[str, Any] = field(default_factory=dict)
    refused: tuple[str, ...] = ()


def _wanted(ticket: CrmCase) -> dict[str, Any]:
    return {
        "title": ticket.title,
        "priority": ticket.priority.value,
        "status": ticket.status.value,
        "customer_id": _customer(ticket),
    }


def _customer(ticket: CrmCase) -> str | None:
    # A case holds 200 characters of customer id; a longer one is no id of ours.
    return ticket.customer_id if ticket.customer_id and len(ticket.customer_id) <= _MAX_ID else None


def _same(name: str, local: Any, remote: Any) -> bool:
    if name == "status" and local == Status.RESOLVED.value and remote == Status.CLOSED.value:
        # The CRM has no resolved state: a resolved case is pushed as Closed.
        return True
    return bool(local == remote)


def decide(ticket: CrmCase, case: LocalCase | None, link: Link | None) -> Decision:
    """What a CRM ticket change does to its case (pure); the rules are the module's.

    Args:
        ticket: the ticket after the change (``deleted`` for a deletion).
        case: the case of the ticket, if there is one.
        link: the ticket's link, if there is one (None for a case found by the
            ticket's reference only).
    """
    if case is None:
        return Decision(SyncOutcome.SKIPPED if ticket.deleted else SyncOutcome.CREATED)
    if (
        link is not None
        and link.remote_updated_at is not None
        and ticket.updated_at < link.remote_updated_at
    ):
        return Decision(SyncOutcome.STALE)
    if ticket.deleted:
        if case.status == Status.CLOSED.value:
            return Decision(SyncOutcome.UNCHANGED)
        return Decision(SyncOutcome.CLOSED, {"status": Status.CLOSED.value})
    wanted = _wanted(ticket)
    changes = {
        name: value for name, value in wanted.items() if not _same(name, getattr(case, name), value)
    }
    refused: tuple[str, ...] = ()
    if "status" in changes and not transition_allowed(
        Status(case.status), Status(changes["status"])
    ):
        del changes["status"]
        refused = ("status",)
    if not changes:
        return Decision(SyncOutcome.UNCHANGED, refused=refused)
    changed_here = link is None or case.version != link.case_version
    if changed_here and case.updated_at > ticket.updated_at:
        return Decision(SyncOutcome.CONFLICT, changes, refused)
    return Decision(SyncOutcome.UPDATED, changes, refused)


# --- applying changes ----------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat()


_RECORD: Final = "crm"  # where the CRM adapter keeps the ticket as sent (CrmCase.metadata)


def _shared(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A case's metadata as ``case.synced`` carries it: without the CRM's record.

    The record is the case's (``metadata.crm``); the event would carry it a second
    time, and its consumers need the case's fields and what changed, not the record.
    """
    return {name: value for name, value in metadata.items() if name != _RECORD}


def _case_json(row: Mapping[str, Any], iso: Callable[[datetime], str] = _iso) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "status": row["status"],
        "priority": row["priority"],
        "external_id": row["external_id"],
        "customer_id": row["customer_id"],
        "metadata": _shared(row["metadata"]),
        "version": row["version"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


@dataclass(frozen=True, slots=True)
class Synced:
    """A case a CRM change wrote: its row as the change left it, what changed, and the ticket."""

    row: Mapping[str, Any]
    outcome: SyncOutcome
    changes: Mapping[str, Mapping[str, Any]]
    external_id: str


_EVENTS: Final = TypeAdapter(list[Event])


def synced_events(synced: Sequence[Synced], now: datetime) -> list[Event]:
    """The ``case.synced`` events of a page (pure but for the ids and the correlation).

    Validated in one pass over the page: a full resync makes 100,000.
    """
    correlation, causation = current_correlation_id(), current_causation_id()
    stamps: dict[datetime, str] = {}

    def iso(moment: datetime) -> str:
        # Most rows of a page share one timestamp (the page's): format it once.
        text = stamps.get(moment)
        if text is None:
            text = stamps[moment] = _iso(moment)
        return text

    return _EVENTS.validate_python(
        [
            {
                "id": event_id,
                "source": EVENT_SOURCE,
                "type": SYNCED,
                "subject": str(item.row["id"]),
                "time": now,
                "correlationid": correlation,
                "causationid": causation,
                "data": {
                    "case": _case_json(item.row, iso),
                    "action": item.outcome.value,
                    "changes": dict(item.changes),
                    "origin": SOURCE,
                    "external_id": item.external_id,
                },
            }
            for item, event_id in zip(synced, new_ids(len(synced)), strict=True)
        ]
    )


def _local(row: Mapping[str, Any]) -> LocalCase:
    return LocalCase(
        id=row["id"],
        title=row["title"],
        status=row["status"],
        priority=row["priority"],
        customer_id=row["customer_id"],
        version=row["version"],
        updated_at=row["updated_at"],
        row=row,
    )


def _rows_by(
    session: AsyncSession,
    table: sa.Table,
    column: sa.Column[str],
    ids: Sequence[str],
    *,
    where: Sequence[sa.ColumnElement[bool]] = (),
    lock: bool = False,
) -> sa.Select[Any]:
    """The rows of *table* whose *column* (unique with *where*) is one of *ids*, in one query.

    The ids are one bound value: a page holds up to 1000, and one parameter each
    costs more to compile and bind than the query takes to run. On PostgreSQL
    each id is looked up in the index (``unnest`` with a ``LATERAL`` lookup):
    ``column = ANY($1)`` in the generic plan of a prepared statement compares
    every row of the table with every id, and a full resync would slow down
    with each page it wrote. *lock* locks the rows found (PostgreSQL).
    """
    if dialect_of(session) == "postgresql":
        array = sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.String))
        wanted = sa.func.unnest(array).table_valued("id").render_derived(name="wanted")
        lookup = sa.select(table).where(*where, column == wanted.c.id).limit(1)
        if lock:
            lookup = lookup.with_for_update()
        found = lookup.lateral("found")
        return sa.select(found).select_from(wanted).join(found, sa.true())
    values = sa.func.json_each(sa.bindparam(None, json.dumps(list(ids)), type_=sa.String))
    return sa.select(table).where(
        *where, column.in_(sa.select(sa.literal_column("value")).select_from(values))
    )


async def _links(session: AsyncSession, ids: Sequence[str]) -> dict[str, Link]:
    if not ids:
        return {}
    query = _rows_by(
        session, sync_links, sync_links.c.external_id, ids, where=[sync_links.c.source == SOURCE]
    )
    return {
        row.external_id: Link(row.external_id, row.case_id, row.case_version, row.remote_updated_at)
        for row in await session.execute(query)
    }


async def _cases(session: AsyncSession, ids: Sequence[str]) -> dict[str, LocalCase]:
    if not ids:
        return {}
    # Sorted: concurrent writers lock the rows they share in one order.
    query = _rows_by(session, cases, cases.c.id, sorted(set(ids)), lock=True)
    return {row["id"]: _local(dict(row)) for row in (await session.execute(query)).mappings()}


@dataclass(slots=True)
class PageResult:
    """What `apply_changes` did, by outcome."""

    counts: dict[SyncOutcome, int] = field(default_factory=dict)

    def add(self, outcome: SyncOutcome) -> None:
        """Count one change."""
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    @property
    def written(self) -> int:
        """Changes that wrote a case (and its ``case.synced`` event)."""
        wrote = (SyncOutcome.CREATED, SyncOutcome.UPDATED, SyncOutcome.CLOSED)
        return sum(self.counts.get(outcome, 0) for outcome in wrote)


async def apply_changes(session: AsyncSession, changes: Sequence[CrmChange]) -> PageResult:
    """Apply CRM changes to cases in *session*'s transaction, with their events.

    Changes to other objects than tickets are skipped; of several changes to one
    ticket, the last is applied. Reads the page's links and cases in two
    queries and writes new cases, links and events with one statement each
    (`seawall.db.insert_rows`); updates go one case at a time.

    Returns:
        What each change did.
    """
    result = PageResult()
    latest: dict[str, CrmCase] = {}
    for change in changes:
        if change.kind != "ticket" or change.case is None or len(change.id) > _MAX_ID:
            result.add(SyncOutcome.SKIPPED)
            continue
        if change.id in latest:
            result.add(SyncOutcome.SKIPPED)
        ticket = change.case
        if change.deleted and not ticket.deleted:
            ticket = ticket.model_copy(update={"deleted": True})
        latest[change.id] = ticket
    if not latest:
        return result
    links = await _links(session, list(latest))
    # A ticket with our case id as its reference, and no link yet, is a case the
    # bridge pushed: link it instead of creating a twin.
    references = {
        ticket.reference: ticket_id
        for ticket_id, ticket in latest.items()
        if ticket_id not in links and ticket.reference
    }
    found = await _cases(session, [link.case_id for link in links.values()] + list(references))
    now = datetime.now(UTC)
    new_cases: list[dict[str, Any]] = []
    new_links: list[dict[str, Any]] = []
    synced: list[Synced] = []
    case_ids = iter(new_ids(len(latest)))
    for ticket_id, ticket in latest.items():
        link = links.get(ticket_id)
        case = found.get(link.case_id) if link is not None else found.get(ticket.reference or "")
        decision = decide(ticket, case, link)
        result.add(decision.outcome)
        if decision.refused:
            log.info(
                "crm_sync_refused",
                ticket=ticket_id,
                case_id=case.id if case else None,
                fields=list(decision.refused),
            )
        if decision.outcome is SyncOutcome.CREATED:
            row = _new_case(ticket, now, next(case_ids))
            new_cases.append(row)
            new_links.append(_link_row(ticket_id, row["id"], 1, ticket.updated_at, now))
            synced.append(Synced(row, decision.outcome, {}, ticket_id))
        elif decision.outcome is SyncOutcome.CONFLICT:
            assert case is not None
            log.warning(
                "crm_sync_conflict",
                ticket=ticket_id,
                case_id=case.id,
                fields=sorted(decision.changes),
                case_updated_at=_iso(case.updated_at),
                crm_updated_at=_iso(ticket.updated_at),
                kept="local",
            )
        elif decision.outcome in (SyncOutcome.UPDATED, SyncOutcome.CLOSED):
            assert case is not None
            row = await _update_case(session, case, decision.changes, ticket, now)
            changed = {
                name: {"from": getattr(case, name), "to": value}
                for name, value in decision.changes.items()
            }
            await _save_link(session, ticket_id, case.id, row["version"], ticket.updated_at, now)
            synced.append(Synced(row, decision.outcome, changed, ticket_id))
        elif link is None and case is not None:
            # Unchanged, found by reference: remember the link (no case write, no event).
            await _save_link(session, ticket_id, case.id, case.version, ticket.updated_at, now)
    await insert_rows(session, cases, new_cases)
    await insert_rows(session, sync_links, new_links)
    await _outbox.add_all(session, synced_events(synced, now))
    return result


def _new_case(ticket: CrmCase, now: datetime, case_id: str) -> dict[str, Any]:
    return {
        "id": case_id,
        "title": ticket.title,
        "status": ticket.status.value,
        "priority": ticket.priority.value,
        "external_id": ticket.external_id,
        "customer_id": _customer(ticket),
        "metadata": {"source": SOURCE, **ticket.metadata},
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def _link_row(
    ticket_id: str, case_id: str, version: int, remote: datetime | None, now: datetime
) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "external_id": ticket_id,
        "case_id": case_id,
        "case_version": version,
        "remote_updated_at": remote,
        "synced_at": now,
    }


async def _update_case(
    session: AsyncSession,
    case: LocalCase,
    changes: Mapping[str, Any],
    ticket: CrmCase,
    now: datetime,
) -> dict[str, Any]:
    metadata = {**case.row["metadata"], **ticket.metadata}
    values = {**changes, "metadata": metadata, "version": case.version + 1, "updated_at": now}
    result = await session.execute(
        cases.update().where(cases.c.id == case.id, cases.c.version == case.version).values(values)
    )
    if affected_rows(result) != 1:
        # The transaction rolls back and the page is tried again with the new version.
        raise RuntimeError(f"case {case.id} changed while a CRM change was applied; retry")
    return {**case.row, **values}


async def _save_link(
    session: AsyncSession,
    ticket_id: str,
    case_id: str,
    version: int,
    remote: datetime | None,
    now: datetime,
) -> None:
    """Insert or move the link of *ticket_id* forward (never back to an older version)."""
    inserted = await session.execute(
        insert_ignoring_conflicts(session, sync_links).values(
            _link_row(ticket_id, case_id, version, remote, now)
        )
    )
    if affected_rows(inserted) == 1:
        return
    values: dict[str, Any] = {"case_id": case_id, "synced_at": now}
    values["case_version"] = sa.func.max(sync_links.c.case_version, version)
    if dialect_of(session) == "postgresql":
        values["case_version"] = sa.func.greatest(sync_links.c.case_version, version)
    if remote is not None:
        values["remote_updated_at"] = sa.case(
            (sync_links.c.remote_updated_at.is_(None), remote),
            (sync_links.c.remote_updated_at < remote, remote),
            else_=sync_links.c.remote_updated_at,
        )
    await session.execute(
        sync_links.update()
        .where(sync_links.c.source == SOURCE, sync_links.c.external_id == ticket_id)
        .values(values)
    )


# --- the runtime: CRM, inbound sync, outbound bridge ---------------------------------


class CrmSync:
    """The CRM sync of one service: its `CRM`, its database and its feed loop.

    Args:
        crm: the CRM adapter.
        database: the service's database (None: only `sync_ticket`, in a given session).
        page_size: changes asked for per page (1 to 1000).
        rate_limit: taken before each page of a full resync, if given (the
            adapter's service applies its own ``RATE_LIMIT`` to every call too).
    """

    def __init__(
        self,
        crm: CRM,
        database: Database | None,
        *,
        page_size: int = 500,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1 to 1000")
        self.crm = crm
        self.database = database
        self.page_size = page_size
        self.rate_limit = rate_limit
        self.conflicts = 0

    async def _fetch(self, cursor: str | None) -> Page[CrmChange]:
        page = await self.crm.changes(cursor, limit=self.page_size)
        return Page(page.changes, page.next_cursor, page.has_more)

    async def _apply(self, session: AsyncSession, page: Page[CrmChange]) -> int:
        result = await apply_changes(session, page.items)
        self.conflicts += result.counts.get(SyncOutcome.CONFLICT, 0)
        return result.written

    def loop(
        self, *, full: bool = False, on_page: Callable[[SyncProgress], object] | None = None
    ) -> PagedSync[CrmChange]:
        """The `PagedSync` of the CRM's feed (cursor ``crm``)."""
        if self.database is None:
            raise ValueError("this CrmSync has no database to sync the feed into")
        return PagedSync(
            SOURCE,
            database=self.database,
            fetch=self._fetch,
            apply=self._apply,
            rate_limit=self.rate_limit if full else None,
            on_page=on_page,
        )

    async def run(
        self,
        *,
        full: bool = False,
        restart: bool = False,
        max_pages: int | None = None,
        on_page: Callable[[SyncProgress], object] | None = None,
    ) -> SyncProgress:
        """Apply the CRM's changes since the stored cursor (or all of them with *full*).

        See `seawall.sync.PagedSync.run`.
        """
        loop = self.loop(full=full, on_page=on_page)
        return await loop.run(full=full, restart=restart, max_pages=max_pages)

    async def sync_ticket(self, session: AsyncSession, ticket_id: str) -> SyncOutcome:
        """Sync one ticket now (a webhook named it), in *session*'s transaction.

        A ticket the CRM no longer has closes its case. The cursor does not move:
        the feed brings the same change later, and it then writes nothing.
        """
        ticket = await self.crm.get_ticket(ticket_id)
        if ticket is None:
            links = await _links(session, [ticket_id])
            if ticket_id not in links:
                return SyncOutcome.SKIPPED
            ticket = _gone(ticket_id)
        result = await apply_changes(
            session, [CrmChange(cursor="", kind="ticket", id=ticket_id, case=ticket)]
        )
        return next(iter(result.counts))


def _gone(ticket_id: str) -> CrmCase:
    """A deleted ticket the CRM no longer shows: only its deletion matters."""
    return CrmCase(
        external_id=ticket_id,
        title=ticket_id,
        priority=CasePriority.MEDIUM,
        status=CaseStatus.CLOSED,
        updated_at=datetime.now(UTC),
        deleted=True,
    )


class CrmRuntime:
    """Where the consumers and webhook handlers find the service's `CrmSync`.

    The service sets it at start-up (`configure`); a worker started on its own
    builds it from the settings on first use.
    """

    def __init__(self) -> None:
        self._sync: CrmSync | None = None
        self._configured = False
        self._owned: ServiceRegistry | None = None
        self._lock = asyncio.Lock()

    def configure(self, sync: CrmSync | None) -> None:
        """Use *sync* (None: the CRM is not configured and the bridge does nothing)."""
        self._sync = sync
        self._configured = True

    def reset(self) -> None:
        """Forget the configuration (at shutdown)."""
        self._sync = None
        self._configured = False

    async def get(self, database: Database | None = None) -> CrmSync | None:
        """The configured `CrmSync`, or one built from the settings; None without a CRM."""
        if self._configured:
            return self._sync
        async with self._lock:
            if not self._configured:
                settings = load_settings()
                if SERVICE in settings.services:
                    self._owned = ServiceRegistry.from_settings(
                        {SERVICE: settings.services[SERVICE]}
                    )
                    self._owned.open()
                    self._sync = build_crm_sync(settings, self._owned, database)
                self._configured = True
        return self._sync


crm_runtime = CrmRuntime()
"""The service's CRM sync, for the bridge consumer and the CRM webhook handler."""


def build_crm_sync(
    settings: Settings, services: Mapping[str, Any], database: Database | None
) -> CrmSync | None:
    """The service's `CrmSync` when ``SEAWALL_SERVICES__CRM__BASE_URL`` is set, else None."""
    service = services.get(SERVICE)
    if service is None:
        return None
    options = settings.sync.crm
    limit = (
        RateLimit(options.full_rate_limit, name="crm-full-resync", mode="wait")
        if options.full_rate_limit
        else None
    )
    return CrmSync(SalesforceCRM(service), database, page_size=options.page_size, rate_limit=limit)


async def run_scheduled(sync: CrmSync, interval: float) -> None:
    """Sync every *interval* seconds until cancelled; failures are logged and retried."""
    while True:
        try:
            await sync.run()
        except (SeawallError, SQLAlchemyError, DatabaseError, OSError) as exc:
            log.warning("crm_sync_failed", error=type(exc).__name__, detail=str(exc)[:300])
        except Exception:
            # Never let the schedule die silently: log it and try again next round.
            log.exception("crm_sync_failed")
        await asyncio.sleep(interval)


# --- outbound: the bridge consumer and the webhook handler ----------------------------


async def _find_link(session: AsyncSession, case_id: str) -> Link | None:
    row = (
        await session.execute(
            sa.select(sync_links).where(
                sync_links.c.source == SOURCE, sync_links.c.case_id == case_id
            )
        )
    ).first()
    if row is None:
        return None
    return Link(row.external_id, row.case_id, row.case_version, row.remote_updated_at)


async def push_case_to_crm(event: Event, session: AsyncSession, sync: CrmSync | None) -> str:
    """Create or update the CRM ticket of the case *event* is about.

    Skips events that came from the CRM (``case.synced``, or ``data.origin``
    ``"crm"``): echoing them back would loop. The case is read as it is now, so
    a late redelivery pushes the current state, never an old one.

    Returns:
        What it did: ``created``, ``updated``, ``skipped`` (also when the ticket
        was deleted in the CRM: its deletion closes the case on the next sync).
    """
    data = event.data or {}
    if event.type not in ("case.created", "case.updated") or data.get("origin") == SOURCE:
        return "skipped"
    if sync is None or not event.subject:
        return "skipped"
    row = (
        (await session.execute(sa.select(cases).where(cases.c.id == event.subject)))
        .mappings()
        .first()
    )
    if row is None:
        raise Unprocessable(f"case {event.subject!r} of event {event.id} does not exist")
    case = _local(dict(row))
    link = await _find_link(session, case.id)
    now = datetime.now(UTC)
    status = CaseStatus(case.status)
    priority = CasePriority(case.priority)
    if link is None:
        draft = CaseDraft(
            title=case.title,
            priority=priority,
            status=status,
            customer_id=case.customer_id,
            reference=case.id,
        )
        try:
            ticket = await sync.crm.create_ticket(draft)
        except DuplicateRecord:
            # An earlier attempt created it and died before committing the link.
            found = await sync.crm.list_tickets(reference=case.id)
            if not found:
                raise
            ticket = found[0]
        await _save_link(session, ticket.external_id, case.id, case.version, ticket.updated_at, now)
        log.info("crm_ticket_created", case_id=case.id, ticket=ticket.external_id)
        return "created"
    if link.case_version >= case.version:
        return "skipped"  # the CRM already has this version (it came from there)
    try:
        ticket = await sync.crm.update_ticket(
            link.external_id, CaseUpdate(status=status, priority=priority)
        )
    except RecordNotFound:
        # Deleted in the CRM: the feed brings the deletion, which closes the case.
        log.info("crm_ticket_gone", case_id=case.id, ticket=link.external_id)
        return "skipped"
    await _save_link(session, link.external_id, case.id, case.version, ticket.updated_at, now)
    log.info("crm_ticket_updated", case_id=case.id, ticket=link.external_id)
    return "updated"


async def _bridge(event: Event, session: AsyncSession) -> None:
    await push_case_to_crm(event, session, await crm_runtime.get())


bridge_consumer = Consumer(
    durable=BRIDGE_CONSUMER,
    subjects=("seawall.cases.case.created", "seawall.cases.case.updated"),
    handler=_bridge,
)
"""``crm__from_cases``: pushes our case events to the CRM (see `push_case_to_crm`)."""


def consumers_with_crm(settings: Settings) -> list[Consumer] | None:
    """The consumers a worker runs: None (those of ``SEAWALL_CONSUMER_MODULES``) without a CRM.

    With ``SEAWALL_SERVICES__CRM__`` configured, those plus `bridge_consumer`. The
    bridge is not in the module registry, so a service without a CRM neither
    runs it nor keeps inbox rows for it.
    """
    if SERVICE not in settings.services:
        return None
    return [*load_consumers(settings.consumer_modules), bridge_consumer]


async def crm_record_changed(event: WebhookEvent, session: AsyncSession) -> None:
    """A webhook handler: sync the one CRM ticket a webhook names (customers are ignored).

    Raises:
        seawall.errors.Unprocessable: the body names no record, or no CRM is configured.
    """
    payload = event.json()
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise Unprocessable(f"CRM webhook {event.id} names no record in data.id")
    if data.get("object", "ticket") != "ticket":
        return
    sync = await crm_runtime.get()
    if sync is None:
        raise Unprocessable("a CRM webhook arrived but SEAWALL_SERVICES__CRM__ is not configured")
    outcome = await sync.sync_ticket(session, str(data["id"])[:200])
    log.info("crm_webhook_synced", webhook_id=event.id, outcome=outcome.value)


def start_crm_sync(
    settings: Settings, services: Mapping[str, Any], database: Database
) -> Callable[[], Awaitable[None]]:
    """Configure the service's CRM sync and start its schedule, if any; returns its stop."""
    sync = build_crm_sync(settings, services, database)
    crm_runtime.configure(sync)
    interval = settings.sync.crm.interval_seconds
    task: asyncio.Task[None] | None = None
    if sync is not None and interval is not None:
        task = asyncio.create_task(run_scheduled(sync, interval), name="seawall-crm-sync")
        log.info("crm_sync_scheduled", interval_s=interval)

    async def stop() -> None:
        crm_runtime.reset()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return stop


# --- the command line: seawall sync crm --------------------------------------------------


def sync_crm_command(settings: Settings, *, full: bool = False, restart: bool = False) -> int:
    """``seawall sync crm``: apply the CRM's changes with a progress bar on stderr.

    Prints one summary line on stdout and returns the exit code: 0 done, 1 the
    CRM or the database failed (the pages committed before stay; run it again
    to resume), 2 the CRM is not configured.
    """
    from rich.console import Console  # noqa: PLC0415 - only this command draws
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from seawall.db import require_schema  # noqa: PLC0415
    from seawall.observability import configure_logging  # noqa: PLC0415

    err = Console(stderr=True)
    configure_logging(settings.log_level, stream=sys.stderr)
    if SERVICE not in settings.services:
        err.print(
            "seawall: no CRM is configured; set SEAWALL_SERVICES__CRM__BASE_URL and its "
            "credentials (see docs/sync.md)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 2

    async def run() -> tuple[SyncProgress, int]:
        database = Database(
            settings.database_url.get_secret_value(),
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout_seconds,
        )
        services = ServiceRegistry.from_settings({SERVICE: settings.services[SERVICE]})
        services.open()
        try:
            await require_schema(database)
            sync = build_crm_sync(settings, services, database)
            assert sync is not None
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with Progress(*columns, console=err, transient=False) as bar:
                task = bar.add_task("crm: reading the change feed", total=None)

                def on_page(progress: SyncProgress) -> None:
                    bar.update(
                        task,
                        description=(
                            f"crm: {progress.items} changes in {progress.pages} pages, "
                            f"{progress.applied} applied (cursor {progress.cursor})"
                        ),
                    )

                report = await sync.run(full=full, restart=restart, on_page=on_page)
            return report, sync.conflicts
        finally:
            await services.aclose()
            await database.dispose()

    try:
        freeze_startup_heap()
        report, conflicts = run_process(run())
    except (SeawallError, SQLAlchemyError, OSError) as exc:
        err.print(
            f"seawall: the CRM sync stopped: {type(exc).__name__}: {str(exc)[:300]}; "
            "the pages applied so far are kept, run it again to resume",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 1
    print(
        f"crm: {report.items} changes in {report.pages} pages, {report.applied} applied, "
        f"{conflicts} conflicts kept local; cursor {report.cursor}"
    )
    return 0
