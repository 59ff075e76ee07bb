"""A streaming ``multipart/form-data`` reader: the file part's bytes pass through, never whole.

FastAPI's ``UploadFile`` parses the whole body before the route runs (spooling
files past 1 MB to disk). Here python-multipart's push parser is fed the request
stream as it arrives, and the file part's data is handed on chunk by chunk, so
an upload goes to the blob store with memory that does not grow with its size.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
"""The form field that carries the document."""
MAX_FIELD_BYTES = 64 * 1024
"""Other form fields are skipped, up to this many bytes in all."""
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


class MalformedUpload(ValueError):  # noqa: N818 - leaves name the condition
    """The body is not the ``multipart/form-data`` upload this endpoint takes."""


class UploadTooLarge(ValueError):  # noqa: N818 - leaves name the condition
    """The file part passed its size limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the document is larger than the {limit}-byte limit")


@dataclass(frozen=True, slots=True)
class FilePart:
    """The file part's headers: its (sanitized) file name and media type."""

    filename: str
    content_type: str


def boundary_of(content_type: str) -> bytes | None:
    """Return the boundary of a ``multipart/form-data`` content type, else None."""
    media, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media.lower() != b"multipart/form-data" or not boundary or len(boundary) > 200:
        return None
    return boundary


def safe_filename(raw: str) -> str:
    """A file name fit to show and store: no path, no control characters, at most 255 long."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    return name[:255] or "document"


class MultipartUpload:
    """Read one file part out of a streamed multipart body.

    Call `file_part` (reads up to the file part's headers), then iterate
    `file_chunks` (its data, checked against *max_file_bytes*), then `finish`
    (reads the rest and checks that the body ended properly).

    Args:
        source: the raw body, as it arrives.
        boundary: from `boundary_of`.
        max_file_bytes: the file part's limit; past it `file_chunks` raises `UploadTooLarge`.
    """

    def __init__(
        self, source: AsyncIterator[bytes], boundary: bytes, *, max_file_bytes: int
    ) -> None:
        self._source = source
        self._max = max_file_bytes
        self._events: list[tuple[str, Any]] = []
        self._headers: dict[str, str] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._field_bytes = 0
        self._in_file = False
        self._seen_file = False
        self._ended = False
        self._exhausted = False
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        self._parser = MultipartParser(boundary, callbacks, max_header_count=16)
        self.size = 0

    # --- parser callbacks: record events; the async side consumes them -------------

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        # latin-1 keeps every byte as one character, which is what parse_options_header
        # expects; names and file names are then read from those bytes as UTF-8.
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            if self._seen_file:
                raise MalformedUpload("send exactly one 'file' part")
            self._seen_file = self._in_file = True
            filename = options.get(b"filename", b"").decode("utf-8", "replace")
            media = self._headers.get("content-type", "application/octet-stream")
            self._events.append(("file", FilePart(safe_filename(filename), _media(media))))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._events.append(("data", data[start:end]))
            return
        self._field_bytes += end - start
        if self._field_bytes > MAX_FIELD_BYTES:
            raise MalformedUpload(f"form fields other than 'file' are limited to {MAX_FIELD_BYTES}")

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._events.append(("end", None))

    def _on_end(self) -> None:
        self._ended = True

    # --- the async side --------------------------------------------------------------

    async def _pump(self) -> bool:
        """Feed the parser one more chunk; False when the body is over."""
        if self._exhausted:
            return False
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            self._exhausted = True
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedUpload(f"the multipart body is malformed: {exc}") from None
        return True

    async def file_part(self) -> FilePart:
        """Read up to the file part's headers.

        Raises:
            MalformedUpload: the body ended, or is malformed, before a 'file' part.
        """
        while True:
            for index, (kind, value) in enumerate(self._events):
                if kind == "file":
                    del self._events[: index + 1]
                    assert isinstance(value, FilePart)
                    return value
            if not await self._pump():
                raise MalformedUpload("the form has no 'file' part")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """Yield the file part's data as it arrives.

        Raises:
            UploadTooLarge: past *max_file_bytes*.
            MalformedUpload: the body ended inside the file part.
        """
        while True:
            events, self._events = self._events, []
            for kind, value in events:
                if kind == "end":
                    return
                self.size += len(value)
                if self.size > self._max:
                    raise UploadTooLarge(self._max)
                yield value
            if not await self._pump():
                raise MalformedUpload("the body ended inside the file part")

    async def finish(self) -> None:
        """Read the rest of the body.

        Raises:
            MalformedUpload: it does not end with the closing boundary.
        """
        while await self._pump():
            pass
        if not self._ended:
            raise MalformedUpload("the multipart body is truncated (no closing boundary)")


def _media(value: str) -> str:
    media, _ = parse_options_header(value)
    return media.decode("latin-1").lower() or "application/octet-stream"
