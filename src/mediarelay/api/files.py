"""Result files at stable URLs: `/files/<task id>/<name>`, with Range support and long-lived caching.

A stored file never changes (its name is tied to its task and role), so it can be cached for a year.
On the local backend Starlette's ETag (size and mtime) drives conditional GETs; on S3 the object's ETag
does, and the answer is a redirect to a presigned URL or the bytes streamed through (docs/storage.md).
The path itself is the capability: task ids are unguessable.
"""

import asyncio
import email.utils
import mimetypes
import re

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from mediarelay.api.services import Services
from mediarelay.domain import not_found
from mediarelay.storage.base import LocalFile, RangeNotSatisfiable, RemoteFile, Storage

router = APIRouter(tags=["Files"])

mimetypes.add_type("image/webp", ".webp")
CACHING = {"cache-control": "public, max-age=31536000, immutable", "accept-ranges": "bytes"}
ONE_RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)")  # what is passed on to S3; anything else: the whole file


@router.api_route("/files/{task_id}/{name}", methods=["GET", "HEAD"], summary="Download a result file")
async def get_file(request: Request, task_id: str, name: str) -> Response:
    svc: Services = request.app.state.services
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.startswith("."):
        raise not_found("file not found")
    response = await serve_stored(
        request, svc.storage, f"{task_id}/{name}", media_type, CACHING, redirect=True
    )
    if response is None:
        raise not_found("file not found")
    return response


def not_modified(request: Request, etag: str) -> bool:
    if_none_match = request.headers.get("if-none-match")
    return bool(etag and if_none_match) and etag in (t.strip() for t in (if_none_match or "").split(","))


async def serve_stored(
    request: Request,
    storage: Storage,
    key: str,
    media_type: str,
    headers: dict[str, str],
    *,
    redirect: bool,
) -> Response | None:
    """A stored file as an HTTP answer (None: no such file), with Range, ETag and If-None-Match.

    `headers` (caching) may carry an `etag` of the caller's, which then wins over the backend's. A remote
    store in presigned mode is answered with a redirect when `redirect` is set (the `/files/…` URLs; the
    dialects' content endpoints always stream, as the APIs they mimic do)."""
    found = await asyncio.to_thread(storage.locate, key)
    if found is None:
        return None
    if isinstance(found, LocalFile):
        response = FileResponse(found.path, media_type=media_type, headers=headers, stat_result=found.stat)
        etag = response.headers["etag"]
        if not_modified(request, etag):
            return Response(status_code=304, headers={**headers, "etag": etag})
        return response
    return await serve_remote(request, found, media_type, headers, redirect=redirect)


async def serve_remote(
    request: Request, found: RemoteFile, media_type: str, headers: dict[str, str], *, redirect: bool
) -> Response:
    etag = headers.get("etag", found.etag)
    common = {**headers, "etag": etag}
    if not_modified(request, etag):
        return Response(status_code=304, headers=common)
    if redirect and found.redirect_url is not None:
        cache = f"private, max-age={found.redirect_max_age}"
        return RedirectResponse(found.redirect_url, status_code=302, headers={"cache-control": cache})
    common["last-modified"] = email.utils.formatdate(found.last_modified, usegmt=True)
    if request.method == "HEAD":
        return Response(
            status_code=200, media_type=media_type, headers={**common, "content-length": str(found.size)}
        )
    byte_range = request.headers.get("range", "").replace(" ", "")
    if_range = request.headers.get("if-range")
    if not ONE_RANGE.fullmatch(byte_range) or (if_range is not None and if_range != etag):
        byte_range = ""
    try:
        body = await asyncio.to_thread(found.fetch, byte_range or None)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**common, "content-range": f"bytes */{found.size}"})
    common["content-length"] = str(body.length)
    if body.content_range:
        common["content-range"] = body.content_range
    return StreamingResponse(body.chunks, status_code=body.status, headers=common, media_type=media_type)
