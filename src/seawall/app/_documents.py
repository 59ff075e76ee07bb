"""Documents of cases over HTTP, signed blob downloads, and the import consumer's logic.

``POST /cases/{id}/documents`` streams the multipart body's file part straight
into the blob store (hashing it on the way), then records the document and its
``document.uploaded`` event in one transaction. The ``documents__importer``
consumer checks each upload and extracts what it can: text for text files and
PDFs, a page count for PDFs. A file it cannot read is dead-lettered with the
reason, which ``GET /documents/{id}/metadata`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Annotated

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import _document_records as records
from seawall.app._document_records import Document, DocumentList
from seawall.app._idempotent import REPLAYED_HEADER, idempotency_key
from seawall.app._multipart import (
    MalformedUpload,
    MultipartUpload,
    UploadTooLarge,
    boundary_of,
)
from seawall.app._problems import Problem, ProblemDetails
from seawall.app._state import ServiceState
from seawall.config import Settings, StorageSettings, load_settings
from seawall.db import case_activity, documents
from seawall.errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch
from seawall.idempotency import StoredResponse, request_fingerprint
from seawall.messaging import Event, Unprocessable
from seawall.storage import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    InvalidSignedUrl,
    LocalBlobStore,
    S3BlobStore,
    verify_blob_signature,
)

log = structlog.get_logger("seawall.app")

_PROBLEM = {"model": ProblemDetails, "content": {"application/problem+json": {}}}
# The multipart envelope around the file: headers, boundaries, small fields.
MULTIPART_OVERHEAD_BYTES = 1 << 20
UPLOAD_PATH_SUFFIX = "/documents"
TEXT_LIMIT_CHARS = 200_000
"""Extracted text kept per document; the rest is cut (the bytes stay in the store)."""

router = APIRouter(tags=["documents"])

CaseId = Annotated[str, Path(max_length=64, pattern="^[^\\x00]*$", description="The case id.")]
DocumentId = Annotated[
    str, Path(max_length=64, pattern="^[^\\x00]*$", description="The document id.")
]


# --- the blob store of the service ----------------------------------------------------------


def build_blob_store(storage: StorageSettings) -> BlobStore:
    """The store *storage* describes (not opened yet)."""
    if storage.backend == "s3":
        if not storage.bucket:
            raise ValueError("SEAWALL_STORAGE__BUCKET is required with SEAWALL_STORAGE__BACKEND=s3")
        return S3BlobStore(
            storage.bucket,
            endpoint_url=storage.endpoint_url,
            region=storage.region,
            access_key_id=storage.access_key_id,
            secret_access_key=storage.secret_access_key,
        )
    return LocalBlobStore(storage.path, signing_secret=signing_secret(storage))


_PROCESS_SECRET = SecretStr(secrets.token_urlsafe(32))


def signing_secret(storage: StorageSettings) -> SecretStr:
    """The local store's signing key; without a configured one, a random one per process."""
    return storage.signing_secret or _PROCESS_SECRET


async def open_blob_store(settings: Settings) -> BlobStore:
    """Open the service's blob store and hand it to the import consumer."""
    if settings.storage.backend == "local" and settings.storage.signing_secret is None:
        log.warning(
            "storage_signing_secret_missing",
            detail="signed blob URLs last only as long as this process; "
            "set SEAWALL_STORAGE__SIGNING_SECRET",
        )
    store = build_blob_store(settings.storage)
    await store.open()
    importer.bind(store)
    return store


async def close_blob_store(store: BlobStore) -> None:
    """Close the service's blob store (and take it back from the import consumer)."""
    importer.bind(None)
    await store.aclose()


def upload_body_limit(settings: Settings) -> Callable[[str, str], int | None]:
    """The request body limit of uploads, for the request middleware: the document's plus room.

    Returns:
        ``limit(method, path)``: the limit for ``POST /cases/{id}/documents``, else None.
    """
    limit = settings.storage.max_upload_bytes + MULTIPART_OVERHEAD_BYTES

    def for_request(method: str, path: str) -> int | None:
        is_upload = method == "POST" and path.startswith("/cases/")
        return limit if is_upload and path.endswith(UPLOAD_PATH_SUFFIX) else None

    return for_request


def _blobs(state: ServiceState) -> BlobStore:
    assert state.blobs is not None, "the blob store opens with the service"
    return state.blobs


