"""Reading and writing cases: SQL only, no HTTP."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app._domain import Activity, Case, CaseCreate, Priority, Status
from seawall.db import case_activity, cases, dialect_of
from seawall.ids import new_id

_ORDER = (cases.c.created_at.desc(), cases.c.id.desc())


def _to_case(row: sa.RowMapping) -> Case:
    return Case.model_validate(dict(row))


async def insert_case(session: AsyncSession, new: CaseCreate) -> Case:
    """Insert a new open case and return it."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": new_id(),
        "title": new.title,
        "status": Status.OPEN.value,
        "priority": new.priority.value,
        "external_id": new.external_id,
        "customer_id": new.customer_id,
        "metadata": new.metadata,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    await session.execute(cases.insert().values(**values))
    return Case.model_validate(values)


async def get_case(session: AsyncSession, case_id: str, *, for_update: bool = False) -> Case | None:
    """Return the case with *case_id*, or None."""
    query = sa.select(cases).where(cases.c.id == case_id)
    if for_update and dialect_of(session) == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return None if row is None else _to_case(row)


async def update_case(session: AsyncSession, case: Case, changes: dict[str, str]) -> Case | None:
    """Apply *changes* if the case is still at *case*'s version; None if it moved on."""
    now = datetime.now(UTC)
    result: Any = await session.execute(
        cases.update()
        .where(cases.c.id == case.id, cases.c.version == case.version)
        .values(**changes, version=case.version + 1, updated_at=now)
    )
    if result.rowcount != 1:
        return None
    return Case.model_validate(
        {**case.model_dump(), **changes, "version": case.version + 1, "updated_at": now}
    )


def _filters(status: Status | None, priority: Priority | None) -> list[sa.ColumnElement[bool]]:
    clauses = []
    if status is not None:
        clauses.append(cases.c.status == status.value)
    if priority is not None:
        clauses.append(cases.c.priority == priority.value)
    return clauses


async def list_page(
    session: AsyncSession,
    *,
    page: int,
    limit: int,
    status: Status | None,
    priority: Priority | None,
) -> tuple[list[Case], int]:
    """Return one offset page of cases, newest first, and the total count."""
    where = _filters(status, priority)
    total = (
        await session.execute(sa.select(sa.func.count()).select_from(cases).where(*where))
    ).scalar_one()
    rows = (
        await session.execute(
            sa.select(cases).where(*where).order_by(*_ORDER).offset((page - 1) * limit).limit(limit)
        )
    ).mappings()
    return [_to_case(row) for row in rows], int(total)


async def list_after(
    session: AsyncSession,
    *,
    cursor: tuple[datetime, str] | None,
    limit: int,
    status: Status | None,
    priority: Priority | None,
) -> tuple[list[Case], str | None]:
    """Return the cases after *cursor* (keyset pagination) and the next cursor.

    The cost does not grow with depth: the query seeks to ``(created_at, id)``
    through the index instead of skipping rows.
    """
    where = _filters(status, priority)
    if cursor is not None:
        created_at, case_id = cursor
        where.append(
            sa.or_(
                cases.c.created_at < created_at,
                sa.and_(cases.c.created_at == created_at, cases.c.id < case_id),
            )
        )
    rows = (
        await session.execute(sa.select(cases).where(*where).order_by(*_ORDER).limit(limit + 1))
    ).mappings()
    found = [_to_case(row) for row in rows]
    if len(found) <= limit:
        return found, None
    found = found[:limit]
    return found, encode_cursor(found[-1])


def encode_cursor(case: Case) -> str:
    """Return the opaque cursor that continues after *case*."""
    raw = json.dumps([case.created_at.isoformat(), case.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    """Decode a cursor made by `encode_cursor`.

    Raises:
        ValueError: the token was not made by `encode_cursor`.
    """
    if len(token) > 200:
        raise ValueError("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, case_id = json.loads(raw)
        moment = datetime.fromisoformat(created)
        # Queries compare in UTC: a moment near year 1 or 9999 may not exist there.
        in_utc = moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise ValueError("cursor is not one this API returned") from exc
    # Case ids never hold NUL (PostgreSQL cannot even compare against one).
    if not isinstance(case_id, str) or "\x00" in case_id or in_utc is None:
        raise ValueError("cursor is not one this API returned")
    return in_utc, case_id


async def case_activity_of(session: AsyncSession, case_id: str, *, limit: int) -> list[Activity]:
    """Return the first *limit* timeline lines of *case_id*, oldest first."""
    rows = (
        await session.execute(
            sa.select(case_activity)
            .where(case_activity.c.case_id == case_id)
            .order_by(case_activity.c.occurred_at, case_activity.c.id)
            .limit(limit)
        )
    ).mappings()
    return [
        Activity(
            event_id=row["event_id"],
            type=row["event_type"],
            summary=row["summary"],
            occurred_at=row["occurred_at"],
            recorded_at=row["recorded_at"],
            correlation_id=row["correlation_id"],
        )
        for row in rows
    ]
