"""Result files in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, …): docs/storage.md.

Files are still written to a local staging directory first; `put` uploads the finished file (multipart
for big ones) and removes it. Objects are private: clients get them through mediarelay's `/files/…` URLs,
answered either by a redirect to a short-lived presigned GET URL or by streaming the object through.
boto3's client is synchronous and thread-safe: call this backend from worker threads.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from mediarelay.storage.base import RangeNotSatisfiable, RemoteBody, RemoteFile

CHUNK = 1 << 20
STALE_STAGING_SECONDS = 3600  # staging files older than this are leftovers of a killed step
CACHE_CONTROL = "public, max-age=31536000, immutable"  # a stored file never changes
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
mimetypes.add_type("image/webp", ".webp")


@dataclass(frozen=True)
class S3Options:
    """What the backend needs to know; built from `StorageSettings.s3` by `storage.factory`."""

    bucket: str
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None  # the host in presigned URLs, when clients reach S3 elsewhere
    region: str | None = None
    prefix: str = ""
    access_key_id: str | None = None  # the values (resolved from env references), or None: boto3's chain
    secret_access_key: str | None = None
    url_mode: str = "proxy"  # "presigned" or "proxy"
    presign_seconds: int = 3600
    addressing_style: str = "auto"
    multipart_threshold: int = 16 * 1024 * 1024


def check_key(key: str) -> str:
    """A storage key: relative, `/`-separated, no empty, `.` or `..` parts, no leading dot."""
    parts = key.split("/")
    if not key or key.startswith(".") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key


class S3Storage:
    def __init__(self, options: S3Options, staging: Path) -> None:
        self.options = options
        self.bucket = options.bucket
        self.prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        self.staging = staging.resolve()
        self.staging.mkdir(parents=True, exist_ok=True)
        self.client = self._client(options.endpoint_url)
        # A presigned URL is signed for its host: sign with the client-facing endpoint when there is one.
        self.signer = (
            self._client(options.public_endpoint_url) if options.public_endpoint_url else self.client
        )
        self.transfer = TransferConfig(
            multipart_threshold=options.multipart_threshold, multipart_chunksize=options.multipart_threshold
        )

    def _client(self, endpoint_url: str | None) -> Any:
        o = self.options
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": o.addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=o.region,
            aws_access_key_id=o.access_key_id,
            aws_secret_access_key=o.secret_access_key,
            config=config,
        )

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- staging: local files ------------------------------------------------------------------------

    def new_staging_path(self, suffix: str) -> Path:
        return self.staging / f"{uuid.uuid4().hex}{suffix}"

    def clear_staging(self, older_than: float = STALE_STAGING_SECONDS) -> int:
        """Remove staging files older than an hour: other steps of this node may be writing the rest."""
        removed = 0
        cutoff = time.time() - older_than
        for leftover in self.staging.iterdir():
            try:
                if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                    leftover.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:  # finished (put) meanwhile
                continue
        return removed

    # -- objects -------------------------------------------------------------------------------------

    def put(self, key: str, src: Path) -> tuple[int, str]:
        """Upload a finished staging file (multipart above the threshold), then remove it."""
        name = self.object_key(key)
        digest = hashlib.sha256()
        size = 0
        with src.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        extra = {
            "ContentType": mimetypes.guess_type(key)[0] or "application/octet-stream",
            "CacheControl": CACHE_CONTROL,
            "Metadata": {"sha256": sha},
        }
        self.client.upload_file(str(src), self.bucket, name, ExtraArgs=extra, Config=self.transfer)
        src.unlink(missing_ok=True)
        return size, sha

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise
        return head

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))  # no error when missing

    def remove_tree(self, top: str) -> None:
        """Delete every object under `<prefix><top>/`."""
        if "/" in check_key(top):
            raise ValueError(f"not a top-level storage directory: {top!r}")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{top}/"):
            found = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if found:  # at most 1000 per page, as delete_objects takes
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": found, "Quiet": True})

    def locate(self, key: str) -> RemoteFile | None:
        try:
            name = self.object_key(key)
        except ValueError:
            return None
        head = self._head(key)
        if head is None:
            return None
        o = self.options
        url = None
        if o.url_mode == "presigned":
            url = self.signer.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=o.presign_seconds
            )
        return RemoteFile(
            size=int(head["ContentLength"]),
            etag=str(head["ETag"]),
            last_modified=head["LastModified"].timestamp(),
            redirect_url=url,
            redirect_max_age=o.presign_seconds // 2,
            fetch=lambda byte_range: self._fetch(name, byte_range),
        )

    def _fetch(self, name: str, byte_range: str | None) -> RemoteBody:
        """GET the object, or one range of it (S3 answers 206 with its Content-Range)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if byte_range:
            args["Range"] = byte_range
        try:
            got = self.client.get_object(**args)
        except ClientError as exc:
            if _code(exc) == "InvalidRange":
                raise RangeNotSatisfiable(byte_range) from None
            raise
        body = got["Body"]
        content_range = got.get("ContentRange")
        return RemoteBody(
            status=206 if content_range else 200,
            length=int(got["ContentLength"]),
            content_range=content_range,
            chunks=_chunks(body),
            close=body.close,
        )


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def credential(ref: str | None) -> str | None:
    """The value of an `env:NAME` reference (None when no reference is set)."""
    if ref is None:
        return None
    name = ref.removeprefix("env:")
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"storage.s3: the environment variable {name} is not set")
    return value
