"""FastAPI routes built from each dialect's descriptor: submit, status, cancel and extras.

Status routes here are the documented (OpenAPI) twins of the fast ASGI path, which answers them first.
(No `from __future__ import annotations` here: FastAPI must see the real body model types.)
"""

import asyncio
import dataclasses
import inspect
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import Response

from mediarelay.api.admission import IDEMPOTENCY_OPENAPI, REPLAYED, admit, file_digests, submit_admitted
from mediarelay.api.errors import refuse_nul
from mediarelay.api.files import serve_stored
from mediarelay.api.services import Services
from mediarelay.api.webhooks import check_webhook_url
from mediarelay.dialects.base import (
    ContentRoute,
    DeleteRoute,
    Dialect,
    ExtraRoute,
    ListRoute,
    RemixRoute,
    RenderContext,
    Upload,
)
from mediarelay.dialects.common import validation_error
from mediarelay.domain import (
    NUL_MESSAGE,
    MediarelayError,
    Status,
    Task,
    TaskSpec,
    contains_nul,
    invalid,
    not_found,
)
from mediarelay.netguard import NetGuard
from mediarelay.store.keys import ApiKey

SANDBOX_HEADERS = {
    "x-sandbox-fail": "fail",
    "x-sandbox-duration": "duration",
    "x-sandbox-queue": "queue",
    "x-sandbox-output-seconds": "output_seconds",
}
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


def webhook_controls(spec: TaskSpec, headers: Mapping[str, str], guard: NetGuard) -> TaskSpec:
    """The submission's callback URL (docs/webhooks.md): `X-Webhook-Url`, or the dialect's own body field
    that `parse` put in `params["webhook_url"]`. Checked before anything is stored; copied to children."""
    header = headers.get("x-webhook-url")
    url = check_webhook_url(header.strip(), guard, "X-Webhook-Url") if header is not None else None
    if field_url := spec.params.get("webhook_url"):
        field = next((k for k, v in spec.request.items() if v == field_url), "webhook_url")
        field_url = check_webhook_url(field_url, guard, field)
        if url is not None and url != field_url:
            raise invalid(f"X-Webhook-Url and {field} disagree: give one of them", field)
        url = field_url
    if url is None:
        return spec

    def apply(s: TaskSpec) -> TaskSpec:
        return dataclasses.replace(s, params={**s.params, "webhook_url": url})

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
    router = APIRouter(tags=[dialect.title], dependencies=[Depends(refuse_nul)])
    model = dialect.submit_model
    require_key = key_dependency(dialect)

    async def submit(request: Request, body: model, key: ApiKey = Depends(require_key)) -> Response:  # type: ignore[valid-type]
        svc = services(request)

        def spec() -> TaskSpec:
            parsed = sandbox_controls(dialect.parse(body), request.headers)
            return webhook_controls(parsed, request.headers, svc.webhooks.guard)

        payload, headers = await submit_admitted(svc, dialect, request, key, spec)
        return json_response(payload, headers=headers)

    if dialect.upload_fields:  # JSON or multipart/form-data with files
        add_upload_submit(router, dialect)
    else:
        router.add_api_route(
            dialect.submit_path,
            submit,
            methods=["POST"],
            summary=f"Submit a {dialect.title} task",
            openapi_extra=IDEMPOTENCY_OPENAPI,
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
    add_resource_routes(router, dialect)
    return router


def extra_endpoint(dialect: Dialect, extra: ExtraRoute) -> Endpoint:
    require_key = key_dependency(dialect)

    async def handler(request: Request, key: ApiKey = Depends(require_key)) -> Response:
        return json_response(extra.handler(request.query_params, services(request).catalog))

    return handler


# -- submit with file uploads (JSON or multipart/form-data) -------------------------------------------

FORM_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
MAX_FORM_FIELDS = 100


def nest_form(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields to a JSON-like dict: `a[b]=1` -> {"a": {"b": "1"}}, `a[]=1&a[]=2` -> {"a": ["1", "2"]}
    (the bracket style the openai SDK uses for objects in multipart bodies)."""
    data: dict[str, Any] = {}
    for key, value in items:
        match = FORM_KEY.match(key)
        if match is None:
            raise invalid(f"{key}: not a valid form field name", key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                raise invalid(f"{key}: cannot nest inside a list field", path[0])
            if part == "" and i > 0:
                raise invalid(f"{key}: list fields must be last", path[0])
            nxt = path[i + 1] if not last else None
            if last:
                node[part] = value
            elif nxt == "":
                lst = node.setdefault(part, [])
                if not isinstance(lst, list):
                    raise invalid(f"{key}: given both as a value and as a list", path[0])
                lst.append(value)
                break
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(f"{key}: given both as a value and as an object", path[0])
                node = child
    return data


def safe_filename(name: str, fallback: str) -> str:
    """A storage-safe file name from a client's: letters, digits, `._-`, no leading dot, ≤ 100 chars."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:100]
    return cleaned or fallback


def json_schema_inline(model: Any) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined (OpenAPI `requestBody` cannot point into them)."""
    schema: dict[str, Any] = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


async def read_submit_body(
    request: Request, dialect: Dialect
) -> tuple[dict[str, Any] | Any, list[tuple[str, UploadFile]]]:
    """The submit body as JSON-like data plus its file parts (multipart), or the parsed JSON."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=len(dialect.upload_fields), max_fields=MAX_FORM_FIELDS)
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, UploadFile]] = []
        try:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    fields.append((name, value))
                elif name not in dialect.upload_fields:
                    raise invalid(f"{name}: a file is not accepted here", name)
                elif value.filename or value.size:  # browsers send an empty part for "no file chosen"
                    if any(n == name for n, _ in files):
                        raise invalid(f"{name}: give one file", name)
                    files.append((name, value))
            if contains_nul(fields):
                raise invalid(NUL_MESSAGE)
            return nest_form(fields), files
        except BaseException:
            await form.close()
            raise
    raw = await request.body()
    if not raw.strip():
        return {}, []
    try:
        return orjson.loads(raw), []
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None


