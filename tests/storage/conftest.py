"""Fixtures: one `BlobStore` per implementation, the same tests on each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from seawall.storage import BlobStore, LocalBlobStore
from tests.storage.s3_server import moto_server, s3_store

SECRET = SecretStr("test-signing-secret")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint of a moto S3 server shared by the session's tests."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """An open, empty store: the local file system, then S3 (moto) on its own bucket."""
    chosen: BlobStore
    if request.param == "local":
        chosen = LocalBlobStore(tmp_path / "blobs", signing_secret=SECRET)
    else:
        chosen = s3_store(request.getfixturevalue("s3_endpoint"))
    async with chosen:
        yield chosen