def _allowed(media: str, allowed: list[str]) -> bool:
    return any(
        media == pattern or (pattern.endswith("/*") and media.startswith(pattern[:-1]))
        for pattern in allowed
    )


# --- the API ------------------------------------------------------------------------------


def _document_response(document: Document, status: int) -> JSONResponse:
    headers = {"Location": f"/documents/{document.id}"}
    return JSONResponse(jsonable_encoder(document), status_code=status, headers=headers)


@router.post(
    "/cases/{case_id}/documents",
    status_code=201,
    response_model=Document,
    responses={
        200: {"model": Document, "description": "These bytes were attached before."},
        400: _PROBLEM,
        404: _PROBLEM,
        409: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
    },
    summary="Attach a document to a case",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_document(
    request: Request,
    case_id: CaseId,
    idempotency_key_header: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required (or X-Idempotency-Key): a retry with the same key and file "
            "returns the first response.",
        ),
    ] = None,
) -> Response:
    """Stream the form's ``file`` part into the blob store and record the document.

    The file goes to the store as it arrives (memory does not grow with its size);
    a body over ``SEAWALL_STORAGE__MAX_UPLOAD_BYTES`` is answered 413 and leaves
    nothing behind. The same bytes attached to the same case again answer 200
    with the existing document.
    """
    state = ServiceState.of(request)
    storage = state.settings.storage
    boundary = boundary_of(request.headers.get("content-type", ""))
    if boundary is None:
        raise Problem(
            415,
            "unsupported-media-type",
            "send the document as multipart/form-data with a 'file' part",
        )
    key = idempotency_key(request, required=True)
    assert key is not None
    async with state.database.reading() as session:
        if not await records.case_exists(session, case_id):
            raise Problem(404, "case-not-found", f"there is no case with id {case_id!r}")

    upload = MultipartUpload(
        request.stream().__aiter__(), boundary, max_file_bytes=storage.max_upload_bytes
    )
    try:
        part = await upload.file_part()
    except MalformedUpload as exc:
        raise Problem(400, "malformed-upload", str(exc)) from None
    if not _allowed(part.content_type, storage.allowed_types):
        raise Problem(
            415,
            "unsupported-document-type",
            f"documents of type {part.content_type!r} are not accepted; allowed: "
            + ", ".join(storage.allowed_types),
        )
    blobs = _blobs(state)
    document_id = records.new_document_id()
    blob_key = records.blob_key_for(document_id)
    try:
        blob = await blobs.put(
            blob_key,
            upload.file_chunks(),
            content_type=part.content_type,
            metadata={"case-id": case_id},
        )
    except UploadTooLarge as exc:
        raise Problem(413, "payload-too-large", str(exc)) from None
    except MalformedUpload as exc:
        raise Problem(400, "malformed-upload", str(exc)) from None
    try:
        try:
            await upload.finish()
        except MalformedUpload as exc:
            raise Problem(400, "malformed-upload", str(exc)) from None
        return await _record_upload(request, state, key, case_id, document_id, part.filename, blob)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(blobs.delete(blob_key))
        raise


async def _record_upload(
    request: Request,
    state: ServiceState,
    key: str,
    case_id: str,
    document_id: str,
    filename: str,
    blob: BlobInfo,
) -> Response:
    """Claim the idempotency key, then write the document and its event in one transaction.

    The key is claimed after the bytes are in: only then is the request's content
    (name, type, SHA-256 of the file) known. The multipart framing is left out of the
    fingerprint, since a client's retry picks a new boundary.
    """
    scope = f"{request.method} {request.url.path}"
    fingerprint = request_fingerprint(
        request.method, request.url.path, f"{filename}\n{blob.content_type}\n{blob.sha256}".encode()
    )
    try:
        claimed = await state.idempotency.claim(scope, key, fingerprint)
    except IdempotencyKeyMismatch as exc:
        raise Problem(422, "idempotency-key-reused", str(exc)) from None
    except IdempotencyKeyInFlight as exc:
        raise Problem(
            409, "idempotency-key-in-flight", str(exc), headers={"Retry-After": "1"}
        ) from None
    if isinstance(claimed, StoredResponse):
        await _blobs(state).delete(blob.key)
        return Response(
            content=claimed.body,
            status_code=claimed.status,
            media_type="application/json",
            headers={**claimed.headers, REPLAYED_HEADER: "true"},
        )
    try:
        async with state.database.transaction() as session:
            assert blob.sha256 is not None
            existing = await records.duplicate_of(session, case_id, blob.sha256)
            if existing is None:
                document = await records.insert_document(
                    session,
                    document_id=document_id,
                    case_id=case_id,
                    filename=filename,
                    blob=blob,
                    source="api",
                )
                response = _document_response(document, 201)
            else:
                response = _document_response(existing, 200)
            kept = {k: v for k, v in response.headers.items() if k.lower() == "location"}
            stored = StoredResponse(response.status_code, bytes(response.body).decode(), kept)
            await state.idempotency.complete(session, claimed, stored)
    except IntegrityError:
        await state.idempotency.release(claimed)
        raise Problem(
            409,
            "document-conflict",
            "the same file is being attached to this case by another request; retry",
            headers={"Retry-After": "1"},
        ) from None
    except BaseException:
        await asyncio.shield(state.idempotency.release(claimed))
        raise
    if existing is not None:
        await _blobs(state).delete(blob.key)
    return response


