"""Documents of cases over ASGI, on SQLite and PostgreSQL, with the local blob store."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from seawall.app._documents import extract
from seawall.config import Settings, StorageSettings
from seawall.db import Database, documents, outbox
from seawall.errors import Unprocessable
from seawall.storage import LocalBlobStore, blob_signature
from tests.app.documents_helpers import key, make_pdf, settled, upload
from tests.app.test_cases import assert_problem, create

SECRET = SecretStr("documents-test-secret")
LIMIT = 256 * 1024


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings with a local blob store under the test's folder and a small limit."""
    return Settings(
        _env_file=None,
        _secrets_dir=None,
        database_url=database_url,
        auto_migrate=False,
        max_body_bytes=64 * 1024,
        storage=StorageSettings(
            path=tmp_path / "blobs", signing_secret=SECRET, max_upload_bytes=LIMIT
        ),
    )


@pytest.fixture
def blobs(settings: Settings) -> LocalBlobStore:
    return LocalBlobStore(settings.storage.path, signing_secret=SECRET)


@pytest.fixture
async def case(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create(client)


async def stored_keys(blobs: LocalBlobStore) -> list[str]:
    return [info.key async for info in blobs.list()]


async def document_rows(database: Database) -> list[dict[str, Any]]:
    async with database.sessions() as session:
        return [dict(r) for r in (await session.execute(sa.select(documents))).mappings()]


# --- uploading ---------------------------------------------------------------------------------


async def test_upload_streams_the_file_to_the_store_and_records_it(
    client: httpx.AsyncClient, case: dict[str, Any], database: Database, blobs: LocalBlobStore
) -> None:
    content = b"Customer says the parcel never arrived.\n" * 100

    response = await upload(client, case["id"], content, filename="../../etc/notes.txt")

    assert response.status_code == 201, response.text
    document = response.json()
    assert response.headers["location"] == f"/documents/{document['id']}"
    assert document["case_id"] == case["id"]
    assert document["filename"] == "notes.txt"
    assert document["size_bytes"] == len(content)
    assert document["sha256"] == hashlib.sha256(content).hexdigest()
    assert document["status"] == "uploaded"
    assert await stored_keys(blobs) == [f"documents/{document['id']}"]
    async with database.sessions() as session:
        types = (await session.execute(sa.select(outbox.c.event_type))).scalars().all()
    assert "document.uploaded" in types


async def test_the_importer_extracts_text_and_attaches_it_to_the_case(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    created = (await upload(client, case["id"], "Grüße from the customer".encode())).json()

    document = await settled(client, created["id"])

    assert document["status"] == "imported"
    assert document["text"] == "Grüße from the customer"
    assert document["page_count"] is None
    assert document["imported_at"] is not None
    for _ in range(100):
        lines = (await client.get(f"/cases/{case['id']}/activity")).json()["data"]
        if any(line["type"] == "document.uploaded" for line in lines):
            break
    summaries = [line["summary"] for line in lines]
    assert "document imported: notes.txt" in summaries


async def test_a_pdf_gets_its_page_count_and_text(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    pdf = make_pdf("Invoice 4711", "Total due", "Thank you")

    created = await upload(
        client, case["id"], pdf, filename="invoice.pdf", content_type="application/pdf"
    )

    document = await settled(client, created.json()["id"])
    assert document["status"] == "imported"
    assert document["page_count"] == 3
    assert "Invoice 4711" in document["text"]
    assert "Thank you" in document["text"]


async def test_a_broken_pdf_is_dead_lettered_with_the_reason(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    created = await upload(
        client, case["id"], b"this is no PDF", filename="x.pdf", content_type="application/pdf"
    )

    document = await settled(client, created.json()["id"])

    assert document["status"] == "failed"
    assert "not a valid application/pdf" in document["error"]
    listed = (await client.get(f"/cases/{case['id']}/documents")).json()["data"]
    assert listed[0]["status"] == "failed"


async def test_the_same_file_twice_is_one_document(
    client: httpx.AsyncClient, case: dict[str, Any], database: Database, blobs: LocalBlobStore
) -> None:
    first = await upload(client, case["id"], b"same bytes")

    second = await upload(client, case["id"], b"same bytes", filename="copy.txt")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(await document_rows(database)) == 1
    assert len(await stored_keys(blobs)) == 1


async def test_a_retry_with_the_same_key_replays_the_first_answer(
    client: httpx.AsyncClient, case: dict[str, Any], database: Database, blobs: LocalBlobStore
) -> None:
    headers = key()
    first = await upload(client, case["id"], b"retried", headers=headers)

    again = await upload(client, case["id"], b"retried", headers=headers)

    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(await document_rows(database)) == 1
    assert len(await stored_keys(blobs)) == 1


async def test_reusing_a_key_for_another_file_is_refused(
    client: httpx.AsyncClient, case: dict[str, Any], blobs: LocalBlobStore
) -> None:
    headers = key()
    await upload(client, case["id"], b"first file", headers=headers)

    other = await upload(client, case["id"], b"second file", headers=headers)

    assert_problem(other, 422, "idempotency-key-reused")
    assert len(await stored_keys(blobs)) == 1


# --- refusing -----------------------------------------------------------------------------------


async def test_a_file_over_the_limit_is_413_and_leaves_nothing(
    client: httpx.AsyncClient, case: dict[str, Any], database: Database, blobs: LocalBlobStore
) -> None:
    response = await upload(client, case["id"], os.urandom(LIMIT + 1))

    assert_problem(response, 413, "payload-too-large")
    assert await stored_keys(blobs) == []
    assert await document_rows(database) == []
    assert list((blobs.root / "tmp").iterdir()) == []


async def test_a_body_far_over_the_limit_is_refused_before_reading(
    client: httpx.AsyncClient, case: dict[str, Any], blobs: LocalBlobStore
) -> None:
    response = await upload(client, case["id"], os.urandom(LIMIT + (2 << 20)))

    assert_problem(response, 413, "payload-too-large")
    assert await stored_keys(blobs) == []


async def test_an_unlisted_type_is_415(
    client: httpx.AsyncClient, case: dict[str, Any], blobs: LocalBlobStore
) -> None:
    response = await upload(
        client, case["id"], b"MZ\x90\x00", filename="run.exe", content_type="application/x-msdos"
    )

    body = assert_problem(response, 415, "unsupported-document-type")
    assert "application/pdf" in body["detail"]
    assert await stored_keys(blobs) == []


async def test_a_body_that_is_not_multipart_is_415(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    response = await client.post(
        f"/cases/{case['id']}/documents", json={"file": "x"}, headers=key()
    )

    assert_problem(response, 415, "unsupported-media-type")


async def test_an_unknown_case_is_404(client: httpx.AsyncClient, blobs: LocalBlobStore) -> None:
    response = await upload(client, "no-such-case", b"x")

    assert_problem(response, 404, "case-not-found")
    assert await stored_keys(blobs) == []


async def test_an_upload_needs_an_idempotency_key(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    response = await upload(client, case["id"], b"x", headers={})

    assert_problem(response, 400, "idempotency-key-required")


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--b--\r\n',
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\ntruncated in the middle",
        b"garbage that is no multipart at all",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Disposition: form-data; "
        b'name="file"; filename="b.txt"\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b--\r\n',
        # a field name outside latin-1 (found by the schema fuzzer: it was a 500)
        b'--b\r\nContent-Disposition: form-data; name="d \xf1\xbd\xbf\x81\x02"\r\n\r\n'
        b"{}\r\n--b--\r\n",
    ],
    ids=["no-file-part", "truncated", "garbage", "two-files", "name-outside-latin-1"],
)
async def test_a_malformed_body_is_400_and_leaves_nothing(
    client: httpx.AsyncClient,
    case: dict[str, Any],
    database: Database,
    blobs: LocalBlobStore,
    body: bytes,
) -> None:
    response = await client.post(
        f"/cases/{case['id']}/documents",
        content=body,
        headers={**key(), "Content-Type": "multipart/form-data; boundary=b"},
    )

    assert_problem(response, 400, "malformed-upload")
    assert await stored_keys(blobs) == []
    assert await document_rows(database) == []


# --- reading ------------------------------------------------------------------------------------


FILE_PART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\nhello\r\n"
)


@pytest.mark.parametrize(
    "rest",
    [
        b"--b\r\n",
        b"--b\r\nxxxx",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.txt"\r\n'
        b"\r\nb\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        + b"n" * 70_000
        + b"\r\n--b--\r\n",
    ],
    ids=["no-closing-boundary", "garbage-after-boundary", "second-file", "huge-field"],
)
async def test_a_body_malformed_after_the_file_is_400_and_leaves_nothing(
    client: httpx.AsyncClient,
    case: dict[str, Any],
    database: Database,
    blobs: LocalBlobStore,
    rest: bytes,
) -> None:
    async def in_two_writes() -> AsyncIterator[bytes]:
        yield FILE_PART
        yield rest

    response = await client.post(
        f"/cases/{case['id']}/documents",
        content=in_two_writes(),
        headers={**key(), "Content-Type": "multipart/form-data; boundary=b"},
    )

    assert_problem(response, 400, "malformed-upload")
    assert await stored_keys(blobs) == []
    assert await document_rows(database) == []


async def test_a_utf8_file_name_is_kept(client: httpx.AsyncClient, case: dict[str, Any]) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
        + "Rechnung-März-📄.txt".encode()
        + b'"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n'
    )
    response = await client.post(
        f"/cases/{case['id']}/documents",
        content=body,
        headers={**key(), "Content-Type": "multipart/form-data; boundary=b"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "Rechnung-März-📄.txt"


async def test_documents_are_listed_newest_first(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    first = (await upload(client, case["id"], b"one", filename="one.txt")).json()
    second = (await upload(client, case["id"], b"two", filename="two.txt")).json()

    listed = await client.get(f"/cases/{case['id']}/documents")

    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["data"]] == [second["id"], first["id"]]
    assert all(d["text"] is None for d in listed.json()["data"])


async def test_listing_documents_of_an_unknown_case_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/cases/nope/documents"), 404, "case-not-found")


async def test_a_document_redirects_to_a_signed_url_that_serves_it(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    created = (await upload(client, case["id"], b"download me")).json()

    redirect = await client.get(f"/documents/{created['id']}")
    fetched = await client.get(redirect.headers["location"])

    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith(f"/blobs/documents/{created['id']}?expires=")
    assert fetched.status_code == 200
    assert fetched.content == b"download me"
    assert fetched.headers["content-type"].startswith("text/plain")


async def test_an_unknown_document_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/documents/nope"), 404, "document-not-found")
    assert_problem(await client.get("/documents/nope/metadata"), 404, "document-not-found")


async def test_a_tampered_signed_url_is_403(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    created = (await upload(client, case["id"], b"secret")).json()
    location = (await client.get(f"/documents/{created['id']}")).headers["location"]

    tampered = await client.get(location[:-4] + "0000")
    unsigned = await client.get(f"/blobs/documents/{created['id']}")
    non_ascii = await client.get(location[:-1] + "%C3%A9")  # 64 characters, one not ASCII

    assert_problem(tampered, 403, "invalid-signature")
    assert_problem(unsigned, 403, "invalid-signature")
    assert_problem(non_ascii, 403, "invalid-signature")


async def test_an_expired_signed_url_is_403(
    client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    created = (await upload(client, case["id"], b"old")).json()
    blob_key = f"documents/{created['id']}"
    past = int(time.time()) - 10

    response = await client.get(
        f"/blobs/{blob_key}",
        params={"expires": past, "signature": blob_signature(blob_key, past, SECRET)},
    )

    assert_problem(response, 403, "signed-url-expired")


# --- extraction, directly -----------------------------------------------------------------------


def test_extract_refuses_text_that_is_not_utf8() -> None:
    with pytest.raises(Unprocessable, match="not UTF-8"):
        extract("text/plain", io.BytesIO(b"\xff\xfe\x00bad" * 10))


def test_extract_refuses_an_image_without_its_signature() -> None:
    with pytest.raises(Unprocessable, match="image/png"):
        extract("image/png", io.BytesIO(b"GIF89a..."))


def test_extract_refuses_a_truncated_pdf() -> None:
    pdf = make_pdf("whole")

    with pytest.raises(Unprocessable, match="PDF"):
        extract("application/pdf", io.BytesIO(pdf[:60]))
