"""Documents of cases: the model, its SQL, its events, and storing one (blob, then row).

No HTTP here: the API (``_documents``), the drop-folder import (``_imports``) and
the import consumer all attach documents through these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.db import Database, cases, dead_letters, documents
from seawall.ids import new_id
from seawall.messaging import Event, Outbox
from seawall.storage import BlobInfo, BlobStore, Data

DOCUMENT_SOURCE: Final = "/seawall/documents"
"""The CloudEvents ``source`` of document events: subjects ``seawall.documents.document.…``."""
IMPORT_CONSUMER: Final = "documents__importer"
"""The durable name of the consumer that validates and extracts uploaded documents."""

Source = Literal["api", "import"]

outbox = Outbox()


class Document(BaseModel):
    """A file attached to a case."""

    id: str
    case_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str = Field(description="Hex SHA-256 of the bytes, computed while they streamed in.")
    source: Source = Field(description="api (uploaded) or import (drop folder, watched prefix).")
    status: Literal["uploaded", "imported", "failed"] = Field(
        description="uploaded: waiting for the import consumer; imported: checked and "
        "extracted; failed: dead-lettered, with the reason in 'error'."
    )
    page_count: int | None = None
    text: str | None = Field(default=None, description="Extracted text (only on one document).")
    error: str | None = None
    created_at: datetime
    imported_at: datetime | None = None


class DocumentList(BaseModel):
    """The body of ``GET /cases/{id}/documents``, newest first."""

    data: list[Document]


def new_document_id() -> str:
    """A fresh document id."""
    return new_id()


def blob_key_for(document_id: str) -> str:
    """Where a document's bytes live in the blob store."""
    return f"documents/{document_id}"


def document_uploaded(document: Document) -> Event:
    """``document.uploaded``: a new document waits for the import consumer."""
    return Event.create(
        "document.uploaded",
        source=DOCUMENT_SOURCE,
        subject=document.id,
        data=document.model_dump(mode="json", exclude={"text", "error"}),
    )


def document_imported(document: Document) -> Event:
    """``document.imported``: the document was checked and its text extracted."""
    return Event.create(
        "document.imported",
        source=DOCUMENT_SOURCE,
        subject=document.id,
        data=document.model_dump(mode="json", exclude={"text", "error"}),
    )


def _document(row: Mapping[Any, Any], *, with_text: bool, error: str | None = None) -> Document:
    values = dict(row)
    if not with_text:
        values["text"] = None
    if error is not None and values["status"] == "uploaded":
        values["status"] = "failed"
    return Document.model_validate({**values, "error": error})


async def case_exists(session: AsyncSession, case_id: str) -> bool:
    """Whether the case *case_id* exists."""
    found = await session.execute(sa.select(cases.c.id).where(cases.c.id == case_id))
    return found.first() is not None


async def duplicate_of(session: AsyncSession, case_id: str, sha256: str) -> Document | None:
    """The document of *case_id* with these bytes, if there is one."""
    row = (
        (
            await session.execute(
                sa.select(documents).where(
                    documents.c.case_id == case_id, documents.c.sha256 == sha256
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else _document(row, with_text=False)


async def insert_document(
    session: AsyncSession,
    *,
    document_id: str,
    case_id: str,
    filename: str,
    blob: BlobInfo,
    source: Source,
) -> Document:
    """Insert a document and its ``document.uploaded`` event in *session*'s transaction."""
    assert blob.sha256 is not None, "BlobStore.put returns the SHA-256"
    event_id = new_id()
    values: dict[str, Any] = {
        "id": document_id,
        "case_id": case_id,
        "filename": filename,
        "content_type": blob.content_type,
        "size_bytes": blob.size,
        "sha256": blob.sha256,
        "blob_key": blob.key,
        "source": source,
        "status": "uploaded",
        "event_id": event_id,
        "created_at": datetime.now(UTC),
    }
    await session.execute(documents.insert().values(**values))
    document = Document.model_validate(values)
    event = document_uploaded(document).model_copy(update={"id": event_id})
    await outbox.add(session, event)
    return document


async def _dead_letter_reason(session: AsyncSession, event_id: str) -> str | None:
    row = (
        await session.execute(
            sa.select(dead_letters.c.error).where(
                dead_letters.c.consumer == IMPORT_CONSUMER,
                dead_letters.c.message_id == event_id,
                dead_letters.c.state == "dead",
            )
        )
    ).first()
    return None if row is None else str(row[0])


async def get_document(session: AsyncSession, document_id: str) -> Document | None:
    """The document *document_id* with its text, and its failure reason if it was dead-lettered."""
    row = (
        (await session.execute(sa.select(documents).where(documents.c.id == document_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    error = None
    if row["status"] == "uploaded":
        error = await _dead_letter_reason(session, row["event_id"])
    return _document(row, with_text=True, error=error)


async def blob_key_of(session: AsyncSession, document_id: str) -> str | None:
    """Where the bytes of document *document_id* are, or None when there is no such document."""
    found = await session.execute(
        sa.select(documents.c.blob_key).where(documents.c.id == document_id)
    )
    row = found.first()
    return None if row is None else str(row[0])


async def list_documents(session: AsyncSession, case_id: str, *, limit: int) -> list[Document]:
    """The newest *limit* documents of *case_id* (without their text)."""
    failed = (
        sa.select(dead_letters.c.error)
        .where(
            dead_letters.c.consumer == IMPORT_CONSUMER,
            dead_letters.c.message_id == documents.c.event_id,
            dead_letters.c.state == "dead",
        )
        .limit(1)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            sa.select(documents, failed.label("dead_error"))
            .where(documents.c.case_id == case_id)
            .order_by(documents.c.created_at.desc(), documents.c.id.desc())
            .limit(limit)
        )
    ).mappings()
    found = []
    for row in rows:
        values = {k: v for k, v in row.items() if k != "dead_error"}
        found.append(_document(values, with_text=False, error=row["dead_error"]))
    return found


async def store_document(
    database: Database,
    blobs: BlobStore,
    *,
    case_id: str,
    filename: str,
    content_type: str,
    data: Data,
    source: Source,
) -> tuple[Document, bool]:
    """Stream *data* into the blob store, then record the document and its event.

    The same bytes attached to the same case again give the existing document
    (and the new copy of the bytes is removed).

    Returns:
        The document and whether it is new.
    """
    document_id = new_document_id()
    key = blob_key_for(document_id)
    blob = await blobs.put(
        key, data, content_type=content_type, metadata={"case-id": case_id[:200]}
    )
    try:
        async with database.transaction() as session:
            assert blob.sha256 is not None
            existing = await duplicate_of(session, case_id, blob.sha256)
            if existing is None:
                created = await insert_document(
                    session,
                    document_id=document_id,
                    case_id=case_id,
                    filename=filename,
                    blob=blob,
                    source=source,
                )
                return created, True
    except IntegrityError:
        # Another import of the same bytes won the race: it is the document.
        async with database.reading() as session:
            existing = await duplicate_of(session, case_id, blob.sha256 or "")
        if existing is None:
            await blobs.delete(key)
            raise
    except BaseException:
        with contextlib.suppress(Exception):
            await blobs.delete(key)
        raise
    await blobs.delete(key)
    return existing, False
