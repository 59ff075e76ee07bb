"""The Cases API: ``/cases``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import _repository as repo
from seawall.app._domain import (
    ActivityList,
    Case,
    CaseCreate,
    CaseList,
    CasePatch,
    CursorPagination,
    PagePagination,
    Priority,
    Status,
    transition_allowed,
)
from seawall.app._events import case_created, case_updated, field_changes
from seawall.app._idempotent import idempotency_key, run_idempotent
from seawall.app._payments import release_for_case
from seawall.app._problems import FieldError, Problem, ProblemDetails
from seawall.app._state import ServiceState
from seawall.app.consumers import webhook_processor
from seawall.messaging import Outbox

MAX_PAGE = 1_000_000

_PROBLEM = {"model": ProblemDetails, "content": {"application/problem+json": {}}}
router = APIRouter(tags=["cases"])
outbox = Outbox()


def _case_response(case: Case, status: int = 200) -> JSONResponse:
    headers = {"ETag": case.etag}
    if status == 201:
        headers["Location"] = f"/cases/{case.id}"
    return JSONResponse(jsonable_encoder(case), status_code=status, headers=headers)


def _not_found(case_id: str) -> Problem:
    return Problem(404, "case-not-found", f"there is no case with id {case_id!r}")


def _json_body(request: Request) -> None:
    """Refuse a body that is not declared as JSON with 415.

    FastAPI parses only ``application/json`` (and ``+json``) bodies; any other content
    type reaches validation as raw bytes and would get a puzzling 422.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Problem(
            415,
            "unsupported-media-type",
            "send the body as JSON with the header Content-Type: application/json",
        )


@router.post(
    "/cases",
    status_code=201,
    response_model=Case,
    dependencies=[Depends(_json_body)],
    responses={400: _PROBLEM, 409: _PROBLEM, 413: _PROBLEM, 415: _PROBLEM, 422: _PROBLEM},
    summary="Open a case",
)
async def create_case(
    request: Request,
    body: CaseCreate,
    idempotency_key_header: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required (or X-Idempotency-Key): a retry with the same key and body "
            "returns the first response instead of creating a second case.",
        ),
    ] = None,
) -> Response:
    """Create a case and its ``case.created`` event in one transaction."""
    state = ServiceState.of(request)
    key = idempotency_key(request, required=True)

    async def work(session: AsyncSession) -> JSONResponse:
        case = await repo.insert_case(session, body)
        # Webhooks that arrived before this case (a payment for it) go on now.
        await release_for_case(webhook_processor, session, case)
        await outbox.add(session, case_created(case))
        return _case_response(case, 201)

    return await run_idempotent(
        request, database=state.database, store=state.idempotency, key=key, work=work
    )


@router.get(
    "/cases",
    response_model=CaseList,
    responses={400: _PROBLEM, 422: _PROBLEM},
    summary="List cases, newest first",
)
async def list_cases(
    request: Request,
    page: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Offset mode page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Status | None = None,
    priority: Priority | None = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Cursor mode: empty for the first page, then each answer's next_cursor.",
        ),
    ] = None,
) -> CaseList:
    """Page through cases by page number, or by cursor at a cost that does not grow with depth."""
    state = ServiceState.of(request)
    if cursor is not None and page is not None:
        raise Problem(
            400,
            "paging-conflict",
            "use either page (offset mode) or cursor (cursor mode), not both",
            errors=[FieldError(field="query.cursor", message="not with page", type="conflict")],
        )
    async with state.database.reading() as session:
        if cursor is not None:
            try:
                after = repo.decode_cursor(cursor) if cursor else None
            except ValueError as exc:
                raise Problem(
                    400,
                    "invalid-cursor",
                    str(exc),
                    errors=[FieldError(field="query.cursor", message=str(exc), type="cursor")],
                ) from None
            items, next_cursor = await repo.list_after(
                session, cursor=after, limit=limit, status=status, priority=priority
            )
            return CaseList(
                data=items, pagination=CursorPagination(limit=limit, next_cursor=next_cursor)
            )
        number = page or 1
        items, total = await repo.list_page(
            session, page=number, limit=limit, status=status, priority=priority
        )
    return CaseList(
        data=items,
        pagination=PagePagination(
            page=number, limit=limit, total=total, totalPages=(total + limit - 1) // limit
        ),
    )


