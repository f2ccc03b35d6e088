"""The OpenAPI document's error answers, declared the way the server renders them: by path.

Routes return plain `Response`s and every error goes through `ErrorRenderer`, where the path decides the
envelope. So the document is completed here, once, with the same rule: each operation gets the error
statuses it can answer, each with its dialect's envelope, and FastAPI's generic 422 is dropped (request
validation errors are the dialect's invalid-request answer: 400, or face swap's HTTP 200 with code 800).
The fuzz test (tests/api/test_fuzz.py) checks every answer against this document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mediarelay.api.errors import ErrorRenderer
from mediarelay.dialects.base import Dialect
from mediarelay.domain import HTTP_STATUS, ErrorKind, MediarelayError

REF = "#/components/schemas/"
_MESSAGE = {"type": "string"}
_OPENAI_BODY = {"message": _MESSAGE, "type": {"type": "string"}, "code": {"type": "string"}}
ENVELOPES: dict[str, dict[str, Any]] = {
    # pika, unified video: OpenAI's shape without `param`
    "ErrorEnvelope": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "object", "required": list(_OPENAI_BODY), "properties": _OPENAI_BODY}
        },
    },
    # native, OpenAI videos, and every path no dialect owns
    "OpenAIErrorEnvelope": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": [*_OPENAI_BODY, "param"],
                "properties": {**_OPENAI_BODY, "param": {"type": ["string", "null"]}},
            }
        },
    },
    "AvatarErrorEnvelope": {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {"code": {"type": "string"}, "message": _MESSAGE, "data": {"type": "null"}},
    },
    "FaceSwapErrorEnvelope": {
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {"code": {"type": "integer"}, "msg": _MESSAGE, "data": {"type": "null"}},
    },
}
ENVELOPE_OF = {"avatar": "AvatarErrorEnvelope", "faceswap": "FaceSwapErrorEnvelope"}
ENVELOPE_OF |= dict.fromkeys(("pika", "unified_video"), "ErrorEnvelope")
DESCRIPTIONS = {
    ErrorKind.INVALID_REQUEST: "invalid request",
    ErrorKind.UNAUTHORIZED: "missing or invalid API key",
    ErrorKind.FORBIDDEN: "the key may not do this",
    ErrorKind.NOT_FOUND: "not found",
    ErrorKind.CONFLICT: "conflict",
    ErrorKind.TOO_LARGE: "body too large",
    ErrorKind.INSUFFICIENT_QUOTA: "insufficient balance",
    ErrorKind.RATE_LIMITED: "rate limited (Retry-After)",
    ErrorKind.UNAVAILABLE: "no channel can take it now",
}


def _obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """An object schema: these fields always present with these types (more fields may follow)."""
    return {"type": "object", "required": list(required), "properties": {**required, **optional}}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NULLABLE_STR, NULLABLE_INT = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
# The 200 answers of each dialect's query (also its cancel) and submit: the published fields and JSON
# types of docs/dialects.md. Partial on purpose (the nested provider payloads are not spelled out), but
# every field listed is always present with that type.
STATUS_SCHEMAS: dict[str, dict[str, Any]] = {
    "avatar": _obj(
        {
            "id": STR,
            "animate_id": STR,
            "web_work_status": {"type": "integer", "enum": [0, 1, 200, -1]},
            "work_video_path": STR,
            "wm_work_video_path": STR,
            "no_wm_work_video_path": STR,
            "work_webp_path": STR,
            "create_time": INT,
            "file_type": STR,
            "animate_params_str": STR,
        },
        message=STR,
    ),
    "pika": _obj(
        {
            "id": STR,
            "videos": {
                "type": "array",
                "items": _obj(
                    {
                        "id": STR,
                        "status": {"enum": ["queued", "pending", "finished", "error"]},
                        "seed": INT,
                        "resultUrl": STR,
                        "videoPoster": STR,
                        "imageThumb": STR,
                        "duration": NUM,
                        "error": STR,
                        "progress": NUM,
                    }
                ),
            },
        },
        promptText=STR,
    ),
    "unified_video": _obj(
        {
            "id": STR,
            "status": {"enum": ["pending", "processing", "completed", "failed"]},
            "video_url": NULLABLE_STR,
            "status_update_time": INT,
        },
        failure_reason=NULLABLE_STR,
        enhanced_prompt=STR,
        detail={"type": "object"},
    ),
    "faceswap": _obj(
        {
            "code": {"const": 200},
            "msg": STR,
            "data": _obj(
                {
                    "taskId": INT,
                    "promptId": STR,
                    "taskType": INT,
                    "state": {"enum": [10, 20, 30, 2]},
                    "reason": STR,
                    "imageList": {"type": "array"},
                    "taskList": {"type": "array"},
                }
            ),
        }
    ),
    "openai_videos": _obj(
        {
            "id": STR,
            "object": {"const": "video"},
            "model": STR,
            "status": {"enum": ["queued", "in_progress", "completed", "failed"]},
            "progress": NUM,
            "created_at": INT,
            "completed_at": NULLABLE_INT,
            "expires_at": NULLABLE_INT,
            "seconds": STR,
            "size": STR,
            "error": {"anyOf": [{"type": "null"}, _obj({"code": STR, "message": STR})]},
        }
    ),
    "native": _obj(
        {
            "id": STR,
            "object": {"const": "task"},
            "dialect": STR,
            "public_id": STR,
            "model": STR,
            "operation": STR,
            "status": {"enum": ["queued", "running", "finalizing", "succeeded", "failed", "canceled"]},
            "progress": NUM,
            "outputs": {"type": "array", "items": _obj({"role": STR, "index": INT, "url": STR, "mime": STR})},
            "error": {"anyOf": [{"type": "null"}, _obj({"code": STR, "message": STR})]},
            "parent_id": NULLABLE_STR,
            "children": {"type": "array", "items": STR},
            "created_at": INT,
            "updated_at": INT,
            "version": INT,
        }
    ),
}
SUBMIT_SCHEMAS: dict[str, dict[str, Any]] = {
    "avatar": _obj({"code": {"const": "success"}, "message": STR, "data": STR}),
    "pika": _obj({"id": STR}),
    "unified_video": _obj({"id": STR, "status": STR, "status_update_time": INT}),
    "faceswap": _obj({"code": {"const": 200}, "msg": STR, "data": _obj({"promptId": STR, "taskId": INT})}),
    "openai_videos": STATUS_SCHEMAS["openai_videos"],
    "native": STATUS_SCHEMAS["native"],
}
PUBLIC = re.compile(r"^/(healthz|readyz|metrics|files/)")  # no key needed
ID_PARAMS = ("id", "promptId", "key_id")  # query parameters naming something that may not exist
# Conflicts besides an Idempotency-Key reused with another request.
CONFLICTS = re.compile(r"^/v1/admin/channels")


def error_kinds(path: str, method: str, op: dict[str, Any]) -> list[ErrorKind]:
    """The failure classes an operation can answer, from what it takes."""
    params = op.get("parameters", [])
    body = "requestBody" in op
    idempotent = any(p["name"] == "Idempotency-Key" for p in params)
    kinds = []
    if params or body or (method in ("post", "put", "patch") and not PUBLIC.match(path)):
        kinds.append(ErrorKind.INVALID_REQUEST)
    if not PUBLIC.match(path):
        kinds.append(ErrorKind.UNAUTHORIZED)
    if path.startswith("/v1/admin/"):
        kinds.append(ErrorKind.FORBIDDEN)
    if any(p["in"] == "path" for p in params) or any(p["name"] in ID_PARAMS for p in params):
        kinds.append(ErrorKind.NOT_FOUND)
    if idempotent or (CONFLICTS.match(path) and method != "get"):
        kinds.append(ErrorKind.CONFLICT)
    if body:
        kinds.append(ErrorKind.TOO_LARGE)
    if idempotent:
        kinds += [ErrorKind.INSUFFICIENT_QUOTA, ErrorKind.RATE_LIMITED, ErrorKind.UNAVAILABLE]
    return kinds


def add_success_schemas(document: dict[str, Any], dialects: Sequence[Dialect]) -> None:
    """The 200 body of each dialect's query, cancel and submit (FastAPI only knows `Response`)."""
    paths = document.get("paths", {})
    for d in dialects:
        routes = [(d.status_path, "get", STATUS_SCHEMAS), (d.submit_path, "post", SUBMIT_SCHEMAS)]
        if d.cancel_path:
            routes.append((d.cancel_path, d.cancel_method.lower(), STATUS_SCHEMAS))
        for path, method, table in routes:
            op = paths.get(path, {}).get(method)
            if op is not None and d.name in table:
                ok = op.setdefault("responses", {}).setdefault("200", {"description": "OK"})
                ok["content"] = {"application/json": {"schema": table[d.name]}}


