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
    extra_routes: tuple[ExtraRoute, ...] = field(default=())
    # Extra headers of a status answer (e.g. OpenAI's `openai-poll-after-ms`), rendered with the view.
    status_headers: Callable[[Task], Mapping[str, str]] | None = None

    @property
    def status_in_path(self) -> bool:
        return "{" + self.status_param + "}" in self.status_path

    def owns(self, path: str) -> bool:
        return any(path == p.rstrip("/") or path.startswith(p) for p in self.prefixes)