# No NUL: PostgreSQL cannot compare against it, nor store it in an idempotency scope.
CaseId = Annotated[str, Path(max_length=64, pattern="^[^\\x00]*$", description="The case id.")]


@router.get(
    "/cases/{case_id}",
    response_model=Case,
    responses={404: _PROBLEM},
    summary="Read a case",
)
async def read_case(request: Request, case_id: CaseId) -> Response:
    """Return the case with its ``ETag`` (use it as ``If-Match`` when patching)."""
    state = ServiceState.of(request)
    async with state.database.reading() as session:
        case = await repo.get_case(session, case_id)
    if case is None:
        raise _not_found(case_id)
    if request.headers.get("if-none-match") == case.etag:
        return Response(status_code=304, headers={"ETag": case.etag})
    return _case_response(case)


@router.get(
    "/cases/{case_id}/activity",
    response_model=ActivityList,
    responses={404: _PROBLEM},
    summary="Read a case's timeline",
)
async def read_activity(
    request: Request,
    case_id: CaseId,
    limit: Annotated[int, Query(ge=1, le=500, description="Lines to return.")] = 100,
) -> ActivityList:
    """Return the case's events as recorded by its consumer, oldest first.

    The timeline is written asynchronously (outbox, relay, bus, consumer), so a
    change shows up here shortly after the request that made it.
    """
    state = ServiceState.of(request)
    async with state.database.reading() as session:
        if await repo.get_case(session, case_id) is None:
            raise _not_found(case_id)
        lines = await repo.case_activity_of(session, case_id, limit=limit)
    return ActivityList(data=lines)


def _matches(if_match: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    return "*" in candidates or etag in candidates


@router.patch(
    "/cases/{case_id}",
    response_model=Case,
    dependencies=[Depends(_json_body)],
    responses={
        400: _PROBLEM,
        404: _PROBLEM,
        409: _PROBLEM,
        412: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
    },
    summary="Change a case's status or priority",
)
async def patch_case(
    request: Request,
    case_id: CaseId,
    body: CasePatch,
    if_match: Annotated[
        str | None,
        Header(description="The ETag you read; a stale one is answered with 412."),
    ] = None,
) -> Response:
    """Change status and/or priority, with a ``case.updated`` event in the same transaction."""
    state = ServiceState.of(request)
    key = idempotency_key(request, required=False)

    async def work(session: AsyncSession) -> JSONResponse:
        case = await repo.get_case(session, case_id, for_update=True)
        if case is None:
            raise _not_found(case_id)
        if if_match is not None and not _matches(if_match, case.etag):
            raise Problem(
                412,
                "stale-version",
                "the case changed since you read it; GET it again and retry with its ETag",
                headers={"ETag": case.etag},
            )
        if body.status is not None and not transition_allowed(case.status, body.status):
            raise Problem(
                409,
                "invalid-transition",
                f"a {case.status.value} case cannot become {body.status.value}",
                errors=[FieldError(field="body.status", message="not allowed", type="transition")],
            )
        changes = {
            name: value.value
            for name, value in (("status", body.status), ("priority", body.priority))
            if value is not None and value != getattr(case, name)
        }
        if not changes:
            return _case_response(case)
        updated = await repo.update_case(session, case, changes)
        if updated is None:
            raise Problem(
                412,
                "stale-version",
                "the case changed while this request ran; GET it again and retry",
            )
        await outbox.add(session, case_updated(updated, field_changes(case, changes)))
        return _case_response(updated)

    return await run_idempotent(
        request, database=state.database, store=state.idempotency, key=key, work=work
    )
