"""`LocalBlobStore`: blobs as files under one directory, the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote, urlencode

from pydantic import SecretStr

from seawall.storage._base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobNotFound,
    ChunkedReader,
    Data,
    StorageError,
    chunks_of,
    seconds_of,
    validate_key,
    validate_metadata,
    validate_prefix,
)
from seawall.storage._signing import blob_signature

_META_SUFFIX = ".json"


class LocalBlobReader(ChunkedReader):
    """A blob file opened for reading, in `CHUNK_BYTES` chunks."""

    def __init__(self, info: BlobInfo, file: IO[bytes]) -> None:
        self.info = info
        self._file = file

    async def _read(self, size: int) -> bytes:
        return await asyncio.to_thread(self._file.read, size)

    async def aclose(self) -> None:
        """Close the file."""
        self._file.close()


class LocalBlobStore:
    """Blobs as files under *root*: ``data/<key>``, with metadata in ``meta/<key>.json``.

    The directories are made by the first `put`. A `put` writes to ``tmp/`` and
    renames into place, so a reader sees the old blob or the new one, never half of
    one, and a crash leaves no partial blob.
    Keys are checked by `validate_key`, so none can point outside *root*. A key
    cannot also be the folder of other keys (``a`` and ``a/b``), unlike on S3.

    Signed URLs point at *url_base* (the service's ``GET /blobs/{key}``) and carry an
    HMAC-SHA256 of the key and the expiry under *signing_secret*.

    Args:
        root: the directory; created by `open`.
        signing_secret: the key of signed URLs.
        url_base: where the service serves signed blobs, e.g. ``https://host/blobs``.
        clock: Unix time, for signed URLs' expiry.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        signing_secret: SecretStr,
        url_base: str = "/blobs",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self._data = self.root / "data"
        self._meta = self.root / "meta"
        self._tmp = self.root / "tmp"
        self._secret = signing_secret
        self.url_base = url_base.rstrip("/")
        self._clock = clock

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    async def open(self) -> None:
        """Nothing to connect to: the directories are made by the first `put`."""

    async def aclose(self) -> None:
        """Nothing to release: files are opened per call."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _paths(self, key: str) -> tuple[Path, Path]:
        validate_key(key)
        return self._data / key, self._meta / (key + _META_SUFFIX)

    async def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write *data* under *key* atomically (temporary file, then rename)."""
        blob_path, meta_path = self._paths(key)
        user_metadata = validate_metadata(metadata)
        await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
        temp = self._tmp / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        file = await asyncio.to_thread(temp.open, "wb")
        # One batch is hashed and written in a thread while the next one arrives:
        # receiving and writing overlap, and at most two batches are held. The disk's
        # write-back of what is written is started in the background as the file grows.
        writing: asyncio.Future[None] | None = None
        flusher = _WriteBack(file.fileno())
        try:
            pending: list[bytes] = []
            buffered = 0
            async for chunk in chunks_of(data):
                pending.append(chunk)
                buffered += len(chunk)
                size += len(chunk)
                if buffered >= CHUNK_BYTES:
                    if writing is not None:
                        await writing
                        flusher.written(size - buffered)
                    writing = asyncio.ensure_future(
                        asyncio.to_thread(_write, file, digest, pending)
                    )
                    pending, buffered = [], 0
            if writing is not None:
                await writing
                writing = None
            await asyncio.to_thread(_write, file, digest, pending)
            await flusher.wait()
            await asyncio.to_thread(_finish, file)
            info = BlobInfo(
                key=key,
                size=size,
                content_type=content_type,
                metadata=user_metadata,
                modified_at=datetime.now(UTC),
                sha256=digest.hexdigest(),
                etag=digest.hexdigest(),
            )
            meta_temp = self._tmp / (uuid.uuid4().hex + _META_SUFFIX)
            await asyncio.to_thread(meta_temp.write_text, json.dumps(_meta_document(info)))
            await asyncio.to_thread(_install, temp, blob_path, meta_temp, meta_path)
        except BaseException:
            # The threads still use the file: let them finish before closing it.
            for task in (writing, flusher.task):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(task)
            file.close()
            with contextlib.suppress(OSError):
                await asyncio.shield(asyncio.to_thread(temp.unlink, missing_ok=True))
            raise
        return info

    async def head(self, key: str) -> BlobInfo:
        """Return the info of the blob under *key*."""
        blob_path, meta_path = self._paths(key)
        return await asyncio.to_thread(_read_info, key, blob_path, meta_path)

    async def get(self, key: str) -> LocalBlobReader:
        """Open the blob under *key*."""
        blob_path, meta_path = self._paths(key)
        info = await asyncio.to_thread(_read_info, key, blob_path, meta_path)
        try:
            file = await asyncio.to_thread(blob_path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        return LocalBlobReader(info, file)

    async def delete(self, key: str) -> None:
        """Remove the blob under *key* and its metadata."""
        blob_path, meta_path = self._paths(key)
        for path in (blob_path, meta_path):
            try:
                await asyncio.to_thread(path.unlink)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                pass
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:  # no blob can have that name here
                    raise StorageError(f"cannot delete the blob ({exc.strerror})", key=key) from exc

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield the blobs whose key starts with *prefix*, in key order."""
        validate_prefix(prefix)
        keys = await asyncio.to_thread(_keys_under, self._data, prefix)
        for key in keys:
            with contextlib.suppress(BlobNotFound):
                yield await self.head(key)

    async def signed_url(self, key: str, *, expires: float | timedelta) -> str:
        """Return ``<url_base>/<key>?expires=…&signature=…``, served by the service."""
        validate_key(key)
        expires_at = int(self._clock()) + seconds_of(expires)
        query = urlencode(
            {"expires": expires_at, "signature": blob_signature(key, expires_at, self._secret)}
        )
        return f"{self.url_base}/{quote(key, safe='/')}?{query}"


WRITE_BACK_BYTES = 8 << 20
"""A `LocalBlobStore.put` starts the disk's write-back each time this much more is written."""


class _WriteBack:
    """Starts ``fdatasync`` of a growing file in a thread, every `WRITE_BACK_BYTES`.

    The closing ``fsync`` then waits only for the last few MiB, not for the whole
    file: the disk writes while the rest of the file is still arriving. At most one
    is in flight; the next starts when it is done and enough more was written.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._synced = 0
        self.task: asyncio.Future[None] | None = None

    def written(self, total: int) -> None:
        """*total* bytes are in the file (flushed to the OS): start a write-back if due."""
        if self.task is not None:
            if not self.task.done():
                return
            self.task.result()  # a failed write-back fails the put
        if total - self._synced >= WRITE_BACK_BYTES:
            self._synced = total
            self.task = asyncio.ensure_future(asyncio.to_thread(os.fdatasync, self._fd))

    async def wait(self) -> None:
        """Wait for the write-back in flight, if any (raising its error)."""
        if self.task is not None:
            await self.task


def _write(file: IO[bytes], digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
        file.write(chunk)
    file.flush()


def _finish(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _install(temp: Path, blob_path: Path, meta_temp: Path, meta_path: Path) -> None:
    try:
        blob_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        # Metadata first: a crash in between leaves new metadata beside the old bytes,
        # which `_read_info` notices (size) and reads as a blob of unknown type.
        os.replace(meta_temp, meta_path)
        os.replace(temp, blob_path)
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        meta_temp.unlink(missing_ok=True)
        raise StorageError(
            "a local blob key cannot also be the folder of other keys", key=str(blob_path.name)
        ) from exc
    except OSError as exc:
        # A segment too long for the file system, a full disk, a permission: no debris.
        meta_temp.unlink(missing_ok=True)
        raise StorageError(
            f"the local store cannot hold this blob ({exc.strerror or type(exc).__name__})",
            key=str(blob_path.name),
        ) from exc


def _meta_document(info: BlobInfo) -> dict[str, Any]:
    return {
        "content_type": info.content_type,
        "metadata": dict(info.metadata),
        "size": info.size,
        "sha256": info.sha256,
    }


def _read_info(key: str, blob_path: Path, meta_path: Path) -> BlobInfo:
    try:
        stat = blob_path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise BlobNotFound(key) from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BlobNotFound(key) from None  # no blob can have that name here
        raise StorageError(f"cannot read the blob ({exc.strerror})", key=key) from exc
    if not blob_path.is_file():
        raise BlobNotFound(key)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    if meta.get("size") != stat.st_size:
        meta = {}
    return BlobInfo(
        key=key,
        size=stat.st_size,
        content_type=str(meta.get("content_type") or DEFAULT_CONTENT_TYPE),
        metadata=dict(meta.get("metadata") or {}),
        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        sha256=meta.get("sha256"),
        etag=meta.get("sha256"),
    )


def _keys_under(data: Path, prefix: str) -> list[str]:
    # Walk only the deepest folder the prefix names, then filter by the rest.
    folder, _, _ = prefix.rpartition("/")
    start = data / folder if folder else data
    found: list[str] = []
    for directory, _, files in os.walk(start):
        base = Path(directory).relative_to(data).as_posix()
        for name in files:
            key = name if base == "." else f"{base}/{name}"
            if key.startswith(prefix):
                found.append(key)
    return sorted(found)
