"""Webhooks in the API layer: each key's default URL and secret, the delivery log, and the event payloads.

The payload carries the task's view in its own dialect, which only this layer can render; the delivery
loop (`engine/webhooks.py`) gets the renderer injected. A payload is rendered by the engine listener right
after the change it reports (so it shows exactly that version) and frozen in the outbox row; if the
process stopped before that, the first delivery attempt renders it from the task as it is then.
(No `from __future__ import annotations` here: FastAPI must see the real body model types.)
"""

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mediarelay.api.auth import Authenticator
from mediarelay.api.errors import refuse_nul
from mediarelay.api.views import ViewCache
from mediarelay.config import WebhookSettings
from mediarelay.dialects.base import RenderContext
from mediarelay.dialects.common import check_url
from mediarelay.domain import ErrorKind, MediarelayError, Status, Task, invalid, not_found
from mediarelay.engine.webhooks import WebhookDispatcher
from mediarelay.netguard import Blocked, NetGuard
from mediarelay.store.database import Database
from mediarelay.store.keys import ApiKey
from mediarelay.store.tasks import TaskRepo
from mediarelay.store.webhooks import PENDING, STATES, WebhookEvent, WebhookQueue, WebhookRepo

MAX_REMEMBERED = 100_000


def check_webhook_url(url: str, guard: NetGuard, param: str) -> str:
    """A callback URL's form and, for a literal IP host, its address; raises a 400 naming `param`."""
    try:
        url = check_url(url)
        guard.check_url(url)
    except (ValueError, Blocked) as exc:
        raise invalid(f"{param}: {exc}", param) from None
    return url


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: WebhookEvent, task: Task, view: dict[str, Any]) -> str:
    """The Standard Webhooks body: `{type, timestamp, data}`; `data.view` is the dialect's status view."""
    failed = event.task_status in (Status.FAILED.value, Status.CANCELED.value) and task.error_code
    data = {
        "task_id": task.id,
        "public_id": task.public_id,
        "dialect": task.dialect,
        "status": event.task_status,
        "version": event.version,
        "error": {"code": task.error_code, "message": task.error_message} if failed else None,
        "view": view,
    }
    return orjson.dumps({"type": event.type, "timestamp": iso_ms(event.created_at), "data": data}).decode()


class Webhooks:
    """The webhook feature of a running node: address guard, outbox repository, renderer, delivery loop."""

    def __init__(
        self,
        settings: WebhookSettings,
        db: Database,
        tasks: TaskRepo,
        views: ViewCache,
        queue: WebhookQueue | None = None,
    ) -> None:
        self.settings = settings
        self.guard = NetGuard(
            allow_private=settings.allow_private,
            allowed_hosts=settings.allowed_hosts,
            timeout=settings.timeout_seconds,
        )
        self.repo = WebhookRepo(db, queue)  # scaled out: redeliveries defer a job
        self.tasks = tasks
        self.views = views  # its dialects and its file-URL builder
        self.dispatcher: WebhookDispatcher | None = None
        self._last: dict[str, Status] = {}  # last status seen per active task: skip writes that keep it

    def start(self, *, loop: bool = True) -> None:
        """Start delivering: with the scan loop (embedded), or (`loop=False`) only for `deliver_task`,
        which the scaled-out mode's delivery jobs call."""
        s = self.settings
        self.dispatcher = WebhookDispatcher(
            self.repo,
            self.guard,
            self.render_event,
            schedule=s.retry_schedule,
            timeout=s.timeout_seconds,
            concurrency=s.concurrency,
        )
        if loop:
            self.dispatcher.start()

    async def deliver_task(self, task_id: str) -> int | None:
        assert self.dispatcher is not None, "start(loop=False) first"
        return await self.dispatcher.deliver_task(task_id)

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()

    async def _view(self, task: Task) -> dict[str, Any]:
        children: tuple[Task, ...] = ()
        if task.params.get("fanout"):
            children = tuple(await asyncio.to_thread(self.tasks.children, task.id))
        view: dict[str, Any] = self.views.dialects[task.dialect].render(
            task, RenderContext(url=self.views.url, children=children)
        )
        return view

    async def on_change(self, task: Task) -> None:
        """Engine listener: freeze the payload of the event this exact task version produced, if any."""
        if task.parent_id is not None:
            return
        previous = self._last.get(task.id)
        if task.status.terminal:
            self._last.pop(task.id, None)
        else:
            if len(self._last) >= MAX_REMEMBERED:
                self._last.clear()
            self._last[task.id] = task.status
        if previous is task.status or task.status is Status.QUEUED:
            return  # no status change, so no event (queued makes none)
        event = await asyncio.to_thread(self.repo.for_task_version, task.id, task.version)
        if event is None:
            return
        if event.payload is None:
            body = event_payload(event, task, await self._view(task))
            await asyncio.to_thread(self.repo.set_payload, event.seq, body)
        if self.dispatcher is not None:
            self.dispatcher.wake()

    async def render_event(self, event: WebhookEvent) -> str | None:
        """Fallback for an event whose payload was never frozen: render the task as it is now."""
        task = await asyncio.to_thread(self.tasks.get, event.task_id)
        if task is None:
            return None
        return event_payload(event, task, await self._view(task))


