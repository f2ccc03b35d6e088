"""The local channel's bounded pool of worker processes.

Jobs are CPU-bound and can crash or leak (native image code), so they run in separate processes
(`spawn`: nothing of the server's threads and locks is inherited), at most `workers` at once; more wait
in the executor's queue. Workers run at a lower priority than the server (the API stays responsive) and
use one thread each, and on Linux they die with the server (`PR_SET_PDEATHSIG`): a `kill -9` of the
server leaves no orphan working on, and the channel re-runs unfinished jobs after the restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["BrokenProcessPool", "WorkerPool"]


def _init_worker() -> None:
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the server died while this worker started
            os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(5)
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)


class WorkerPool:
    """A process pool created on first use; `resize` takes effect for jobs started afterwards (the old
    pool finishes what it already has), and a pool broken by a crashed worker is replaced."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def _get(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
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
