"""`S3BlobStore`: blobs in a bucket of S3 or any S3-compatible service (MinIO, R2, …).

aiobotocore (the ``s3`` extra) is imported when the store opens, never by
``import seawall.storage``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, timedelta
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from seawall.storage._base import (
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

PART_BYTES = 8 << 20
"""Multipart upload part size: 8 MiB (S3 needs at least 5 MiB for all but the last)."""


class S3BlobReader(ChunkedReader):
    """An object's body, streamed from the open response."""

    def __init__(self, info: BlobInfo, body: Any) -> None:
        self.info = info
        self._body = body

    async def _read(self, size: int) -> bytes:
        chunk: bytes = await self._body.read(size)
        return chunk

    async def aclose(self) -> None:
        """Release the connection."""
        self._body.close()


class S3BlobStore:
    """Blobs as objects of *bucket* on S3 or an S3-compatible server.

    A `put` of more than `PART_BYTES` streams as a multipart upload (aborted if
    the data's iterator fails, so nothing is left); a smaller one is one
    ``PutObject``. Signed URLs are S3 presigned ``GetObject`` URLs.

    Args:
        bucket: the bucket's name.
        endpoint_url: the server's URL, for anything but AWS itself.
        region: the region (signatures need one; ``us-east-1`` suits most others).
        access_key_id: the credentials; when omitted, botocore's usual chain
            (environment, profile, instance role) applies.
        secret_access_key: see *access_key_id*.
        path_style: address the bucket in the path (MinIO and most self-hosted servers).
        create_bucket: create the bucket at `open` when it does not exist.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: SecretStr | None = None,
        secret_access_key: SecretStr | None = None,
        path_style: bool = True,
        create_bucket: bool = False,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._path_style = path_style
        self._create_bucket = create_bucket
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def open(self) -> None:
        """Create the client (and the bucket, when asked to).

        Raises:
            StorageError: aiobotocore is not installed (``pip install 'seawall[s3]'``).
        """
        if self._client is not None:
            return
        try:
            # The optional s3 extra; aiobotocore ships no type information.
            from aiobotocore.config import (  # type: ignore[import-untyped]  # noqa: PLC0415
                AioConfig,
            )
            from aiobotocore.session import (  # type: ignore[import-untyped]  # noqa: PLC0415
                get_session,
            )
        except ImportError as exc:
            raise StorageError("the S3 store needs aiobotocore: pip install 'seawall[s3]'") from exc
        secret = self._secret_access_key
        config = AioConfig(
            s3={"addressing_style": "path" if self._path_style else "auto"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
        )
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self._access_key_id.get_secret_value()
                if self._access_key_id
                else None,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                config=config,
            )
        )
        self._stack = stack
        if self._create_bucket:
            try:
                await self._client.head_bucket(Bucket=self.bucket)
            except self._client.exceptions.ClientError:
                await self._client.create_bucket(Bucket=self.bucket)

    async def aclose(self) -> None:
        """Close the client's connections."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

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

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client (open the store first)."""
        if self._client is None:
            raise RuntimeError("open the S3 store first (async with store: ...)")
        return self._client

    async def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Upload *data* under *key*: one request when small, a multipart upload otherwise."""
        validate_key(key)
        user_metadata = validate_metadata(metadata)
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": user_metadata}
        digest = hashlib.sha256()
        size = 0
        parts: list[bytes] = []
        buffered = 0
        upload_id: str | None = None
        done: list[dict[str, Any]] = []
        try:
            async for chunk in chunks_of(data):
                digest.update(chunk)
                size += len(chunk)
                parts.append(chunk)
                buffered += len(chunk)
                if buffered >= PART_BYTES:
                    if upload_id is None:
                        started = await self.client.create_multipart_upload(
                            Bucket=self.bucket, Key=key, **extra
                        )
                        upload_id = started["UploadId"]
                    done.append(await self._upload_part(key, upload_id, len(done) + 1, parts))
                    parts, buffered = [], 0
            if upload_id is None:
                answer = await self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=b"".join(parts), **extra
                )
            else:
                if parts:
                    done.append(await self._upload_part(key, upload_id, len(done) + 1, parts))
                answer = await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
            raise
        return BlobInfo(
            key=key,
            size=size,
            content_type=content_type,
            metadata=user_metadata,
            sha256=digest.hexdigest(),
            etag=str(answer.get("ETag", "")).strip('"') or None,
        )

    async def _upload_part(
        self, key: str, upload_id: str, number: int, parts: list[bytes]
    ) -> dict[str, Any]:
        answer = await self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=b"".join(parts)
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in {"404", "NoSuchKey", "NotFound"}

    async def head(self, key: str) -> BlobInfo:
        """Return the info of the object under *key*."""
        validate_key(key)
        try:
            answer = await self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(key) from None
            raise
        return _info(key, answer)

    async def get(self, key: str) -> S3BlobReader:
        """Open the object under *key* for streaming."""
        validate_key(key)
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(key) from None
            raise
        return S3BlobReader(_info(key, answer), answer["Body"])

    async def delete(self, key: str) -> None:
        """Remove the object under *key* (S3 does not mind a missing one)."""
        validate_key(key)
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield the objects whose key starts with *prefix*, in key order.

        Listings carry no content type or metadata; `head` a key for those.
        """
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield BlobInfo(
                    key=item["Key"],
                    size=int(item["Size"]),
                    modified_at=item["LastModified"].astimezone(UTC),
                    etag=str(item.get("ETag", "")).strip('"') or None,
                )

    async def signed_url(self, key: str, *, expires: float | timedelta) -> str:
        """Return a presigned ``GetObject`` URL that downloads (never renders) the blob."""
        validate_key(key)
        url: str = await self.client.generate_presigned_url(
            "get_object",
            # As the local store serves its blobs: an attachment, so that an uploaded
            # HTML or SVG file cannot run in the bucket's origin.
            Params={"Bucket": self.bucket, "Key": key, "ResponseContentDisposition": "attachment"},
            ExpiresIn=seconds_of(expires),
        )
        return url


def _info(key: str, answer: Mapping[str, Any]) -> BlobInfo:
    modified = answer.get("LastModified")
    return BlobInfo(
        key=key,
        size=int(answer.get("ContentLength", 0)),
        content_type=str(answer.get("ContentType") or DEFAULT_CONTENT_TYPE),
        metadata=dict(answer.get("Metadata") or {}),
        modified_at=modified.astimezone(UTC) if modified is not None else None,
        etag=str(answer.get("ETag", "")).strip('"') or None,
    )
