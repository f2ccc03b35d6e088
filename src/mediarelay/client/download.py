"""Downloads that survive a broken connection: stream to `<file>.part`, resume with `Range`, verify,
then rename into place.

The validator of the first answer (a strong ETag, else Last-Modified) is kept next to the partial file in
`<file>.part.json`, so a later call — even from another process — resumes with `Range: bytes=<size>-` and
`If-Range: <validator>`: the server sends only the rest while the file is unchanged, or the whole file
(200) if it changed, and the client starts over. The SHA-256 is checked when the server publishes one
(mediarelay's native view does); a mismatch deletes the partial file and raises IntegrityError.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from mediarelay.client.core import (
    TRANSIENT,
    Close,
    Config,
    Emit,
    Flow,
    Open,
    Read,
    Sleep,
    State,
    Stream,
    backoff_for,
    build,
    detect,
    get,
    retry_after,
    same_origin,
    stream_error,
)
from mediarelay.client.dialects import SPECS, Spec
from mediarelay.client.errors import APIError, DownloadError, IntegrityError, UsageError
from mediarelay.client.results import DownloadProgress, Output, TaskResult

CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
HASH_CHUNK = 1 << 20


def part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _load_meta(meta: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(meta.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _validator(response: httpx.Response) -> str | None:
    """What `If-Range` may carry: a strong ETag, else Last-Modified (RFC 9110 §13.1.5)."""
    etag: str | None = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = response.headers.get("last-modified")
    return modified


def _sha256_of(path: Path, size: int) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        left = size
        while left > 0 and (chunk := fh.read(min(HASH_CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest


def _reset(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


def download(
    cfg: Config,
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    authenticated: bool = False,
    progress: Callable[[DownloadProgress], Any] | None = None,
    retries: int | None = None,
) -> Flow[Path]:
    """Fetch `url` into `dest`. The key is sent only to the server's own origin."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, meta = part_paths(dest)
    send_key = authenticated or same_origin(url, cfg.base_url)
    limit = cfg.max_retries if retries is None else retries
    backoff = backoff_for(cfg)
    failures = 0

    def failed(exc: Exception, received: int) -> DownloadError | None:
        """Count a failure; the error to raise once there were too many."""
        nonlocal failures
        failures += 1
        if failures <= limit:
            return None
        kept = f"; {received} bytes kept in {part.name}, run again to resume" if received else ""
        error = DownloadError(f"download of {url} failed: {exc}{kept}")
        error.__cause__ = exc
        return error

    while True:
        saved = _load_meta(meta)
        have = part.stat().st_size if part.exists() else 0
        headers = {"accept": "*/*", "accept-encoding": "identity"}
        if have and saved.get("validator"):
            headers["range"] = f"bytes={have}-"
            headers["if-range"] = str(saved["validator"])
        else:
            have = 0  # nothing to resume safely: without a validator the bytes could be of another file
        request = build(cfg, "GET", url, headers=headers, auth=send_key)
        try:
            stream: Stream = yield Open(request)
        except httpx.TransportError as exc:
            if (error := failed(exc, have)) is not None:
                raise error from exc
            yield Sleep(backoff.next())
            continue
        response = stream.response
        status = response.status_code
        if status == 416 and have:  # nothing after `have`: complete already, or another file
            yield Close(stream)
            if saved.get("total") == have:
                return _finish(part, meta, dest, _sha256_of(part, have), have, have, sha256, size, url)
            _reset(part, meta)
            continue
        if status >= 400:
            api = yield from stream_error(stream)
            if status in TRANSIENT and failed(api, have) is None:
                yield Sleep(retry_after(response) or backoff.next())
                continue
            raise api
        total: int | None
        if status == 206:
            found = CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if found is None or int(found.group(1)) != have:
                yield Close(stream)  # not the range asked for: start over
                _reset(part, meta)
                continue
            total = None if found.group(3) == "*" else int(found.group(3))
        else:
            have = 0  # a full answer: the file changed, or the server ignores ranges
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        meta.write_bytes(orjson.dumps({"url": url, "validator": _validator(response), "total": total}))
        digest = _sha256_of(part, have) if have else hashlib.sha256()
        received = have
        if progress is not None:
            yield Emit(progress, DownloadProgress(url, received, total, resumed_from=have))
        try:
            with part.open("ab" if have else "wb") as fh:
                while chunk := (yield Read(stream)):
                    fh.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        yield Emit(progress, DownloadProgress(url, received, total, resumed_from=have))
        except httpx.TransportError as exc:  # the connection broke mid-body: keep the part, resume
            yield Close(stream)
            if (error := failed(exc, received)) is not None:
                raise error from exc
            if received > have:  # it made progress: resume at once, and the failure streak ends
                failures = 0
                continue
            yield Sleep(backoff.next())
            continue
        yield Close(stream)
        if total is not None and received < total:  # closed early without an error: resume
            if (error := failed(DownloadError("connection closed early"), received)) is not None:
                raise error
            continue
        return _finish(part, meta, dest, digest, received, total, sha256, size, url)


def _finish(
    part: Path,
    meta: Path,
    dest: Path,
    digest: Any,
    received: int,
    total: int | None,
    sha256: str | None,
    size: int | None,
    url: str,
) -> Path:
    expected = size if size is not None else total
    if expected is not None and received != expected:
        _reset(part, meta)
        raise IntegrityError(f"{url}: got {received} bytes, expected {expected}")
    if sha256 and digest.hexdigest() != sha256.lower():
        _reset(part, meta)
        raise IntegrityError(f"{url}: SHA-256 {digest.hexdigest()} does not match the published {sha256}")
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    return dest


def download_task(
    cfg: Config,
    state: State,
    spec: Spec,
    task: TaskResult,
    dest: Path,
    *,
    role: str | None = None,
    index: int = 0,
    verify: bool = True,
    progress: Callable[[DownloadProgress], Any] | None = None,
    retries: int | None = None,
) -> Flow[Path]:
    """Download one output of a finished task. On mediarelay, an output of a dialect that publishes no
    checksum is looked up in the task's native view (which takes any dialect's id) for its SHA-256."""
    if not task.ok:
        raise UsageError(f"task {task.id} is {task.status}: there is nothing to download")
    out = task.output(role, index)
    if out is None:
        have = ", ".join(sorted({f"{o.role}[{o.index}]" for o in task.outputs})) or "none"
        raise UsageError(f"task {task.id} has no {role or 'video/image'} output {index} (it has: {have})")
    sha256, size = out.sha256, out.bytes
    if verify and sha256 is None and spec.name != "native" and (yield from detect(cfg, state)):
        native = yield from _native_output(cfg, task.id, out)
        if native is not None:
            sha256, size = native.sha256, native.bytes
    return (
        yield from download(
            cfg,
            out.url,
            dest,
            sha256=sha256 if verify else None,
            size=size if verify else None,
            authenticated=out.authenticated,
            progress=progress,
            retries=retries,
        )
    )


def _native_output(cfg: Config, task_id: str, out: Output) -> Flow[Output | None]:
    try:
        view = yield from get(cfg, SPECS["native"], task_id)
    except APIError:
        return None
    same_url = next((o for o in view.outputs if o.url == out.url), None)
    return same_url or view.output(out.role, out.index)
