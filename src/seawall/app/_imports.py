"""Drop-folder import: files from a folder (or a watched prefix of the store) become documents.

Each file lands on the case its name points at, idempotently: a file's SHA-256 is
computed first, and bytes the case already has are skipped without an upload. A
case is named, in this order, by the manifest (``{"path/in/folder.pdf": "case
ref"}``), by ``--case``, by the file's first folder (``ACME-42/invoice.pdf``), or
by the part of its name before ``__`` (``ACME-42__invoice.pdf``). A reference is
a case id or an ``external_id``; a reference no case has opens a new case.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from seawall.app import _repository as repo
from seawall.app._document_records import (
    Document,
    duplicate_of,
    outbox,
    store_document,
)
from seawall.app._domain import CaseCreate, Priority
from seawall.app._events import case_created
from seawall.config import StorageSettings
from seawall.db import Database, cases
from seawall.storage import BlobStore

log = structlog.get_logger("seawall.app")

_READ_BYTES = 1 << 20
_EXTRA_TYPES = {".md": "text/markdown", ".csv": "text/csv", ".json": "application/json"}


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What became of one file.

    Attributes:
        name: the file's path relative to the folder (or its key in the store).
        document: the document it is (new or already there); None when it failed.
        created: whether the document is new.
        error: why it was skipped, when it was.
    """

    name: str
    document: Document | None = None
    created: bool = False
    error: str | None = None


def read_manifest(path: Path) -> dict[str, str]:
    """Read a manifest: a JSON object from file path (relative to the folder) to case reference.

    Raises:
        ValueError: it is not such an object.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise ValueError("a manifest is a JSON object of file path -> case id or external id")
    return {k.replace("\\", "/"): v for k, v in data.items()}


def case_ref_for(name: str, *, manifest: Mapping[str, str], default: str | None) -> str | None:
    """The case reference of file *name* (``/``-separated, relative); None if nothing names one."""
    if name in manifest:
        return manifest[name]
    if default:
        return default
    folder, _, filename = name.rpartition("/")
    if folder:
        return folder.split("/", 1)[0]
    ref, separator, _ = filename.partition("__")
    return ref if separator and ref else None


def document_name(name: str) -> str:
    """The document's file name: the base name, without a ``CASE__`` prefix."""
    base = name.rpartition("/")[2]
    _, separator, rest = base.partition("__")
    return (rest if separator and rest else base)[:255]


def media_type_of(name: str) -> str:
    """The media type of a file, by its extension."""
    suffix = Path(name).suffix.lower()
    guessed = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name)[0]
    return guessed or "application/octet-stream"


def allowed(media: str, patterns: list[str]) -> bool:
    """Whether *media* matches one of *patterns* (``text/*`` style wildcards allowed)."""
    return any(
        media == pattern or (pattern.endswith("/*") and media.startswith(pattern[:-1]))
        for pattern in patterns
    )


async def resolve_case(session: AsyncSession, ref: str) -> str:
    """The id of the case *ref* names (id or external id), opening a new case if none does."""
    ref = ref.strip()[:200]
    found = await session.execute(
        sa.select(cases.c.id)
        .where(sa.or_(cases.c.id == ref, cases.c.external_id == ref))
        .order_by(cases.c.created_at)
        .limit(1)
    )
    row = found.first()
    if row is not None:
        return str(row[0])
    case = await repo.insert_case(
        session,
        CaseCreate(
            title=f"Imported documents: {ref}"[:200], priority=Priority.MEDIUM, external_id=ref
        ),
    )
    await outbox.add(session, case_created(case))
    log.info("import_case_opened", case_id=case.id, external_id=ref)
    return case.id


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_READ_BYTES):
            yield chunk


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def files_in(folder: Path) -> list[tuple[str, Path]]:
    """The files under *folder* (hidden ones left out), as (relative name, path), sorted."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in relative.split("/")):
            found.append((relative, path))
    return found


async def import_file(
    database: Database,
    blobs: BlobStore,
    storage: StorageSettings,
    *,
    name: str,
    path: Path,
    case_ref: str | None,
) -> ImportOutcome:
    """Attach the file at *path* to the case *case_ref* names, unless that case already has it."""
    if case_ref is None:
        return ImportOutcome(name, error="no case: use --case, a manifest, or CASE__name / CASE/")
    media = media_type_of(name)
    if not allowed(media, storage.allowed_types):
        return ImportOutcome(name, error=f"type {media} is not accepted")
    size = (await asyncio.to_thread(path.stat)).st_size
    if size > storage.max_upload_bytes:
        return ImportOutcome(name, error=f"larger than {storage.max_upload_bytes} bytes")
    sha256 = await asyncio.to_thread(_sha256_of, path)
    async with database.transaction() as session:
        case_id = await resolve_case(session, case_ref)
        existing = await duplicate_of(session, case_id, sha256)
    if existing is not None:
        return ImportOutcome(name, document=existing)
    document, created = await store_document(
        database,
        blobs,
        case_id=case_id,
        filename=document_name(name),
        content_type=media,
        data=_file_chunks(path),
        source="import",
    )
    return ImportOutcome(name, document=document, created=created)


async def import_folder(
    database: Database,
    blobs: BlobStore,
    storage: StorageSettings,
    folder: Path,
    *,
    case_ref: str | None = None,
    manifest: Mapping[str, str] | None = None,
    on_file: Callable[[ImportOutcome, int], None] | None = None,
) -> list[ImportOutcome]:
    """Import every file under *folder*; see the module's docstring for how cases are named.

    Args:
        on_file: called after each file with its outcome and its size in bytes.
    """
    outcomes = []
    for name, path in files_in(folder):
        ref = case_ref_for(name, manifest=manifest or {}, default=case_ref)
        outcome = await import_file(database, blobs, storage, name=name, path=path, case_ref=ref)
        outcomes.append(outcome)
        if on_file is not None:
            on_file(outcome, (await asyncio.to_thread(path.stat)).st_size)
    return outcomes


async def import_prefix_once(
    database: Database, blobs: BlobStore, storage: StorageSettings
) -> list[ImportOutcome]:
    """Turn each blob under the watched prefix into a document, then remove it from there.

    Keys name their case like files do (``imports/ACME-42/a.pdf``,
    ``imports/ACME-42__a.pdf``). A blob is removed only once its document is
    recorded, so a crash in between imports it again, as the same document.
    """
    prefix = storage.import_prefix
    outcomes = []
    async for info in blobs.list(prefix):
        name = info.key[len(prefix) :]
        ref = case_ref_for(name, manifest={}, default=None)
        media = media_type_of(name)
        if ref is None or not allowed(media, storage.allowed_types):
            outcomes.append(ImportOutcome(info.key, error="no case named, or type not accepted"))
            continue
        async with database.transaction() as session:
            case_id = await resolve_case(session, ref)
        reader = await blobs.get(info.key)
        async with reader:
            document, created = await store_document(
                database,
                blobs,
                case_id=case_id,
                filename=document_name(name),
                content_type=media,
                data=reader,
                source="import",
            )
        await blobs.delete(info.key)
        outcomes.append(ImportOutcome(info.key, document=document, created=created))
    return outcomes
