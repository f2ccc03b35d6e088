"""One job of the local channel: its description, its run in a worker process, and its record on disk.

A job lives in its own directory under the channel's work directory (one per task):

    inputs/<name>      the downloaded inputs (written by the channel)
    started            touched when a worker picks the job up (queued → running)
    progress           the last progress, 0..100
    result.json        written last, atomically: the outputs (`result-<i>.<ext>` next to it)
    error.json         or this: {"code", "message"}

The directory is the whole truth: a restarted server finds finished jobs there, and any job without
`result.json` or `error.json` is simply run again (the work is deterministic). This module imports no
image library at import time, so the server process can read job states cheaply.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediarelay.processing import JobError

log = logging.getLogger(__name__)

RESULT, ERROR, STARTED, PROGRESS = "result.json", "error.json", "started", "progress"


@dataclass(frozen=True)
class JobSpec:
    """What to do; picklable, it crosses into the worker process."""

    operation: str  # an `Operation` value
    inputs: dict[str, str]  # role -> file: "face", "target-<i>", "avatar", "audio"
    targets: int = 0
    filter: str | None = None
    scale: int = 2
    fps: int = 25
    sr_model: str | None = None
    max_seconds: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobState:
    started: bool = False
    progress: int = 0
    outputs: tuple[dict[str, Any], ...] | None = None
    error: tuple[str, str] | None = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_state(job_dir: Path) -> JobState:
    """The job's state as its directory shows it. A result whose files are gone counts as not run."""
    try:
        if (job_dir / ERROR).exists():
            data = json.loads((job_dir / ERROR).read_text())
            return JobState(started=True, progress=100, error=(str(data["code"]), str(data["message"])))
        if (job_dir / RESULT).exists():
            outputs = tuple(json.loads((job_dir / RESULT).read_text())["outputs"])
            if all((job_dir / o["file"]).is_file() for o in outputs):
                return JobState(started=True, progress=100, outputs=outputs)
            return JobState()
        progress = int((job_dir / PROGRESS).read_text() or 0) if (job_dir / PROGRESS).exists() else 0
        return JobState(started=(job_dir / STARTED).exists(), progress=progress)
    except (OSError, ValueError, KeyError):
        return JobState()


def reset(job_dir: Path) -> None:
    """Forget everything but the inputs: the job runs again from the start."""
    for name in (RESULT, ERROR, STARTED, PROGRESS):
        (job_dir / name).unlink(missing_ok=True)
    for leftover in job_dir.glob("result-*"):
        leftover.unlink(missing_ok=True)
    for leftover in job_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


class Progress:
    """Writes the progress file when the whole percentage moves."""

    def __init__(self, job_dir: Path, start: int = 5, end: int = 99) -> None:
        self.path = job_dir / PROGRESS
        self.start, self.end = start, end
        self.last = -1

    def __call__(self, fraction: float) -> None:
        value = int(self.start + (self.end - self.start) * min(1.0, max(0.0, fraction)))
        if value != self.last:
            self.last = value
            tmp = self.path.with_name(".progress.tmp")
            tmp.write_text(str(value))
            os.replace(tmp, self.path)


def run(spec: JobSpec, job_dir_name: str) -> None:
    """The worker-side entry point: do the job and record its outcome in its directory."""
    job_dir = Path(job_dir_name)
    (job_dir / STARTED).touch()
    progress = Progress(job_dir)
    progress(0)
    try:
        outputs = _run(spec, job_dir, progress)
        write_json(job_dir / RESULT, {"outputs": outputs})
    except JobError as exc:
        write_json(job_dir / ERROR, {"code": exc.code, "message": exc.message})
    except MemoryError:
        write_json(job_dir / ERROR, {"code": "input_too_large", "message": "the job ran out of memory"})
    except Exception as exc:
        log.error("local job %s failed:\n%s", job_dir.name, traceback.format_exc())
        message = f"processing failed: {type(exc).__name__}: {str(exc)[:300]}"
        write_json(job_dir / ERROR, {"code": "processing_failed", "message": message})


def _image_output(index: int) -> dict[str, Any]:
    return {"role": "image", "mime": "image/png", "ext": "png", "index": index, "file": f"result-{index}.png"}


def _run(spec: JobSpec, job_dir: Path, progress: Progress) -> list[dict[str, Any]]:
    from mediarelay.processing import images  # the extra: only in the worker

    op = spec.operation
    inputs = {role: job_dir / name for role, name in spec.inputs.items()}
    if op == "face_swap_video":
        from mediarelay.processing import faceswap

        face = images.read_image(inputs["face"], what="face image")
        out: dict[str, Any] = {
            "role": "video",
            "mime": "video/mp4",
            "ext": "mp4",
            "index": 0,
            "file": "result-0.mp4",
        }
        faceswap.swap_video(face, inputs["target-0"], job_dir / out["file"], progress)
        return [out]
    if op == "avatar":
        from mediarelay.processing import talking

        still = _still(inputs["avatar"])
        out = {"role": "video", "mime": "video/mp4", "ext": "mp4", "index": 0, "file": "result-0.mp4"}
        talking.animate(
            still,
            inputs["audio"],
            job_dir / out["file"],
            fps=spec.fps,
            max_seconds=spec.max_seconds,
            progress=progress,
        )
        return [out]
    face_img = images.read_image(inputs["face"], what="face image") if op == "face_swap_image" else None
    outputs: list[dict[str, Any]] = []
    for i in range(spec.targets):
        what = f"target image {i + 1}" if spec.targets > 1 else "target image"
        img = images.read_image(inputs[f"target-{i}"], what=what)
        result = _image_job(spec, img, face_img, what)
        image_out = _image_output(i)
        images.write_png(job_dir / image_out["file"], result)
        outputs.append(image_out)
        progress((i + 1) / spec.targets)
    return outputs


def _image_job(spec: JobSpec, img: Any, face: Any, what: str) -> Any:
    op = spec.operation
    if op == "enhance":
        from mediarelay.processing.enhance import enhance

        return enhance(img)
    if op == "filter":
        from mediarelay.processing import filters

        return filters.apply(spec.filter or "", img)
    if op == "upscale":
        from mediarelay.processing.upscale import upscale

        return upscale(img, spec.scale, model_path=spec.sr_model)
    if op == "face_swap_image":
        from mediarelay.processing.faceswap import swap_image

        return swap_image(face, img, what=what)
    raise JobError("unsupported", f"the local channel does not run {op}")


def _still(path: Path) -> Any:
    """An avatar given as an image, or as a video (its first frame)."""
    from mediarelay.processing import images, video

    with path.open("rb") as fh:
        head = fh.read(16)
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3":
        return video.first_frame(path)
    return images.read_image(path, what="avatar image")
