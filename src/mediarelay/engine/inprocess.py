"""The embedded driver: runs due steps inside the server process, driven by the `next_run_at` column.

No queue library runs on SQLite, and none is needed for one process: the task table is the queue.
After a crash, whatever was due is still due, so a restart simply carries on.

One scan is one read (`TaskRepo.due_tasks`: the due rows, loaded, and when the next one comes due, on the
partial index of unfinished tasks), and scans are coalesced: a wake-up (a step finished, a task was
submitted) within `SCAN_GAP` of the last scan waits for the rest of that gap, so a burst of finishing
steps costs one scan, not one each. The table stays the only truth: nothing is remembered between scans
but the steps in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from mediarelay.domain import Task, now_ms
from mediarelay.engine.lifecycle import Engine

log = logging.getLogger("mediarelay.driver")

IDLE_WAIT = 1.0  # also picks up rows written by other processes (the CLI) within a second
SCAN_GAP = 0.05  # seconds: at most 20 scans a second, whatever the rate of wake-ups


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
        clock = asyncio.get_running_loop().time
        last_scan = -SCAN_GAP
        while True:
            if (gap := last_scan + SCAN_GAP - clock()) > 0:
                await asyncio.sleep(gap)  # wake-ups arriving meanwhile are served by this one scan
            self._wake.clear()
            last_scan = clock()
            free = self.concurrency - len(self.inflight)
            next_at: int | None = None
            if free > 0:
                try:
                    ready, next_at = await asyncio.to_thread(
                        repo.due_tasks, now_ms(), free, tuple(self.inflight)
                    )
                except Exception:
                    log.exception("driver scan failed")
                    ready = []
                for task in ready:
                    self._spawn(task)
            wait = IDLE_WAIT if next_at is None else min(IDLE_WAIT, max(0.0, (next_at - now_ms()) / 1000))
            if self.concurrency - len(self.inflight) <= 0:
                wait = IDLE_WAIT  # full: a finishing step wakes us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _spawn(self, task: Task) -> None:
        self.inflight.add(task.id)
        step = asyncio.create_task(self._run(task), name=f"step-{task.id}")
        self._steps.add(step)
        step.add_done_callback(self._steps.discard)

    async def _run(self, task: Task) -> None:
        try:
            await self.engine.step(task.id, task)
        finally:
            self.inflight.discard(task.id)
            self._wake.set()
