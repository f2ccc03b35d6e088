"""The render-on-write view cache (api/views.py): what it must never serve."""

from __future__ import annotations

import asyncio
from typing import Any

from mediarelay.api.views import ViewCache
from mediarelay.dialects import DIALECTS
from mediarelay.domain import Operation, Status, Task


def task(task_id: str) -> Task:
    return Task(
        id=task_id,
        seq=1,
        public_id=task_id,
        dialect="native",
        key_id="k",
        model="sandbox-image",
        operation=Operation.TEXT_TO_IMAGE,
        params={},
        request={},
        status=Status.RUNNING,
        progress=10,
        version=3,
        created_at=1,
        updated_at=1,
    )


def cache() -> ViewCache:
    repo: Any = None  # not read: these tasks have no children
    return ViewCache({d.name: d for d in DIALECTS}, repo, "http://127.0.0.1")


def test_a_render_that_read_the_row_before_its_deletion_does_not_bring_it_back() -> None:
    views = cache()
    kept, deleted = task("01KEPT0000000000000000000A"), task("01GONE0000000000000000000A")
    asyncio.run(views.refresh(kept))
    assert views.get_native(kept.id) is not None  # an ordinary render is cached

    # A change handler read `deleted` from the database, then the task was deleted and dropped, then the
    # handler's render arrives: on PostgreSQL this served a deleted task (200 instead of 404) in CI.
    views.drop(deleted.id)
    asyncio.run(views.refresh(deleted))
    assert views.get_native(deleted.id) is None and views.get(deleted.public_id) is None
