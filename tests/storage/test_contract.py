"""The `BlobStore` contract, run on the local store and on S3 (moto on loopback)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from seawall.storage import (
    BlobNotFound,
    BlobStore,
    LocalBlobStore,
    read_all,
    verify_blob_signature,
)
from tests.storage.conftest import SECRET


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def keys(store: BlobStore, prefix: str = "") -> list[str]:
    return [info.key async for info in store.list(prefix)]


async def test_put_then_get_returns_the_same_bytes(store: BlobStore) -> None:
    data = os.urandom(100_000)

    info = await store.put("cases/1/report.bin", data)

    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(await store.get("cases/1/report.bin")) == data


async def test_put_streams_chunks_across_multipart_parts(store: BlobStore) -> None:
    parts = [os.urandom(3 << 20) for _ in range(6)]  # 18 MiB: three S3 parts

    info = await store.put("big/blob", chunks(*parts), content_type="application/pdf")

    whole = b"".join(parts)
    assert info.size == len(whole)
    assert info.sha256 == hashlib.sha256(whole).hexdigest()
    reader = await store.get("big/blob")
    assert reader.info.size == len(whole)
    assert reader.info.content_type == "application/pdf"
    assert hashlib.sha256(await read_all(reader)).hexdigest() == info.sha256


async def test_head_reports_content_type_and_metadata(store: BlobStore) -> None:
    await store.put("docs/a.txt", b"hello", content_type="text/plain", metadata={"case-id": "c1"})

    info = await store.head("docs/a.txt")

    assert info.size == 5
    assert info.content_type == "text/plain"
    assert dict(info.metadata) == {"case-id": "c1"}
    assert info.modified_at is not None


async def test_put_replaces_an_existing_blob(store: BlobStore) -> None:
    await store.put("k", b"first version")

    await store.put("k", b"second")

    assert await read_all(await store.get("k")) == b"second"
    assert (await store.head("k")).size == 6


async def test_missing_blobs_raise_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as raised:
        await store.head("nothing/here")
    with pytest.raises(BlobNotFound):
        await store.get("nothing/here")

    assert raised.value.key == "nothing/here"


async def test_delete_removes_the_blob_and_tolerates_a_missing_one(store: BlobStore) -> None:
    await store.put("gone", b"x")

    await store.delete("gone")
    await store.delete("gone")

    with pytest.raises(BlobNotFound):
        await store.head("gone")


async def test_list_yields_the_keys_under_a_prefix_in_order(store: BlobStore) -> None:
    for key in ("b/2", "a/1", "b/1", "b/10/x", "c"):
        await store.put(key, key.encode())

    under_b = await keys(store, "b/")
    everything = await keys(store)

    assert under_b == ["b/1", "b/10/x", "b/2"]
    assert everything == ["a/1", "b/1", "b/10/x", "b/2", "c"]
    assert [info.size async for info in store.list("a/")] == [3]


async def test_a_failing_stream_leaves_nothing_behind(store: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(9 << 20)  # past the first S3 part
        raise OSError("client went away")

    with pytest.raises(OSError, match="client went away"):
        await store.put("partial", broken())

    with pytest.raises(BlobNotFound):
        await store.head("partial")
    assert await keys(store) == []


async def test_a_failed_replacement_keeps_the_old_blob(store: BlobStore) -> None:
    await store.put("kept", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new bytes"
        raise OSError("cut")

    with pytest.raises(OSError, match="cut"):
        await store.put("kept", broken())

    assert await read_all(await store.get("kept")) == b"old"


@pytest.mark.parametrize(
    "key",
    ["", "../escape", "a/../../etc/passwd", "/absolute", "a//b", "a/./b", "back\\slash", "nul\x00"],
)
async def test_hostile_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="blob key"):
        await store.put(key, b"x")
    with pytest.raises(ValueError, match="blob key"):
        await store.head(key)


async def test_bad_metadata_is_refused(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="metadata"):
        await store.put("k", b"x", metadata={"Bad Name": "v"})

    with pytest.raises(ValueError, match="metadata"):
        await store.put("k", b"x", metadata={"name": "line\nbreak"})


async def test_a_signed_url_fetches_the_blob(store: BlobStore) -> None:
    await store.put("shared/file.txt", b"signed content", content_type="text/plain")

    url = await store.signed_url("shared/file.txt", expires=60)

    if isinstance(store, LocalBlobStore):
        # The service serves these (tests/app/test_documents.py); here, check the parts.
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        assert parts.path == "/blobs/shared/file.txt"
        verify_blob_signature(
            "shared/file.txt",
            query["expires"][0],
            query["signature"][0],
            SECRET,
            now=int(query["expires"][0]) - 1,
        )
    else:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"signed content"
        assert response.headers["content-disposition"] == "attachment"


async def test_signed_url_lifetime_is_bounded(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="between 1 second and 7 days"):
        await store.signed_url("k", expires=0)
    with pytest.raises(ValueError, match="between 1 second and 7 days"):
        await store.signed_url("k", expires=8 * 86400)
