"""The storage backend the settings name (docs/storage.md)."""

from __future__ import annotations

from mediarelay.config import Settings
from mediarelay.storage.base import Storage
from mediarelay.storage.local import LocalStorage


def open_storage(settings: Settings) -> Storage:
    """`local` (the default): files under `<data dir>/files`; `s3`: objects in a bucket, with staging
    files under `<data dir>/files/.staging` on each node."""
    if settings.storage.backend == "local":
        return LocalStorage(settings.files_dir)
    try:
        from mediarelay.storage.s3 import S3Options, S3Storage, credential
    except ImportError as exc:  # boto3 is an optional dependency
        raise RuntimeError("storage.backend = 's3' needs boto3: pip install 'mediarelay[s3]'") from exc
    s = settings.storage.s3
    options = S3Options(
        bucket=s.bucket,
        endpoint_url=s.endpoint_url,
        public_endpoint_url=s.public_endpoint_url,
        region=s.region,
        prefix=s.prefix,
        access_key_id=credential(s.access_key_id),
        secret_access_key=credential(s.secret_access_key),
        url_mode=s.url_mode,
        presign_seconds=s.presign_seconds,
        addressing_style=s.addressing_style,
        multipart_threshold=s.multipart_threshold_mb * 1024 * 1024,
    )
    return S3Storage(options, settings.files_dir / ".staging")