async def describe_upload(svc: Services, field: str, upload: UploadFile) -> tuple[Upload, str]:
    """The dialect's view of an upload (first bytes, size, future URL) and the storage key it will get."""
    head = await upload.read(64)
    await upload.seek(0)
    size = upload.size
    if size is None:
        size = await asyncio.to_thread(lambda: upload.file.seek(0, 2))
        await upload.seek(0)
    name = safe_filename(upload.filename or "", field)
    # [MR] Two segments, so `/files/{dir}/{name}` serves it; the random part is the capability.
    key = f"inputs-{secrets.token_hex(16)}/{name}"
    described = Upload(
        field=field,
        filename=upload.filename or "",
        content_type=upload.content_type or "application/octet-stream",
        size=size,
        head=head,
        url=f"{svc.views.base_url}/files/{key}",
    )
    return described, key


def store_upload(svc: Services, upload: UploadFile, key: str) -> None:
    staging = svc.storage.new_staging_path(".upload")
    try:
        upload.file.seek(0)
        with staging.open("wb") as out:
            shutil.copyfileobj(upload.file, out)
        svc.storage.put(key, staging)
    finally:
        staging.unlink(missing_ok=True)


def add_upload_submit(router: APIRouter, dialect: Dialect) -> None:
    """Submit that takes JSON or multipart/form-data with files in `dialect.upload_fields`.

    The whole request (fields, then files) is validated before anything is stored; then the files are
    stored under `inputs-<random>/<name>` and the task refers to them by mediarelay's own file URL.
    """
    require_key = key_dependency(dialect)

    async def submit(request: Request, key: ApiKey = Depends(require_key)) -> Response:
        data, files = await read_submit_body(request, dialect)
        try:
            return await submit_with(request, key, data, files)
        finally:
            for _, upload in files:  # spooled temporary files: gone once closed
                await upload.close()

    async def submit_with(
        request: Request, key: ApiKey, data: Any, files: list[tuple[str, UploadFile]]
    ) -> Response:
        svc = services(request)
        try:
            body = dialect.submit_model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        original, idem = await admit(svc, request, key, data, await file_digests(files))
        if original is not None:
            return json_response(dialect.accepted(original), headers=REPLAYED)
        spec = webhook_controls(dialect.parse(body), request.headers, svc.webhooks.guard)
        stored: list[str] = []
        if files:
            described = [await describe_upload(svc, name, f) for name, f in files]
            if dialect.attach_uploads is None:
                raise invalid(f"{files[0][0]}: a file is not accepted here", files[0][0])
            spec = dialect.attach_uploads(spec, [d for d, _ in described])
            try:
                for (_, upload), (_, storage_key) in zip(files, described, strict=True):
                    await asyncio.to_thread(store_upload, svc, upload, storage_key)
                    stored.append(storage_key)
            except BaseException:
                await asyncio.to_thread(remove_keys, svc, stored)
                raise
            spec = dataclasses.replace(spec, params={**spec.params, "uploads": stored})
        spec = sandbox_controls(spec, request.headers)
        try:
            task = await svc.engine.submit(spec, key.id, idempotency=idem)
        except BaseException:
            await asyncio.to_thread(remove_keys, svc, stored)
            raise
        return json_response(dialect.accepted(task))

    schema = json_schema_inline(dialect.submit_model)
    form_schema = {
        **schema,
        "properties": {
            **schema.get("properties", {}),
            **{f: {"type": "string", "format": "binary"} for f in dialect.upload_fields},
        },
    }
    router.add_api_route(
        dialect.submit_path,
        submit,
        methods=["POST"],
        summary=f"Submit a {dialect.title} task",
        openapi_extra={
            **IDEMPOTENCY_OPENAPI,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "multipart/form-data": {"schema": form_schema},
                },
            },
        },
    )


def remove_keys(svc: Services, keys: list[str]) -> None:
    for storage_key in keys:
        svc.storage.remove(storage_key)


# -- resource endpoints: list, delete, content, remix ---------------------------------------------------


