"""What a dialect is: a plain descriptor of its endpoints plus pure functions (parse, render, error).

Dialects know nothing of HTTP frameworks: `api/` turns each descriptor into routes. Adding a dialect is
one module that builds a `Dialect` and one line in `dialects/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from mediarelay.domain import Asset, MediarelayError, Task, TaskSpec


@dataclass(frozen=True)
class RenderContext:
    """What rendering needs besides the task: absolute file URLs and, for fan-out parents, the children."""

    url: Callable[[Asset], str]
    children: Sequence[Task] = ()


class Catalog(Protocol):
    """Read-only facts a dialect's extra endpoints may publish (served by the configured channels)."""

    def voices(self, language: str | None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ExtraRoute:
    """A dialect endpoint that is neither submit nor status (e.g. the avatar voice list)."""

    method: str
    path: str
    summary: str
    handler: Callable[[Mapping[str, str], Catalog], Any]


@dataclass(frozen=True)
class Upload:
    """A file of a multipart submit, read and size-checked by the API layer but not stored yet: the dialect
    checks it (with the rest of the request) before anything is written. `url` is where mediarelay will
    serve it once stored."""

    field: str
    filename: str
    content_type: str
    size: int
    head: bytes  # the first bytes, to tell what the file really is
    url: str


@dataclass(frozen=True)
class ListQuery:
    """A parsed list request: `after` is the public id of the last item already seen (the cursor)."""

    limit: int
    after: str | None = None
    descending: bool = True
    after_param: str = "after"  # named in the error for an unknown cursor


@dataclass(frozen=True)
class ListRoute:
    """`GET path`: the caller's tasks of this dialect, a page at a time (cursor = a public id)."""

    path: str
    parse: Callable[[Mapping[str, str]], ListQuery]  # query string -> query; raises MediarelayError
    render: Callable[[list[dict[str, Any]], bool], Any]  # (rendered items, has_more) -> page body


@dataclass(frozen=True)
class DeleteRoute:
    """`DELETE path/{status_param}`: cancel the task if still running, then remove its rows and files."""

    path: str
    render: Callable[[Task], Any]
    method: str = "DELETE"


@dataclass(frozen=True)
class ContentRoute:
    """`GET path/{status_param}/…?<param>=<variant>`: a finished task's file bytes (Range supported)."""

    path: str
    variants: Mapping[str, str]  # query value -> asset role
    default: str
    not_ready: Callable[[Task], MediarelayError]  # the error while the task has not succeeded
    param: str = "variant"


@dataclass(frozen=True)
class RemixRoute:
    """`POST path/{status_param}/…`: a new task derived from one of the caller's tasks of this dialect."""

    path: str
    body_model: type[BaseModel]
    parse: Callable[[Any, Task, RenderContext], TaskSpec]  # (validated body, source, ctx) -> spec


@dataclass(frozen=True)
class Dialect:
    name: str
    title: str
    prefixes: tuple[str, ...]  # paths this dialect owns: errors there use its envelope
    submit_path: str
    submit_model: type[BaseModel]
    parse: Callable[[Any], TaskSpec]  # validated body -> spec; raises MediarelayError
    accepted: Callable[[Task], Any]  # the submit response body
    status_path: str  # "{param}" in the path, or the id comes as query parameter `status_param`
    status_param: str
    render: Callable[[Task, RenderContext], dict[str, Any]]
    error: Callable[[MediarelayError], tuple[int, Any]]  # (HTTP status, body)
    cancel_path: str | None = None
    cancel_method: str = "POST"
    bare_key: bool = False  # accept `Authorization: <key>` without "Bearer"
    any_task: bool = False  # status/cancel address any dialect's task, by task id or public id (native)
    extra_routes: tuple[ExtraRoute, ...] = field(default=())
    # Extra headers of a status answer (e.g. OpenAI's `openai-poll-after-ms`), rendered with the view.
    status_headers: Callable[[Task], Mapping[str, str]] | None = None
    # Resource-style endpoints (OpenAI videos); ids in their paths use `status_param`.
    list_route: ListRoute | None = None
    delete_route: DeleteRoute | None = None
    content_route: ContentRoute | None = None
    remix_route: RemixRoute | None = None
    # Multipart file fields the submit takes (it then also accepts multipart/form-data besides JSON);
    # `attach_uploads` checks them and puts their future URLs into the parsed spec.
    upload_fields: tuple[str, ...] = ()
    attach_uploads: Callable[[TaskSpec, Sequence[Upload]], TaskSpec] | None = None

    @property
    def status_in_path(self) -> bool:
        return "{" + self.status_param + "}" in self.status_path

    def owns(self, path: str) -> bool:
        return any(path == p.rstrip("/") or path.startswith(p) for p in self.prefixes)
