"""Blob storage: where the bytes of documents live.

A `BlobStore` streams blobs in and out (`put`, `get`), describes them (`head`,
`list`), removes them (`delete`) and hands out URLs that fetch one without
credentials for a while (`signed_url`). Two implementations pass the same tests:

- `LocalBlobStore`: files under one directory, the embedded default. Writes are
  atomic (temporary file, then rename) and its signed URLs are HMAC-signed and
  served by the service (``GET /blobs/{key}``), checked with `verify_blob_signature`.
- `S3BlobStore`: a bucket on S3 or any S3-compatible server (MinIO, R2, …),
  through aiobotocore, installed by the ``s3`` extra and loaded only when such a
  store opens.
"""

from seawall.storage._base import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    Data,
    InvalidSignedUrl,
    StorageError,
    read_all,
    validate_key,
)
from seawall.storage._local import LocalBlobReader, LocalBlobStore
from seawall.storage._s3 import S3BlobReader, S3BlobStore
from seawall.storage._signing import blob_signature, verify_blob_signature

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "Data",
    "InvalidSignedUrl",
    "LocalBlobReader",
    "LocalBlobStore",
    "S3BlobReader",
    "S3BlobStore",
    "StorageError",
    "blob_signature",
    "read_all",
    "validate_key",
    "verify_blob_signature",
]
