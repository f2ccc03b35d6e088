"""Result files at stable URLs: `/files/<task id>/<name>`, with Range support and long-lived caching.

A stored file never changes (its name is tied to its task and role), so it can be cached for a year;
Starlette's ETag (size and mtime) drives conditional GETs. The path itself is the capability: task
ids are unguessable.
"""

import mimetypes

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from mediarelay.api.routes import services
from mediarelay.domain import not_found

router = APIRouter(tags=["Files"])

mimetypes.add_type("image/webp", ".webp")
CACHING = {"cache-control": "public, max-age=31536000, immutable", "accept-ranges": "bytes"}


@router.api_route("/files/{task_id}/{name}", methods=["GET", "HEAD"], summary="Download a result file")
async def get_file(request: Request, task_id: str, name: str) -> Response:
    storage = services(request).storage
    try:
        path = storage.path(f"{task_id}/{name}")
    except ValueError:
        raise not_found("file not found") from None
    if name.startswith(".") or not path.is_file():
        raise not_found("file not found")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = FileResponse(path, media_type=media_type, headers=CACHING, stat_result=path.stat())
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and response.headers["etag"] in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers={**CACHING, "etag": response.headers["etag"]})
    return response
