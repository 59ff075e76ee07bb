"""Test documents: PDFs made with pypdf, multipart bodies, waiting for the importer."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def make_pdf(*pages: str) -> bytes:
    """A PDF with one line of Helvetica text per page."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def upload(
    client: httpx.AsyncClient,
    case_id: str,
    content: bytes,
    *,
    filename: str = "notes.txt",
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/cases/{case_id}/documents",
        files={"file": (filename, content, content_type)},
        headers=headers if headers is not None else key(),
    )


async def settled(client: httpx.AsyncClient, document_id: str) -> dict[str, Any]:
    """The document's record once the importer has imported it or given up."""
    for _ in range(300):
        response = await client.get(f"/documents/{document_id}/metadata")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "uploaded":
            return body
        await asyncio.sleep(0.05)
    pytest.fail(f"document {document_id} was never imported: {body}")
