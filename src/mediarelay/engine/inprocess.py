"""The embedded driver: runs due steps inside the server process, driven by the `next_run_at` column.

No queue library runs on SQLite, and none is needed for one process: the task table is the queue.
After a crash, whatever was due is still due, so a restart simply carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from mediarelay.domain import now_ms
from mediarelay.engine.lifecycle import Engine

log = logging.getLogger("mediarelay.driver")

IDLE_WAIT = 1.0  # also picks up rows written by other processes (the CLI) within a second


class InProcessDriver:
    def __init__(self, engine: Engine, *, concurrency: int = 32) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.inflight: set[str] = set()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._steps: set[asyncio.Task[None]] = set()
        engine.wakers.append(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        # Every store call runs in the loop's default thread pool, whose default size (cores + 4) is far
        # too small when many steps wait on the database (and on SQLite's one writer) at once.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="mediarelay-io")
        )
        self._runner = asyncio.create_task(self._loop(), name="mediarelay-driver")

    async def stop(self) -> None:
        """Stop taking work; steps in progress are cancelled and simply re-run after the next start."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for step in list(self._steps):
            step.cancel()
        if self._steps:
            await asyncio.gather(*self._steps, return_exceptions=True)

    async def _loop(self) -> None:
        repo = self.engine.repo
        while True:
            self._wake.clear()
            try:
                free = self.concurrency - len(self.inflight)
                if free > 0:
                    for task_id in await asyncio.to_thread(repo.due, now_ms(), free, tuple(self.inflight)):
                        self._spawn(task_id)
                next_at = await asyncio.to_thread(repo.next_due_at, tuple(self.inflight))
            except Exception:
                log.exception("driver scan failed")
                next_at = None
            wait = IDLE_WAIT if next_at is None else min(IDLE_WAIT, max(0.0, (next_at - now_ms()) / 1000))
            if self.concurrency - len(self.inflight) <= 0:
                wait = IDLE_WAIT  # full: a finishing step wakes us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _spawn(self, task_id: str) -> None:
        self.inflight.add(task_id)
        step = asyncio.create_task(self._run(task_id), name=f"step-{task_id}")
        self._steps.add(step)
        step.add_done_callback(self._steps.discard)

    async def _run(self, task_id: str) -> None:
        try:
            await self.engine.step(task_id)
        finally:
            self.inflight.discard(task_id)
            self._wake.set()
