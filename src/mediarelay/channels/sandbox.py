"""The built-in sandbox channel: a free stand-in for a vendor that produces real media.

It keeps no state of its own: a task's upstream lifecycle (time in queue, run time, whether and when it
fails) is a pure function of the task row (its id seeds the randomness, `started_at` is the submit time),
so the sandbox survives a `kill -9` exactly like a remote vendor would.

Controls, per channel (`options` in mediarelay.toml): `queue_seconds`, `run_seconds` (median), `jitter`
(relative spread of both), `failure_rate` (0..1). Per task, to force an outcome:
- header `X-Sandbox-Fail: <reason>` on the submit, or the word `sandbox-fail` anywhere in the request
  body (a prompt, or a URL such as `https://example.com/face.png?sandbox-fail`): the task fails midway;
- header `X-Sandbox-Duration: <seconds>`: the run time, and `X-Sandbox-Queue: <seconds>`: the queue time;
- header `X-Sandbox-Output-Seconds: <seconds>`: a video shorter or longer than requested (as vendors
  sometimes deliver; billing settles by the real length).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mediarelay import media
from mediarelay.channels.base import ChannelConfig, Output, PollResult, Submitted
from mediarelay.domain import Operation, Status, Task, TaskError, now_ms

FAIL_WORD = b"sandbox-fail"
VIDEO_OPS = {
    Operation.AVATAR,
    Operation.TEXT_TO_VIDEO,
    Operation.IMAGE_TO_VIDEO,
    Operation.VIDEO_TO_VIDEO,
    Operation.FACE_SWAP_VIDEO,
}


@dataclass(frozen=True)
class Plan:
    queue_s: float
    run_s: float
    fail_reason: str | None
    fail_at: float  # fraction of the run after which a failing task fails


def plan_for(task: Task, options: dict[str, Any]) -> Plan:
    """The task's whole simulated life, reproducible from the task alone."""
    rng = random.Random(task.id)
    jitter = float(options.get("jitter", 0.3))
    controls: dict[str, Any] = task.params.get("sandbox") or {}

    def spread(base: float) -> float:
        return max(0.0, base * (1 + rng.uniform(-jitter, jitter)))

    queue_s = (
        float(controls["queue"]) if "queue" in controls else spread(float(options.get("queue_seconds", 1.0)))
    )
    run_s = (
        float(controls["duration"])
        if "duration" in controls
        else spread(float(options.get("run_seconds", 6.0)))
    )
    fail_reason: str | None = None
    if controls.get("fail"):
        fail_reason = (
            str(controls["fail"]) if isinstance(controls["fail"], str) else "sandbox: forced failure"
        )
    elif FAIL_WORD in orjson.dumps(task.request):
        fail_reason = "sandbox: forced failure (sandbox-fail in the request)"
    elif rng.random() < float(options.get("failure_rate", 0.0)):
        fail_reason = "sandbox: simulated upstream failure"
    return Plan(
        queue_s=queue_s, run_s=max(run_s, 0.001), fail_reason=fail_reason, fail_at=rng.uniform(0.3, 0.7)
    )


def outputs_for(task: Task) -> tuple[Output, ...]:
    """What the finished task delivers, shaped by the normalised request."""
    p = task.params
    text = str(p.get("prompt") or p.get("text") or f"{task.operation.value} · {task.model}")
    watermark = "mediarelay sandbox" if p.get("watermark") else None
    if task.operation in VIDEO_OPS:
        spec = {
            "width": int(p.get("width", 1280)),
            "height": int(p.get("height", 720)),
            "seconds": float((p.get("sandbox") or {}).get("output_seconds") or p.get("seconds", 5)),
            "fps": int(p.get("fps", 24)),
            "audio": bool(p.get("audio", task.operation is Operation.AVATAR)),
            "text": text,
            "watermark": watermark,
        }
        return (Output(role="video", mime="video/mp4", ext="mp4", spec=spec),)
    count = max(1, len(p.get("target_urls") or ()))
    scale = int(p.get("scale", 1))
    spec = {
        "width": int(p.get("width", 512)) * scale,
        "height": int(p.get("height", 512)) * scale,
        "text": text,
    }
    return tuple(
        Output(role="image", mime="image/png", ext="png", index=i, spec={**spec, "text": f"{text} #{i + 1}"})
        for i in range(count)
    )


class SandboxChannel:
    operations = frozenset(Operation)
    idempotent_submit = True  # nothing leaves the process: a repeated submit is the same task
    generates_outputs = True  # fetch_output makes the media here: CPU work, paced like the previews

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config

    async def submit(self, task: Task) -> Submitted:
        if task.params.get("sandbox", {}).get("reject"):
            raise TaskError("rejected", str(task.params["sandbox"]["reject"]))
        return Submitted(upstream_id=f"sbx-{task.id.lower()}", status=Status.QUEUED)

    async def poll(self, task: Task) -> PollResult:
        plan = plan_for(task, self.config.options)
        elapsed = (now_ms() - (task.started_at or task.created_at)) / 1000
        if elapsed < plan.queue_s:
            return PollResult(status=Status.QUEUED, progress=0, retry_after=plan.queue_s - elapsed)
        done = (elapsed - plan.queue_s) / plan.run_s
        if plan.fail_reason and done >= plan.fail_at:
            return PollResult(
                status=Status.FAILED, error_code="generation_failed", error_message=plan.fail_reason
            )
        if done < 1:
            remaining = (1 - done) * plan.run_s
            return PollResult(
                status=Status.RUNNING, progress=min(99, int(done * 100)), retry_after=min(1.0, remaining)
            )
        return PollResult(status=Status.SUCCEEDED, progress=100, outputs=outputs_for(task))

    async def fetch_output(self, task: Task, output: Output, dest: Path) -> None:
        s = output.spec
        if output.role == "video":
            await media.make_video(
                dest,
                width=s["width"],
                height=s["height"],
                seconds=s["seconds"],
                fps=s["fps"],
                text=s["text"],
                audio=s["audio"],
                watermark=s.get("watermark"),
            )
        else:
            await media.make_image(dest, width=s["width"], height=s["height"], text=s["text"], fmt="PNG")

    async def cancel(self, task: Task) -> None:
        """Nothing to stop: the sandbox does no work until a finished task's outputs are fetched."""


SANDBOX_VOICES: list[dict[str, Any]] = [
    {
        "audio_id": f"sbx-voice-{lang}-{i}",
        "audio_url": "",
        "labels": labels,
        "language": lang,
        "name": name,
        "vip_enable": False,
        "voice_engine_id": f"sandbox-{lang}",
        "type": "system",
    }
    for lang, voices in {
        "zh": [("晓晓", ["female", "warm"]), ("云扬", ["male", "news"])],
        "en": [("Ava", ["female", "bright"]), ("Noah", ["male", "calm"])],
    }.items()
    for i, (name, labels) in enumerate(voices)
]
