"""Where a node's diagnostics bundles are kept: a directory, or an S3-compatible bucket.

`destination("s3://bucket/prefix")` stores through boto3 with the standard credential chain (IRSA on
EKS) and the standard endpoint settings (`AWS_ENDPOINT_URL_S3` for another S3-compatible service);
any other value is a directory (a hostPath on the node, say), where bundles are written readable by
their owner only, whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

S3_SCHEME = "s3://"


class StoreError(Exception):
    """The bundle could not be stored; the message names the place and why."""


class Store(Protocol):
    async def put(self, source: Path, name: str) -> str:
        """Keep the file `source` as `name` (a relative path); where it is now. Raises StoreError."""
        ...


class DirectoryStore:
    """Bundles under one directory, each written to a temporary name and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, source: Path, name: str) -> str:
        return await asyncio.to_thread(self._put, source, name)

    def _put(self, source: Path, name: str) -> str:
        target = self.root / name  # "<node>/<file>": one directory per node under the root
        partial: str | None = None
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.parent.mkdir(mode=0o700, exist_ok=True)
            # A fresh name, created exclusively and owner-only (mkstemp), renamed into place whole.
            handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with source.open("rb") as reading, os.fdopen(handle, "wb") as writing:
                shutil.copyfileobj(reading, writing)
            os.replace(partial, target)
        except OSError as error:
            if partial is not None:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            raise StoreError(f"cannot write {target}: {error.strerror or error}") from error
        return str(target)


class S3Store:
    """Bundles as objects under `prefix` in `bucket`; one client, made on first use."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = None
        self._lock = threading.Lock()

    async def put(self, source: Path, name: str) -> str:
        return await asyncio.to_thread(self._put, source, name)

    def _put(self, source: Path, name: str) -> str:
        # The SDK loads only where bundles go to S3.
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            self._s3().upload_file(str(source), self.bucket, key)
        # upload_file wraps a refusal in S3UploadFailedError; a malformed endpoint setting is a ValueError.
        except (Boto3Error, BotoCoreError, ClientError, ValueError) as error:
            raise StoreError(f"cannot store s3://{self.bucket}/{key}: {error}") from error
        return f"{S3_SCHEME}{self.bucket}/{key}"

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                self._client = boto3.session.Session().client("s3")
            return self._client


def destination(where: str) -> Store:
    """The store `where` names: "s3://bucket[/prefix]" or a directory. Raises ValueError for an S3
    address without a bucket."""
    if where.startswith(S3_SCHEME):
        bucket, _, prefix = where[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"{where!r} names no bucket; write s3://BUCKET[/PREFIX]")
        return S3Store(bucket, prefix)
    return DirectoryStore(Path(where))