def add_error_responses(document: dict[str, Any], errors: ErrorRenderer) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(ENVELOPES)
    for path, ops in document.get("paths", {}).items():
        dialect = errors.dialect_for(path)
        envelope = {"$ref": REF + ENVELOPE_OF.get(dialect.name if dialect else "", "OpenAIErrorEnvelope")}
        for method, op in ops.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            responses.pop("422", None)  # never answered: see the module docstring
            if any(p["name"] == "wait" for p in op.get("parameters", [])) or path.startswith("/files/"):
                responses.setdefault("304", {"description": "not modified (If-None-Match): empty body"})
            for kind in error_kinds(path, method, op):
                status = _status(errors, path, kind)
                if status == 200:  # face swap: HTTP 200 with an error code in the body
                    ok = responses["200"]["content"]["application/json"]
                    ok["schema"] = {"anyOf": [ok.get("schema") or {}, envelope]}
                    continue
                described = responses.setdefault(str(status), {"description": DESCRIPTIONS[kind]})
                described.setdefault("content", {"application/json": {"schema": envelope}})
    if not re.search(r"HTTPValidationError", str(document.get("paths"))):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _status(errors: ErrorRenderer, path: str, kind: ErrorKind) -> int:
    """The HTTP status the path's dialect answers this failure with (face swap: often 200)."""
    dialect = errors.dialect_for(path)
    err = MediarelayError(kind, DESCRIPTIONS.get(kind, kind.value))
    return dialect.error(err)[0] if dialect else HTTP_STATUS[kind]


def install(api: FastAPI, errors: ErrorRenderer) -> None:
    """Replace `api.openapi` with FastAPI's document plus the error answers (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            add_success_schemas(document, errors.dialects)
            add_error_responses(document, errors)
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
