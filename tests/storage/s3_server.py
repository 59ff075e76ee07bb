"""A real S3-compatible server on loopback for tests: moto in server mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydantic import SecretStr

from seawall.storage import S3BlobStore
from tests.live_server import free_port


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 on 127.0.0.1 in a thread; yield its endpoint URL."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_store(endpoint: str, bucket: str | None = None) -> S3BlobStore:
    """A store on a fresh bucket of the moto server at *endpoint* (created when opened)."""
    return S3BlobStore(
        bucket or f"seawall-{uuid.uuid4().hex[:12]}",
        endpoint_url=endpoint,
        access_key_id=SecretStr("testing"),
        secret_access_key=SecretStr("testing"),
        create_bucket=True,
    )