# -- routes ---------------------------------------------------------------------------------------------

router = APIRouter(tags=["Webhooks"], dependencies=[Depends(refuse_nul)])


def _hooks(request: Request) -> Webhooks:
    hooks: Webhooks = request.app.state.services.webhooks
    return hooks


async def _key(request: Request) -> ApiKey:
    auth: Authenticator = request.app.state.services.auth
    return await auth.require(request.headers.get("authorization"))


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _endpoint(url: str | None, secret: str) -> dict[str, Any]:
    return {"object": "webhook_endpoint", "url": url, "secret": secret}


class EndpointUpdate(BaseModel):
    """PUT /v1/webhook: set the key's default callback URL (null clears it) and/or rotate its secret."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="default callback URL; omit to keep, null to clear")
    rotate_secret: bool = Field(default=False, description="replace the signing secret with a new one")


@router.get("/v1/webhook", summary="The caller's default webhook URL and signing secret")
async def get_endpoint(request: Request) -> Response:
    key = await _key(request)
    url, secret = await asyncio.to_thread(_hooks(request).repo.key_settings, key.id)
    return _json(_endpoint(url, secret))


@router.put("/v1/webhook", summary="Set the default webhook URL and/or rotate the signing secret")
async def put_endpoint(request: Request, body: EndpointUpdate) -> Response:
    key = await _key(request)
    hooks = _hooks(request)
    url = body.url
    if url is not None:
        url = check_webhook_url(url, hooks.guard, "url")
    keep = "url" not in body.model_fields_set
    url, secret = await asyncio.to_thread(
        hooks.repo.set_key_settings, key.id, url=url, keep_url=keep, rotate=body.rotate_secret
    )
    return _json(_endpoint(url, secret))


@router.delete("/v1/webhook", summary="Remove the default webhook URL (the secret stays)")
async def delete_endpoint(request: Request) -> Response:
    key = await _key(request)
    url, secret = await asyncio.to_thread(_hooks(request).repo.set_key_settings, key.id, url=None)
    return _json(_endpoint(url, secret))


def delivery_json(event: WebhookEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "webhook.delivery",
        "type": event.type,
        "task_id": event.task_id,
        "public_id": event.public_id,
        "dialect": event.dialect,
        "task_status": event.task_status,
        "version": event.version,
        "url": event.url,
        "status": event.state,
        "attempt_count": event.attempts,
        "attempts": [
            {
                "attempt": a.attempt,
                "at": a.at,
                "duration_ms": a.duration_ms,
                "http_status": a.http_status,
                "error": a.error,
                "response": a.response,
            }
            for a in event.log
        ],
        "next_attempt_at": event.next_attempt_at if event.state == PENDING else None,
        "delivered_at": event.delivered_at,
        "created_at": event.created_at,
        "updated_at": event.updated_at,
        "payload": orjson.loads(event.payload) if event.payload else None,
    }


@router.get("/v1/webhooks/deliveries", summary="The delivery log: events and their attempts, newest first")
async def list_deliveries(
    request: Request,
    task_id: str | None = Query(None, description="a task id or public id"),
    status: Literal["pending", "delivered", "failed"] | None = Query(None, description=", ".join(STATES)),
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, description="the id of the last delivery of the previous page"),
) -> Response:
    key = await _key(request)
    found = await asyncio.to_thread(
        _hooks(request).repo.page,
        key_id=None if key.is_admin else key.id,
        limit=limit + 1,
        after=after,
        task_id=task_id,
        state=status,
    )
    page = found[:limit]
    return _json(
        {
            "object": "list",
            "data": [delivery_json(e) for e in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(found) > limit,
        }
    )


async def _owned(request: Request, delivery_id: str) -> tuple[Webhooks, WebhookEvent]:
    key = await _key(request)
    hooks = _hooks(request)
    event = await asyncio.to_thread(hooks.repo.get, delivery_id)
    if event is None or (event.key_id != key.id and not key.is_admin):
        raise not_found("webhook delivery not found")
    return hooks, event


@router.get("/v1/webhooks/deliveries/{delivery_id}", summary="One delivery with its attempts")
async def get_delivery(request: Request, delivery_id: str) -> Response:
    _, event = await _owned(request, delivery_id)
    return _json(delivery_json(event))


@router.post("/v1/webhooks/deliveries/{delivery_id}/retry", summary="Send a finished delivery once more")
async def retry_delivery(request: Request, delivery_id: str) -> Response:
    hooks, event = await _owned(request, delivery_id)
    if event.state == PENDING:
        raise MediarelayError(ErrorKind.CONFLICT, "the delivery is still pending: it is retried anyway")
    await asyncio.to_thread(hooks.repo.redeliver, event.id)
    if hooks.dispatcher is not None:
        hooks.dispatcher.wake()
    refreshed = await asyncio.to_thread(hooks.repo.get, event.id)
    assert refreshed is not None
    return _json(delivery_json(refreshed))
