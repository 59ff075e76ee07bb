"""What only the local store does: files under its root, atomic writes, signatures."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from seawall.storage import (
    BlobNotFound,
    InvalidSignedUrl,
    LocalBlobStore,
    StorageError,
    blob_signature,
    verify_blob_signature,
)
from seawall.storage._local import WRITE_BACK_BYTES

SECRET = SecretStr("s3cr3t-for-signing")


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    async with LocalBlobStore(tmp_path / "root", signing_secret=SECRET, clock=lambda: 1000.0) as s:
        yield s


async def test_blobs_and_metadata_live_below_the_root(local: LocalBlobStore) -> None:
    await local.put("a/b.txt", b"data", content_type="text/plain")

    assert (local.root / "data" / "a" / "b.txt").read_bytes() == b"data"
    assert (local.root / "meta" / "a" / "b.txt.json").is_file()
    assert list((local.root / "tmp").iterdir()) == []


async def test_a_failed_put_leaves_no_temporary_file(local: LocalBlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 10
        raise OSError("cut")

    with pytest.raises(OSError, match="cut"):
        await local.put("k", broken())

    assert list((local.root / "tmp").iterdir()) == []


async def _streamed(total: int, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise OSError("cut")
        piece = bytes([sent % 251]) * min(256 << 10, total - sent)
        sent += len(piece)
        yield piece


async def test_a_large_put_starts_the_disks_write_back_as_it_grows(
    local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    size = 3 * WRITE_BACK_BYTES + 12345
    expected = hashlib.sha256()
    async for piece in _streamed(size):
        expected.update(piece)

    info = await local.put("big", _streamed(size))

    assert info.size == size
    assert info.sha256 == expected.hexdigest()
    assert (local.root / "data" / "big").stat().st_size == size
    assert len(synced) >= 2  # one at a time, while the rest was still arriving


async def test_a_put_that_fails_during_write_back_leaves_no_temporary_file(
    local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)

    with pytest.raises(OSError, match="Input/output error"):
        await local.put("big", _streamed(3 * WRITE_BACK_BYTES))

    assert list((local.root / "tmp").iterdir()) == []
    with pytest.raises(BlobNotFound):
        await local.head("big")


async def test_a_source_that_fails_after_write_back_started_leaves_no_temporary_file(
    local: LocalBlobStore,
) -> None:
    with pytest.raises(OSError, match="cut"):
        await local.put("big", _streamed(3 * WRITE_BACK_BYTES, fail_after=2 * WRITE_BACK_BYTES))

    assert list((local.root / "tmp").iterdir()) == []


async def test_a_key_cannot_also_be_a_folder(local: LocalBlobStore) -> None:
    await local.put("a", b"file")

    with pytest.raises(StorageError, match="folder"):
        await local.put("a/b", b"under a file")

    assert list((local.root / "tmp").iterdir()) == []


async def test_a_name_too_long_for_the_file_system_is_a_storage_error(
    local: LocalBlobStore,
) -> None:
    key = "x" * 300  # a valid key (S3 takes it); one path segment too long for most file systems

    with pytest.raises(StorageError, match="cannot hold"):
        await local.put(key, b"2")
    with pytest.raises(BlobNotFound):
        await local.head(key)
    await local.delete(key)

    assert list((local.root / "tmp").iterdir()) == []


async def test_a_blob_without_its_metadata_reads_as_octet_stream(local: LocalBlobStore) -> None:
    await local.put("k", b"bytes", content_type="text/plain")
    (local.root / "meta" / "k.json").unlink()

    info = await local.head("k")

    assert info.content_type == "application/octet-stream"
    assert info.size == 5


async def test_signed_url_carries_expiry_and_signature(local: LocalBlobStore) -> None:
    url = await local.signed_url("a b/c.pdf", expires=300)

    expected = blob_signature("a b/c.pdf", 1300, SECRET)
    assert url == f"/blobs/a%20b/c.pdf?expires=1300&signature={expected}"


def test_a_valid_signature_passes_until_it_expires() -> None:
    signature = blob_signature("k/1", 2000, SECRET)

    verify_blob_signature("k/1", "2000", signature, SECRET, now=1999.5)

    with pytest.raises(InvalidSignedUrl) as raised:
        verify_blob_signature("k/1", "2000", signature, SECRET, now=2000)
    assert raised.value.reason == "expired"


@pytest.mark.parametrize(
    ("key", "expires", "signature"),
    [
        ("k/2", "2000", None),  # another key
        ("k/1", "2001", None),  # another expiry
        ("k/1", "2000", "0" * 64),  # forged
        ("k/1", "2000", "short"),
        ("k/1", "soon", None),
        ("../k/1", "2000", None),
    ],
)
def test_an_altered_signed_url_is_invalid(key: str, expires: str, signature: str | None) -> None:
    good = blob_signature("k/1", 2000, SECRET)

    with pytest.raises(InvalidSignedUrl) as raised:
        verify_blob_signature(key, expires, signature or good, SECRET, now=0)

    assert raised.value.reason == "invalid"


def test_another_secret_gives_another_signature() -> None:
    assert blob_signature("k", 1, SECRET) != blob_signature("k", 1, SecretStr("other"))


def test_the_store_repr_shows_no_secret(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, signing_secret=SECRET)

    assert "s3cr3t" not in repr(store)


def test_importing_storage_does_not_load_the_s3_library() -> None:
    code = "import sys, seawall.storage; print(any('boto' in m for m in sys.modules))"

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"
