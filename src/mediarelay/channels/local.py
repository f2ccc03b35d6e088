"""The `local` channel type: enhance, filter, upscale, face swap and talking avatars on this machine's CPU,
offline (docs/local-channel.md). Needs the extra: `pip install 'mediarelay[local]'`.

The adaptor is small: submit downloads the task's inputs through the one outbound fetcher and queues a
job in the bounded worker pool (`processing/pool.py`); poll reads the job's directory
(`processing/jobs.py`); fetch_output copies a result file. Jobs are keyed by task id and their outcome is
only ever read from disk, so a repeated submit is harmless (`idempotent_submit`) and a job lost with
its process (`kill -9`) is simply run again when the task is next polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mediarelay.channels.base import ChannelConfig, ChannelDeps, Output, PollResult, Submitted, Unsupported
from mediarelay.domain import Operation, Status, Task, TaskError
from mediarelay.netguard import Blocked, TooLarge, Unresolvable
from mediarelay.processing import jobs, missing_extra
from mediarelay.processing.pool import BrokenProcessPool, WorkerPool, opencv_setup

log = logging.getLogger(__name__)

# The names processing/filters.py implements (the server process does not import OpenCV to check).
FILTER_NAMES = ("cartoon", "sketch", "vintage", "noir", "warm", "cool", "vivid", "oil")
IMAGE_OPS = {Operation.ENHANCE, Operation.FILTER, Operation.UPSCALE, Operation.FACE_SWAP_IMAGE}
MAX_INPUT_BYTES = 200 * 1024 * 1024
DOWNLOAD_TRIES = 3
CRASH_RETRIES = 2
SWEEP_EVERY_S = 600.0


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def inputs_for(task: Task) -> dict[str, str]:
    """role -> URL of every input the task needs; raises `Unsupported`/`TaskError` when it cannot run here."""
    p = task.params
    op = task.operation
    if op is Operation.AVATAR:
        if p.get("text"):
            raise Unsupported(
                "the local channel has no text-to-speech: it animates an avatar from a given audio_url only"
            )
        image = (p.get("images") or [None])[0] or p.get("face_url")
        if not p.get("audio_url") or not image:
            raise Unsupported("the local channel needs an avatar image and an audio_url")
        return {"avatar": str(image), "audio": str(p["audio_url"])}
    targets = [str(u) for u in (p.get("target_urls") or p.get("images") or [])]
    if op is Operation.FACE_SWAP_VIDEO:
        targets = targets[:1] or ([str(p["video"])] if p.get("video") else [])
    if not targets:
        raise TaskError("invalid_request", "the task names no target to work on")
    urls = {f"target-{i}": url for i, url in enumerate(targets)}
    if op in (Operation.FACE_SWAP_IMAGE, Operation.FACE_SWAP_VIDEO):
        if not p.get("face_url"):
            raise TaskError("invalid_request", "face swap needs a face_url")
        urls["face"] = str(p["face_url"])
    if op is Operation.FILTER and p.get("filter") not in FILTER_NAMES:
        raise TaskError(
            "unsupported_filter",
            f"unknown filter {p.get('filter')!r}; the local channel has {', '.join(FILTER_NAMES)}",
        )
    if op is Operation.UPSCALE and int(p.get("scale") or 2) not in (2, 3, 4):
        raise TaskError("invalid_scale", f"the local channel upscales by 2, 3 or 4, not {p.get('scale')}")
    return urls


@dataclass
class Runtime:
    """The jobs in flight of one configured channel; outlives reloads of the channel set, so that a
    rebuilt channel object keeps seeing (and does not restart) the jobs its predecessor started."""

    work_dir: Path
    pool: WorkerPool
    jobs: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    downloads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    swept_at: float = 0.0

    def active(self, task_id: str) -> bool:
        job = self.jobs.get(task_id)
        return job is not None and not job.done()


_RUNTIMES: dict[tuple[str, str], Runtime] = {}


class LocalChannel:
    operations = frozenset(IMAGE_OPS | {Operation.FACE_SWAP_VIDEO, Operation.AVATAR})
    idempotent_submit = True  # a job is keyed by its task: submitting again finds the same job
    generates_outputs = False  # fetch_output only copies a finished file

    def __init__(self, config: ChannelConfig, deps: ChannelDeps) -> None:
        missing = missing_extra()
        if missing:
            raise ValueError(
                f"channel {config.name!r}: type 'local' needs the optional extra "
                f"(pip install 'mediarelay[local]'); missing: {', '.join(missing)}"
            )
        self.config = config
        self.deps = deps
        opts = config.options
        workers = int(opts.get("workers") or default_workers())
        data_dir = deps.data_dir or Path("mediarelay-data")
        work_dir = Path(opts.get("work_dir") or Path(data_dir) / "local-channel" / config.name).resolve()
        self.poll_seconds = float(opts.get("poll_seconds", 0.5))
        self.keep_hours = float(opts.get("keep_hours", 24.0))
        self.max_input_bytes = min(int(opts.get("max_input_bytes", MAX_INPUT_BYTES)), deps.max_result_bytes)
        self.max_seconds = float(opts.get("max_seconds", 120.0))
        self.sr_model = str(opts["sr_model"]) if opts.get("sr_model") else None
        key = (config.name, str(work_dir))
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = _RUNTIMES[key] = Runtime(
                work_dir=work_dir, pool=WorkerPool(workers, setup=opencv_setup)
            )
        runtime.pool.resize(workers)
        self.runtime = runtime

    def job_dir(self, task: Task) -> Path:
        return self.runtime.work_dir / task.id

    # -- the Channel protocol -------------------------------------------------------------------

    async def submit(self, task: Task) -> Submitted:
        inputs_for(task)  # refuse what cannot run here before anything happens
        if self.deps.guard is None:
            raise TaskError("no_fetcher", "the local channel needs the outbound fetcher to read inputs")
        self._start(task)
        return Submitted(upstream_id=f"local-{task.id}", status=Status.QUEUED)

    async def poll(self, task: Task) -> PollResult:
        state = await asyncio.to_thread(jobs.read_state, self.job_dir(task))
        if state.error is not None:
            return PollResult(status=Status.FAILED, error_code=state.error[0], error_message=state.error[1])
        if state.outputs is not None:
            outputs = tuple(
                Output(
                    role=o["role"], mime=o["mime"], ext=o["ext"], index=o["index"], spec={"file": o["file"]}
                )
                for o in state.outputs
            )
            return PollResult(status=Status.SUCCEEDED, progress=100, outputs=outputs)
        if not self.runtime.active(task.id):
            log.info("local job for task %s is not running (restart?): running it again", task.id)
            self._start(task)
            return PollResult(status=Status.QUEUED, progress=0, retry_after=self.poll_seconds)
        status = Status.RUNNING if state.started else Status.QUEUED
        return PollResult(status=status, progress=state.progress, retry_after=self.poll_seconds)

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        source = self.job_dir(task) / str(output.spec.get("file", ""))
        try:
            await asyncio.to_thread(shutil.copyfile, source, dest)
        except OSError:
            # The work directory was cleaned meanwhile: the engine polls again, which re-runs the job.
            jobs.reset(self.job_dir(task))
            raise TaskError(
                "result_expired", "the local result file is gone; running the job again", retryable=True
            ) from None

    async def cancel(self, task: Task) -> None:
        job = self.runtime.jobs.pop(task.id, None)
        if job is not None:
            job.cancel()  # a download or a queued job stops; a running one finishes and is thrown away
            with contextlib.suppress(BaseException):
                await job
        await asyncio.to_thread(shutil.rmtree, self.job_dir(task), True)

    # -- jobs -----------------------------------------------------------------------------------

    def _start(self, task: Task) -> None:
        if self.runtime.active(task.id):
            return
        self.runtime.jobs[task.id] = asyncio.create_task(self._job(task), name=f"local-{task.id}")
        self._sweep()

    async def _job(self, task: Task) -> None:
        job_dir = self.job_dir(task)
        try:
            if jobs.read_state(job_dir).outputs is not None:
                return  # finished before a restart
            await asyncio.to_thread(self._prepare, job_dir)
            urls = inputs_for(task)
            names = {}
            for role, url in urls.items():
                await self._download(url, job_dir / "inputs" / role, role)
                names[role] = f"inputs/{role}"
            spec = self._spec(task, names)
            for attempt in range(CRASH_RETRIES + 1):
                try:
                    await self.runtime.pool.run(jobs.run, spec, str(job_dir))
                    return
                except BrokenProcessPool:
                    log.warning("a local worker died running task %s (try %d)", task.id, attempt + 1)
                    await asyncio.to_thread(jobs.reset, job_dir)
            self._fail(job_dir, "worker_crashed", "the worker process died while running the job")
        except TaskError as exc:
            self._fail(job_dir, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("local job for task %s failed", task.id)
            self._fail(job_dir, "processing_failed", f"{type(exc).__name__}: {exc}")

    def _prepare(self, job_dir: Path) -> None:
        jobs.reset(job_dir)
        (job_dir / "inputs").mkdir(parents=True, exist_ok=True)

    def _fail(self, job_dir: Path, code: str, message: str) -> None:
        with contextlib.suppress(OSError):
            job_dir.mkdir(parents=True, exist_ok=True)
            jobs.write_json(job_dir / jobs.ERROR, {"code": code, "message": message})

    def _spec(self, task: Task, names: dict[str, str]) -> jobs.JobSpec:
        p = task.params
        return jobs.JobSpec(
            operation=task.operation.value,
            inputs=names,
            targets=sum(1 for role in names if role.startswith("target-")),
            filter=p.get("filter"),
            scale=int(p.get("scale") or 2),
            fps=int(p.get("fps") or 25),
            sr_model=self.sr_model,
            max_seconds=self.max_seconds,
        )

    async def _download(self, url: str, dest: Path, role: str) -> None:
        """One input through the fetcher (address policy, byte cap, time limit); transient failures are
        tried again, anything else fails the job with a clear code."""
        assert self.deps.guard is not None
        what = {"face": "face image", "avatar": "avatar image", "audio": "audio"}.get(role, "target")
        for attempt in range(DOWNLOAD_TRIES):
            try:
                async with self.runtime.downloads:
                    got = await self.deps.guard.download(
                        url, dest, max_bytes=self.max_input_bytes, timeout=self.deps.fetch_timeout
                    )
            except Blocked as exc:
                raise TaskError("input_blocked", f"the {what} URL is not allowed: {exc}") from None
            except TooLarge:
                raise TaskError(
                    "input_too_large", f"the {what} is larger than {self.max_input_bytes} bytes"
                ) from None
            except (Unresolvable, httpx.HTTPError, TimeoutError, OSError) as exc:
                error = f"the {what} could not be downloaded ({type(exc).__name__})"
            else:
                if 200 <= got.status < 300:
                    if got.size == 0:
                        raise TaskError("unreadable_input", f"the {what} is empty")
                    return
                error = f"the {what} could not be downloaded (HTTP {got.status})"
                if got.status < 500 and got.status != 429:
                    break
            await asyncio.sleep(0.5 * 2**attempt)
        raise TaskError("input_unavailable", error)

    def _sweep(self) -> None:
        """Remove job directories older than `keep_hours` (finished results the engine has long copied),
        at most every ten minutes."""
        now = time.time()
        if now - self.runtime.swept_at < SWEEP_EVERY_S:
            return
        self.runtime.swept_at = now
        cutoff = now - self.keep_hours * 3600
        root = self.runtime.work_dir
        active = {k for k, job in self.runtime.jobs.items() if not job.done()}
        for k in [k for k, job in self.runtime.jobs.items() if job.done()]:
            del self.runtime.jobs[k]

        def sweep() -> None:
            if not root.is_dir():
                return
            for entry in root.iterdir():
                with contextlib.suppress(OSError):
                    if entry.name not in active and entry.stat().st_mtime < cutoff:
                        shutil.rmtree(entry, ignore_errors=True)

        asyncio.get_running_loop().run_in_executor(None, sweep)


def build(config: ChannelConfig, deps: ChannelDeps) -> Any:
    return LocalChannel(config, deps)