@router.get(
    "/cases/{case_id}/documents",
    response_model=DocumentList,
    responses={404: _PROBLEM, 422: _PROBLEM},
    summary="List a case's documents, newest first",
)
async def list_case_documents(
    request: Request,
    case_id: CaseId,
    limit: Annotated[int, Query(ge=1, le=500, description="Documents to return.")] = 100,
) -> DocumentList:
    """Return the case's documents with their import status (without their text)."""
    state = ServiceState.of(request)
    async with state.database.reading() as session:
        if not await records.case_exists(session, case_id):
            raise Problem(404, "case-not-found", f"there is no case with id {case_id!r}")
        found = await records.list_documents(session, case_id, limit=limit)
    return DocumentList(data=found)


def _document_not_found(document_id: str) -> Problem:
    return Problem(404, "document-not-found", f"there is no document with id {document_id!r}")


@router.get(
    "/documents/{document_id}",
    status_code=307,
    response_class=RedirectResponse,
    responses={307: {"description": "To a signed URL of the bytes."}, 404: _PROBLEM},
    summary="Download a document (redirect to a signed URL)",
)
async def download_document(request: Request, document_id: DocumentId) -> Response:
    """Redirect to a signed URL of the document's bytes, valid for a few minutes."""
    state = ServiceState.of(request)
    async with state.database.reading() as session:
        blob_key = await records.blob_key_of(session, document_id)
    if blob_key is None:
        raise _document_not_found(document_id)
    url = await _blobs(state).signed_url(
        blob_key, expires=state.settings.storage.url_expiry_seconds
    )
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


@router.get(
    "/documents/{document_id}/metadata",
    response_model=Document,
    responses={404: _PROBLEM},
    summary="Read a document's record: status, checksum, extracted text",
)
async def read_document(request: Request, document_id: DocumentId) -> Document:
    """Return the document, with its extracted text once imported, or why the import failed."""
    state = ServiceState.of(request)
    async with state.database.reading() as session:
        document = await records.get_document(session, document_id)
    if document is None:
        raise _document_not_found(document_id)
    return document


