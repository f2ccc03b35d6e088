"""A bounded pool of worker processes, for the local channel's jobs and the engine's media work.

Jobs are CPU-bound and can crash or leak (native image and video code), so they run in separate processes
(`spawn`: nothing of the server's threads and locks is inherited), at most `workers` at once; more wait
in the executor's queue. Workers run at a lower priority than the server by default (the API stays
responsive; the engine's media pool, whose work decides how soon results are visible, does not) and
use one thread each, and on Linux they die with the server (`PR_SET_PDEATHSIG`): a `kill -9` of the
server leaves no orphan working on, and the channel re-runs unfinished jobs after the restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["BrokenProcessPool", "WorkerPool"]


def _init_worker(setup: Callable[[], None] | None, nice: int) -> None:
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the server died while this worker started
            os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(nice)
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if setup is not None:
        setup()


def opencv_setup() -> None:
    """The local channel's workers: OpenCV on one thread (the pool is the parallelism)."""
    import cv2

    cv2.setNumThreads(1)


class WorkerPool:
    """A process pool created on first use; `resize` takes effect for jobs started afterwards (the old
    pool finishes what it already has), and a pool broken by a crashed worker is replaced. `setup` runs
    once in each new worker (a module-level function: it is pickled)."""

    def __init__(self, workers: int, *, setup: Callable[[], None] | None = None, nice: int = 5) -> None:
        self.workers = max(1, workers)
        self.setup = setup
        self.nice = nice
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def _get(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=functools.partial(_init_worker, self.setup, self.nice),
            )
        return self._executor

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        executor = self._get()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BrokenProcessPool:
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    def resize(self, workers: int) -> None:
        workers = max(1, workers)
        if workers != self.workers:
            self.workers = workers
            old, self._executor = self._executor, None
            if old is not None:
                old.shutdown(wait=False)

    def shutdown(self) -> None:
        old, self._executor = self._executor, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
