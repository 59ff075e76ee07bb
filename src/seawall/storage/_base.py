"""The `BlobStore` protocol, what it returns, its errors and its key rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from seawall.errors import SeawallError

MAX_KEY_BYTES = 1024
"""The longest key, in UTF-8 bytes (S3's own limit)."""
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_BYTES = 1 << 20
"""How much a store reads or writes at a time: 1 MiB."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_META_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

Data = bytes | AsyncIterable[bytes]
"""What `BlobStore.put` accepts: the whole blob, or its chunks as they arrive."""


class StorageError(SeawallError):
    """The blob store could not do what was asked.

    Attributes:
        key: the blob's key, when the failure concerns one blob.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class BlobNotFound(StorageError):  # noqa: N818 - leaves name the condition
    """There is no blob under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"there is no blob under {key!r}", key=key)


class InvalidSignedUrl(StorageError):  # noqa: N818 - leaves name the condition
    """A signed URL is forged, altered or expired.

    Attributes:
        reason: ``"expired"`` or ``"invalid"``.
    """

    def __init__(self, reason: str, *, key: str | None = None) -> None:
        self.reason = reason
        detail = "has expired; ask for a new one" if reason == "expired" else "is not valid"
        super().__init__(f"the signed URL {detail}", key=key)


def validate_key(key: str) -> str:
    """Check that *key* is a safe blob key and return it.

    A key is ``/``-separated segments, none of them empty, ``.`` or ``..``, with no
    backslash and no control character, at most `MAX_KEY_BYTES` long: it can name a
    file below the local store's root and nothing outside it.

    Raises:
        ValueError: the key is not safe.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("a blob key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"a blob key must be at most {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key) or "\\" in key:
        raise ValueError("a blob key must not hold control characters or backslashes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a blob key must be valid Unicode") from None
    if any(part in {"", ".", ".."} for part in key.split("/")):
        raise ValueError("a blob key's segments must not be empty, '.' or '..'")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a listing prefix: empty, or a key prefix that `validate_key` would accept."""
    if prefix:
        validate_key(prefix.rstrip("/") or "x")
        if prefix.startswith("/"):
            raise ValueError("a prefix must not start with '/'")
    return prefix


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check user metadata: lower-case names of letters, digits and ``-``; printable ASCII values.

    Both stores keep the same metadata: S3 sends it as ``x-amz-meta-*`` headers,
    which allow only this.

    Raises:
        ValueError: a name or value is not allowed, or the whole is over 2 KiB.
    """
    clean: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not _META_NAME.fullmatch(name):
            raise ValueError(f"metadata name {name!r} must be lower-case letters, digits and '-'")
        if not value.isascii() or _CONTROL.search(value):
            raise ValueError(f"metadata value of {name!r} must be printable ASCII")
        clean[name] = value
    if sum(len(k) + len(v) for k, v in clean.items()) > 2048:
        raise ValueError("metadata must be at most 2 KiB in all")
    return clean


def seconds_of(expires: float | timedelta) -> int:
    """Whole seconds of a signed URL's lifetime, 1 second to 7 days (S3's bounds).

    Raises:
        ValueError: outside those bounds.
    """
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
    if not 1 <= seconds <= 7 * 86400:
        raise ValueError("a signed URL must live between 1 second and 7 days")
    return int(seconds)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a store knows about one blob.

    Attributes:
        key: the blob's key.
        size: its length in bytes.
        content_type: its media type.
        metadata: the user metadata it was stored with.
        modified_at: when it was last written (UTC).
        sha256: the hex SHA-256 of its bytes, when the store knows it (`BlobStore.put`
            always returns it; S3 cannot keep it for a multipart upload).
        etag: the store's version tag, when it has one.
    """

    key: str
    size: int
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Mapping[str, str] = field(default_factory=dict)
    modified_at: datetime | None = None
    sha256: str | None = None
    etag: str | None = None


class BlobReader(Protocol):
    """An open blob: its `BlobInfo` and its bytes, read in chunks.

    Use it as ``async with await store.get(key) as blob: async for chunk in blob``;
    leaving the block releases the file or the connection.
    """

    info: BlobInfo

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ChunkedReader:
    """A `BlobReader` over a source read in `CHUNK_BYTES` chunks; subclasses say how.

    Subclasses implement `_read` (an empty result ends the blob) and `aclose`.
    """

    info: BlobInfo

    async def _read(self, size: int) -> bytes:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the file or the connection."""
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._read(CHUNK_BYTES):
                yield chunk
        finally:
            await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def read_all(reader: BlobReader) -> bytes:
    """Read a (small) blob whole and close it."""
    async with reader:
        return b"".join([chunk async for chunk in reader])


@runtime_checkable
class BlobStore(Protocol):
    """Where documents' bytes live: the local file system or an S3-compatible service.

    Every method validates its key with `validate_key` (a `ValueError` otherwise).
    A store is opened with ``async with store:`` (or `open` / `aclose`).
    """

    async def open(self) -> None:
        """Connect (S3) or create the root directory (local)."""

    async def aclose(self) -> None:
        """Release the store's connections."""

    async def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store *data* under *key*, replacing any blob there, streaming chunk by chunk.

        The blob appears whole or not at all: if *data*'s iterator raises, nothing is
        left under the key (and the iterator's exception propagates).

        Returns:
            The new blob's info, with its size and SHA-256.
        """

    async def get(self, key: str) -> BlobReader:
        """Open the blob under *key* for streaming.

        Raises:
            BlobNotFound: there is none.
        """

    async def head(self, key: str) -> BlobInfo:
        """Return the info of the blob under *key*.

        Raises:
            BlobNotFound: there is none.
        """

    async def delete(self, key: str) -> None:
        """Remove the blob under *key*; a missing blob is no error."""

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield the info of every blob whose key starts with *prefix*, in key order."""

    async def signed_url(self, key: str, *, expires: float | timedelta) -> str:
        """Return a URL that fetches the blob without credentials until *expires* passes.

        Args:
            key: the blob's key (it need not exist yet).
            expires: the URL's lifetime in seconds (1 s to 7 days).
        """

    async def __aenter__(self) -> Self:
        """Open the store."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""


async def chunks_of(data: Data) -> AsyncIterator[bytes]:
    """Iterate *data* as chunks, whether it is bytes or an async iterable of them."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start : start + CHUNK_BYTES])
        return
    async for chunk in data:
        if chunk:
            yield bytes(chunk)
