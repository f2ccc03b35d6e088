"""FastAPI routes built from each dialect's descriptor: submit, status, cancel and extras.

Status routes here are the documented (OpenAPI) twins of the fast ASGI path, which answers them first.
(No `from __future__ import annotations` here: FastAPI must see the real body model types.)
"""

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from mediarelay.api.services import Services
from mediarelay.dialects.base import Dialect, ExtraRoute
from mediarelay.domain import Task, TaskSpec, not_found
from mediarelay.store.keys import ApiKey

SANDBOX_HEADERS = {"x-sandbox-fail": "fail", "x-sandbox-duration": "duration", "x-sandbox-queue": "queue"}
Endpoint = Callable[..., Awaitable[Response]]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def sandbox_controls(spec: TaskSpec, headers: Mapping[str, str]) -> TaskSpec:
    """Copy `X-Sandbox-*` request headers into the spec (and its children) for the sandbox channel."""
    controls: dict[str, Any] = {}
    for header, name in SANDBOX_HEADERS.items():
        value = headers.get(header)
        if value is None:
            continue
        if name == "fail":
            controls[name] = value or True
            continue
        try:
            controls[name] = max(0.0, min(float(value), 3600.0))
        except ValueError:
            continue
    if not controls:
        return spec

    def apply(s: TaskSpec) -> TaskSpec:
        return dataclasses.replace(s, params={**s.params, "sandbox": controls})

    return dataclasses.replace(apply(spec), children=tuple(apply(c) for c in spec.children))


def key_dependency(dialect: Dialect) -> Callable[[Request], Awaitable[ApiKey]]:
    async def require_key(request: Request) -> ApiKey:
        return await services(request).auth.require(
            request.headers.get("authorization"), bare_ok=dialect.bare_key
        )

    return require_key


def with_id_param(handler: Endpoint, dialect: Dialect) -> Endpoint:
    """Expose the handler's `public_id` argument under the dialect's published name, in path or query."""
    name = dialect.status_param
    marker = Path(description="the task id") if dialect.status_in_path else Query(description="the task id")
    sig = inspect.signature(handler)
    params = [
        p.replace(name=name, default=marker) if p.name == "public_id" else p for p in sig.parameters.values()
    ]

    async def endpoint(**kwargs: Any) -> Response:
        kwargs["public_id"] = kwargs.pop(name)
        return await handler(**kwargs)

    endpoint.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    endpoint.__name__ = handler.__name__
    return endpoint


async def owned_task(svc: Services, dialect: Dialect, public_id: str, key: ApiKey) -> Task:
    """The caller's task of this dialect, or the same not-found as for a task that does not exist.

    A dialect with `any_task` (native) addresses every dialect's tasks, by task id or public id.
    """
    task = await asyncio.to_thread(svc.tasks.by_public_id, public_id)
    if task is None and dialect.any_task and len(public_id) == 26:
        task = await asyncio.to_thread(svc.tasks.get, public_id)
    wrong_dialect = task is not None and task.dialect != dialect.name and not dialect.any_task
    if task is None or wrong_dialect or (task.key_id != key.id and not key.is_admin):
        raise not_found()
    return task


def dialect_router(dialect: Dialect) -> APIRouter:
    router = APIRouter(tags=[dialect.title])
    model = dialect.submit_model
    require_key = key_dependency(dialect)

    async def submit(request: Request, body: model, key: ApiKey = Depends(require_key)) -> Response:  # type: ignore[valid-type]
        spec = sandbox_controls(dialect.parse(body), request.headers)
        task = await services(request).engine.submit(spec, key.id)
        return json_response(dialect.accepted(task))

    router.add_api_route(
        dialect.submit_path, submit, methods=["POST"], summary=f"Submit a {dialect.title} task"
    )

    async def status(
        request: Request,
        public_id: str,
        wait: str | None = Query(None, description="hold the answer until the task changes, ≤ 60 s"),
    ) -> Response:
        answer = await services(request).status.answer(
            dialect,
            request.url.path,
            public_id,
            request.headers.get("authorization"),
            request.headers.get("if-none-match"),
            wait,
        )
        headers = {k.decode(): v.decode() for k, v in answer.headers}
        return Response(answer.body, status_code=answer.status, headers=headers)

    router.add_api_route(
        dialect.status_path,
        with_id_param(status, dialect),
        methods=["GET"],
        summary=f"Query a {dialect.title} task",
    )

    if dialect.cancel_path:

        async def cancel(request: Request, public_id: str, key: ApiKey = Depends(require_key)) -> Response:
            svc = services(request)
            task = await svc.engine.cancel(await owned_task(svc, dialect, public_id, key))
            view = await svc.views.refresh(task)
            if dialect.any_task:
                view = svc.views.get_native(task.id) or view
            return Response(view.body, media_type="application/json", headers={"etag": view.etag})

        router.add_api_route(
            dialect.cancel_path,
            with_id_param(cancel, dialect),
            methods=[dialect.cancel_method],
            summary=f"Cancel a {dialect.title} task (mediarelay extension)",
        )

    for extra in dialect.extra_routes:
        router.add_api_route(
            extra.path, extra_endpoint(dialect, extra), methods=[extra.method], summary=extra.summary
        )
    return router


def extra_endpoint(dialect: Dialect, extra: ExtraRoute) -> Endpoint:
    require_key = key_dependency(dialect)

    async def handler(request: Request, key: ApiKey = Depends(require_key)) -> Response:
        return json_response(extra.handler(request.query_params, services(request).catalog))

    return handler
