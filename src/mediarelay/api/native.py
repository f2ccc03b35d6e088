"""The parts of the native API beyond submit/status/cancel: the task list and the SSE event stream."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from mediarelay.api.errors import refuse_nul
from mediarelay.api.routes import json_response, key_dependency, owned_task, services
from mediarelay.api.views import View
from mediarelay.dialects import native
from mediarelay.domain import Operation, Status, invalid
from mediarelay.store.keys import ApiKey

router = APIRouter(tags=[native.dialect.title], dependencies=[Depends(refuse_nul)])
require_key = key_dependency(native.dialect)


@router.get("/v1/tasks", summary="List tasks of every dialect, newest first, with filters and a cursor")
async def list_tasks(
    request: Request,
    key: ApiKey = Depends(require_key),
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, description="a task id from the previous page: continue after it"),
    order: Literal["asc", "desc"] = Query("desc"),
    status: list[Status] = Query(default_factory=list),
    dialect: str | None = Query(None),
    model: str | None = Query(None),
    operation: Operation | None = Query(None),
    created_after: int | None = Query(None, description="epoch milliseconds, inclusive"),
    created_before: int | None = Query(None, description="epoch milliseconds, exclusive"),
    key_id: str | None = Query(None, description="admin keys only: one key's tasks (default: all keys)"),
    id: list[str] = Query(
        default_factory=list,
        description="only these tasks (task ids or public ids, at most 100), in this order; other filters "
        "and the cursor are ignored (relay channels batch their polls with it)",
    ),
) -> Response:
    svc = services(request)
    if id:
        return await tasks_by_id(request, key, id)
    after_seq = None
    if after:
        cursor = await asyncio.to_thread(svc.tasks.get, after)
        if cursor is None or (cursor.key_id != key.id and not key.is_admin):
            raise invalid("after: not a task id of yours", "after")
        after_seq = cursor.seq
    owner = (key_id or None) if key.is_admin else key.id
    page = await asyncio.to_thread(
        lambda: svc.tasks.page(
            key_id=owner,
            limit=limit + 1,
            after_seq=after_seq,
            descending=order == "desc",
            dialect=dialect,
            statuses=[s.value for s in status],
            model=model,
            operation=operation.value if operation else None,
            created_after=created_after,
            created_before=created_before,
        )
    )
    has_more = len(page) > limit
    page = page[:limit]
    data: list[Any] = []
    for task in page:
        children = (
            tuple(await asyncio.to_thread(svc.tasks.children, task.id)) if task.params.get("fanout") else ()
        )
        data.append(orjson.loads(svc.views.render(task, children, native.NAME).body))
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": has_more,
        }
    )


async def tasks_by_id(request: Request, key: ApiKey, ids: list[str]) -> Response:
    """The caller's tasks among `ids`, from the render-on-write cache; unknown and foreign ids are left
    out (no error: the answer says as much as a 404 would, and no more)."""
    if len(ids) > 100:
        raise invalid("id: at most 100 ids per request", "id")
    svc = services(request)
    views: list[View] = []
    for ident in dict.fromkeys(ids):
        view = svc.views.get_native(ident) or await svc.views.load_native(ident)
        if view is not None and (view.key_id == key.id or key.is_admin):
            views.append(view)
    edges = orjson.dumps(
        {"first_id": views[0].task_id if views else None, "last_id": views[-1].task_id if views else None}
    )
    data = b",".join(v.body for v in views)
    body = b'{"object":"list","data":[' + data + b"]," + edges[1:-1] + b',"has_more":false}'
    return Response(body, media_type="application/json")


def _event(view: View) -> ServerSentEvent:
    return ServerSentEvent(data=view.body.decode(), event="task", id=str(view.version))


@router.get(
    "/v1/tasks/{task_id}/events",
    summary="Stream the task's changes as server-sent events until it finishes",
    response_class=EventSourceResponse,
)
async def task_events(
    request: Request, task_id: str, key: ApiKey = Depends(require_key)
) -> EventSourceResponse:
    """Each event is the task's native view (`event: task`, `id:` its version), in version order; the
    first is the current state (unless `Last-Event-ID` already has it), the last is terminal."""
    svc = services(request)
    task = await owned_task(svc, native.dialect, task_id, key)
    queue = svc.views.subscribe(task.id)  # before reading the current state: no change slips between
    current = svc.views.get_native(task.id) or await svc.views.load_native(task.id)
    try:
        seen = int(request.headers.get("last-event-id", "-1"))
    except ValueError:
        seen = -1

    async def stream() -> AsyncIterator[ServerSentEvent]:
        nonlocal seen
        try:
            view = current
            while view is not None:
                if view.version > seen:
                    seen = view.version
                    yield _event(view)
                if view.status.terminal or svc.views.draining:
                    return  # draining: the client reconnects with Last-Event-ID
                view = await queue.get()
        finally:
            svc.views.unsubscribe(task.id, queue)

    return EventSourceResponse(stream(), ping=15)