@router.get(
    "/blobs/{blob_key:path}",
    responses={200: {"description": "The blob's bytes."}, 403: _PROBLEM, 404: _PROBLEM},
    summary="Fetch a blob by signed URL (local store)",
)
async def signed_blob(
    request: Request,
    blob_key: str,
    expires: Annotated[str, Query(max_length=20)] = "",
    signature: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    """Serve a local-store blob to whoever holds a valid, unexpired signed URL."""
    state = ServiceState.of(request)
    storage = state.settings.storage
    if storage.backend != "local":
        raise Problem(404, "not-found", "this service's blobs are served by its S3 store")
    try:
        verify_blob_signature(
            blob_key, expires, signature, signing_secret(storage), now=time.time()
        )
    except InvalidSignedUrl as exc:
        slug = "signed-url-expired" if exc.reason == "expired" else "invalid-signature"
        raise Problem(403, slug, str(exc)) from None
    try:
        reader = await _blobs(state).get(blob_key)
    except BlobNotFound:
        raise Problem(404, "blob-not-found", "the signed URL's blob no longer exists") from None
    headers = {
        "Content-Length": str(reader.info.size),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "attachment",
    }
    return StreamingResponse(
        reader.__aiter__(), media_type=reader.info.content_type, headers=headers
    )


# --- the import consumer's logic ---------------------------------------------------------------


class DocumentImporter:
    """Checks an uploaded document and extracts its text and page count.

    The service binds its open blob store at start-up; a standalone ``seawall
    worker`` opens one from the settings on first use.
    """

    def __init__(self) -> None:
        self._store: BlobStore | None = None
        self._opening = asyncio.Lock()

    def bind(self, store: BlobStore | None) -> None:
        """Use *store* (None: forget it, e.g. when the service stops)."""
        self._store = store

    async def store(self) -> BlobStore:
        """The bound store, or one opened from the settings."""
        async with self._opening:
            if self._store is None:
                self._store = await open_blob_store(load_settings())
            return self._store

    async def handle(self, event: Event, session: AsyncSession) -> None:
        """Import the document *event* names, in the consumer's transaction.

        Raises:
            Unprocessable: the document or its bytes are gone, or the file is not
                what its type says; the message is dead-lettered with the reason.
        """
        if not event.subject:
            raise Unprocessable("a document event must name its document in 'subject'")
        row = (
            (await session.execute(sa.select(documents).where(documents.c.id == event.subject)))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise Unprocessable(f"document {event.subject!r} does not exist")
        if row["status"] == "imported":
            return
        store = await self.store()
        try:
            reader = await store.get(row["blob_key"])
        except BlobNotFound:
            raise Unprocessable(f"the bytes of document {row['id']!r} are missing") from None
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            async with reader:
                async for chunk in reader:
                    await asyncio.to_thread(spool.write, chunk)
            await asyncio.to_thread(spool.seek, 0)
            text, pages = await asyncio.to_thread(extract, row["content_type"], spool)
        now = datetime.now(UTC)
        await session.execute(
            documents.update()
            .where(documents.c.id == row["id"])
            .values(status="imported", text=text, page_count=pages, imported_at=now)
        )
        summary = f"document imported: {row['filename']}"
        if pages is not None:
            summary += f" ({pages} page{'s' if pages != 1 else ''})"
        await session.execute(
            case_activity.insert().values(
                case_id=row["case_id"],
                event_id=event.id,
                event_type=event.type,
                summary=summary[:500],
                correlation_id=event.correlationid,
                occurred_at=event.time,
                recorded_at=now,
            )
        )
        document = Document.model_validate(
            {**row, "status": "imported", "page_count": pages, "imported_at": now, "text": None}
        )
        await records.outbox.add(session, records.document_imported(document))
        log.info("document_imported", document_id=row["id"], pages=pages)


importer = DocumentImporter()
"""The service's importer, run by the ``documents__importer`` consumer."""


_MAGIC = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
}


def extract(content_type: str, file: IO[bytes]) -> tuple[str | None, int | None]:
    """Check a document's bytes against its type and extract text and page count.

    Pure but for reading *file*: text types must be UTF-8 (their text is the
    content), PDFs must parse (text of every page, and the page count), images
    must start with their signature; other types are taken as they are.

    Returns:
        ``(text, page_count)``, each None when the type has none.

    Raises:
        Unprocessable: the bytes are not what the type says.
    """
    head = file.read(16)
    file.seek(0)
    for magic in _MAGIC.get(content_type, ()):
        if not head.startswith(magic):
            raise Unprocessable(f"the file is not a valid {content_type} (wrong signature)")
    if content_type == "application/pdf":
        return _pdf(file)
    if content_type.startswith("text/") or content_type == "application/json":
        raw = file.read(TEXT_LIMIT_CHARS * 4)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character may be cut at the read limit; only then is it fine.
            if exc.start < len(raw) - 4:
                raise Unprocessable("the text file is not UTF-8") from None
            text = raw[: exc.start].decode("utf-8")
        return text.replace("\x00", "")[:TEXT_LIMIT_CHARS], None
    return None, None


def _pdf(file: IO[bytes]) -> tuple[str | None, int | None]:
    from pypdf import PdfReader  # noqa: PLC0415 - only the importer needs it
    from pypdf.errors import PyPdfError  # noqa: PLC0415

    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unprocessable("the PDF is encrypted with a password")
        pages = len(reader.pages)
        parts: list[str] = []
        length = 0
        for page in reader.pages:
            if length >= TEXT_LIMIT_CHARS:
                break
            piece = page.extract_text() or ""
            parts.append(piece)
            length += len(piece)
    except Unprocessable:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise Unprocessable(f"the PDF cannot be read: {type(exc).__name__}: {exc}"[:500]) from None
    text = "\n".join(parts).replace("\x00", "")[:TEXT_LIMIT_CHARS]
    return text, pages