def add_resource_routes(router: APIRouter, dialect: Dialect) -> None:
    """The optional resource-style endpoints a dialect's descriptor declares (OpenAI videos has all)."""
    if dialect.list_route:
        router.add_api_route(
            dialect.list_route.path,
            list_endpoint(dialect, dialect.list_route),
            methods=["GET"],
            summary=f"List {dialect.title} tasks",
        )
    if dialect.delete_route:
        router.add_api_route(
            dialect.delete_route.path,
            with_id_param(delete_endpoint(dialect, dialect.delete_route), dialect),
            methods=[dialect.delete_route.method],
            summary=f"Delete a {dialect.title} task and its files",
        )
    if dialect.content_route:
        router.add_api_route(
            dialect.content_route.path,
            with_id_param(content_endpoint(dialect, dialect.content_route), dialect),
            methods=["GET"],
            summary=f"Download a {dialect.title} result",
            response_class=Response,
        )
    if dialect.remix_route:
        router.add_api_route(
            dialect.remix_route.path,
            with_id_param(remix_endpoint(dialect, dialect.remix_route), dialect),
            methods=["POST"],
            summary=f"Remix a {dialect.title} task",
            openapi_extra=IDEMPOTENCY_OPENAPI,
        )


def list_endpoint(dialect: Dialect, route: ListRoute) -> Endpoint:
    require_key = key_dependency(dialect)

    async def handler(request: Request, key: ApiKey = Depends(require_key)) -> Response:
        svc = services(request)
        query = route.parse(request.query_params)
        after_seq: int | None = None
        if query.after is not None:
            try:
                cursor = await owned_task(svc, dialect, query.after, key)
            except MediarelayError:
                # [MR] unknown, foreign and deleted cursors alike: a parameter error, not an empty page
                raise invalid(f"{query.after_param}: no such id", query.after_param) from None
            after_seq = cursor.seq
        found = await asyncio.to_thread(
            svc.tasks.page,
            key_id=None if key.is_admin else key.id,
            limit=query.limit + 1,
            after_seq=after_seq,
            descending=query.descending,
            dialect=dialect.name,
        )
        ctx = RenderContext(url=svc.views.url)
        items = [dialect.render(t, ctx) for t in found[: query.limit]]
        return json_response(route.render(items, len(found) > query.limit))

    return handler


def delete_endpoint(dialect: Dialect, route: DeleteRoute) -> Endpoint:
    require_key = key_dependency(dialect)

    async def handler(request: Request, public_id: str, key: ApiKey = Depends(require_key)) -> Response:
        svc = services(request)
        task = await owned_task(svc, dialect, public_id, key)
        if not task.status.terminal:
            task = await svc.engine.cancel(task)
        removed = await asyncio.to_thread(svc.tasks.delete, task)
        for gone in removed:
            svc.views.drop(gone.id)
        await asyncio.to_thread(remove_task_files, svc, removed)
        return json_response(route.render(task))

    return handler


def remove_task_files(svc: Services, removed: list[Task]) -> None:
    """A deleted task's result directory and the inputs uploaded with it."""
    for gone in removed:
        svc.storage.remove_tree(gone.id)
        remove_keys(svc, [str(k) for k in gone.params.get("uploads") or ()])


def content_endpoint(dialect: Dialect, route: ContentRoute) -> Endpoint:
    require_key = key_dependency(dialect)

    async def handler(request: Request, public_id: str, key: ApiKey = Depends(require_key)) -> Response:
        svc = services(request)
        task = await owned_task(svc, dialect, public_id, key)
        variant = request.query_params.get(route.param, route.default)
        role = route.variants.get(variant)
        if role is None:
            choices = ", ".join(route.variants)
            raise invalid(f"{route.param}: must be one of {choices}", route.param)
        if task.status is not Status.SUCCEEDED:
            raise route.not_ready(task)
        asset = task.first_asset(role)
        found = None
        if asset is not None:
            etag = f'"{asset.sha256[:32]}"'
            headers = {"etag": etag, "cache-control": "private, max-age=86400", "accept-ranges": "bytes"}
            # Always the bytes (never a redirect to a presigned URL), as the API this mimics answers.
            found = await serve_stored(request, svc.storage, asset.key, asset.mime, headers, redirect=False)
        if found is None:
            raise not_found(f"this task has no {variant}")
        return found

    return handler


def remix_endpoint(dialect: Dialect, route: RemixRoute) -> Endpoint:
    require_key = key_dependency(dialect)
    model = route.body_model

    async def handler(
        request: Request,
        body: model,  # type: ignore[valid-type]
        public_id: str,  # after `body`: with_id_param gives it a default
        key: ApiKey = Depends(require_key),
    ) -> Response:
        svc = services(request)
        source = await owned_task(svc, dialect, public_id, key)
        original, idem = await admit(svc, request, key)
        if original is not None:
            return json_response(dialect.accepted(original), headers=REPLAYED)
        spec = route.parse(body, source, RenderContext(url=svc.views.url))
        spec = webhook_controls(sandbox_controls(spec, request.headers), request.headers, svc.webhooks.guard)
        task = await svc.engine.submit(spec, key.id, idempotency=idem)
        return json_response(dialect.accepted(task))

    return handler
