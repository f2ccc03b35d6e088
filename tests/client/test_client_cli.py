"""The client commands of the CLI, as processes against a live mediarelay: submit/status/tasks/download/
cancel in every dialect, the progress output (plain lines off a terminal, a bar on one), failures, exit
codes, and a download resumed through a broken connection."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from client_cases import FACE, PHOTO, VOICE, check_media, sha256
from client_faults import FaultProxy

from conftest import BIN, Server
from mediarelay.client import Client
from mediarelay.media import probe

# dialect -> CLI arguments for a small task
ARGS: dict[str, list[str]] = {
    "native": ["clip", "-p", "a kite", "--operation", "text_to_video", "-P", "width=96", "-P", "height=64",
               "-P", "seconds=1", "-P", "fps=8"],
    "openai": ["-d", "openai", "-p", "a red kite", "-P", "seconds=4", "-P", "size=1280x720"],
    "pika": ["-d", "pika", "-p", "a kite", "-P", "aspectRatio=1.0", "-P", "frameRate=8"],
    "unified": ["grok-video-3", "-d", "unified", "-p", "a fox", "-P", "aspect_ratio=1:1"],
    "avatar": ["-d", "avatar", "-i", FACE, "-a", VOICE],
    "faceswap": ["enhance", "-d", "faceswap", "-i", PHOTO],
}  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIARELAY_", "TTY_", "FORCE_COLOR"))}
    return {**base, "COLUMNS": "120", **extra}


def cli(server: Server, key: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args, "--base-url", server.base_url, "--key", key],
        capture_output=True,
        text=True,
        env=env(**extra_env),
        timeout=90,
        check=False,
    )


def test_submit_wait_download_in_every_dialect(server: Server, user_key: str, tmp_path: Path) -> None:
    procs = {
        d: subprocess.Popen(
            [
                str(BIN),
                "submit",
                *args,
                "--wait",
                "-o",
                str(tmp_path / f"{d}.out"),
                "--base-url",
                server.base_url,
                "--key",
                user_key,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for d, args in ARGS.items()
    }
    for dialect, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, (dialect, stderr)
        assert stdout.strip() == str(tmp_path / f"{dialect}.out"), stdout
        check_media(tmp_path / f"{dialect}.out", dialect)
        # Off a terminal: plain progress lines on stderr, one per change, ending in success.
        lines = stderr.splitlines()
        assert lines[0].startswith("submitted ") and "succeeded" in stderr and "elapsed" in stderr, stderr
        if dialect in ("native", "openai", "pika", "unified"):
            assert " 100%" in stderr, stderr
        assert any(line.startswith("saved ") for line in lines), stderr
        assert "\x1b[" not in stderr, "terminal control codes in a log"


def test_a_failed_task_exits_1_with_its_reason(server: Server, user_key: str) -> None:
    out = cli(server, user_key, "submit", *ARGS["pika"], "-H", "X-Sandbox-Fail: melted", "--wait")
    assert out.returncode == 1, out.stderr
    assert "failed" in out.stderr and "melted" in out.stderr and out.stdout == ""


def test_status_download_tasks_with_the_environment(server: Server, user_key: str, tmp_path: Path) -> None:
    """Without --wait, submit prints the id alone; the other commands take it (URL and key from the env)."""
    run_env = env(MEDIARELAY_URL=server.base_url, MEDIARELAY_KEY=user_key)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, env=run_env, timeout=90, check=False
        )

    submitted = run("submit", "-d", "faceswap", "upscale", "-i", PHOTO, "-P", "scale=2")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert len(task_id) == 32 and "\n" not in task_id, task_id
    waited = run("status", task_id, "-d", "faceswap", "--wait")
    assert waited.returncode == 0 and "succeeded" in waited.stdout and "image[0]" in waited.stdout, waited
    shown = json.loads(run("status", task_id, "-d", "faceswap", "--json").stdout)
    assert shown["status"] == "succeeded" and shown["raw"]["data"]["state"] == 30
    got = run("download", task_id, "-d", "faceswap", "-o", str(tmp_path / "big.png"))
    assert got.returncode == 0 and got.stdout.strip() == str(tmp_path / "big.png"), got.stderr
    assert probe(tmp_path / "big.png").width == 1024
    listed = run("tasks", "--status", "succeeded", "-d", "faceswap", "-n", "100", "--json")
    data = json.loads(listed.stdout)["data"]
    assert any(t["raw"]["public_id"] == task_id for t in data)
    assert all(t["raw"]["dialect"] == "faceswap" and t["status"] == "succeeded" for t in data)


def test_cancel_and_timeout(server: Server, user_key: str) -> None:
    out = cli(
        server, user_key, "submit", *ARGS["avatar"], "-H", "X-Sandbox-Queue: 60", "--wait", "--timeout", "1"
    )
    assert out.returncode == 4, out.stderr
    task_id = out.stderr.split("submitted ", 1)[1].split()[0]
    assert f"mediarelay status {task_id}" in out.stderr
    canceled = cli(server, user_key, "cancel", task_id, "-d", "avatar", "--json")
    assert canceled.returncode == 0 and json.loads(canceled.stdout)["status"] == "canceled"


def test_errors_exit_2_with_the_servers_message(server: Server, user_key: str) -> None:
    count = server.task_count()
    bad = cli(
        server,
        user_key,
        "submit",
        "-d",
        "faceswap",
        "--body",
        '{"taskType": 5, "targetUrls": ["https://example.com/p.png"]}',
    )
    assert bad.returncode == 2 and "filter is required" in bad.stderr, bad.stderr
    assert server.task_count() == count
    missing = cli(server, user_key, "status", "nope", "-d", "pika")
    assert missing.returncode == 2 and "404" in missing.stderr
    unauthorized = cli(server, "mr-wrong", "tasks")
    assert unauthorized.returncode == 2 and "401" in unauthorized.stderr
    usage = cli(server, user_key, "submit", "-d", "avatar", "-i", FACE, "--wait")
    assert usage.returncode == 2 and "--audio" in usage.stderr


def test_a_progress_bar_on_a_terminal(server: Server, user_key: str) -> None:
    out = cli(server, user_key, "submit", *ARGS["pika"], "--wait", TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    assert out.returncode == 0, out.stderr
    final = out.stderr.replace("\r", "\n").splitlines()
    assert any("━" in line and "100%" in line and "succeeded" in line for line in final), out.stderr[-2000:]


def test_download_resumes_through_a_broken_connection(server: Server, user_key: str, tmp_path: Path) -> None:
    with Client(server.base_url, user_key) as mr:
        task = mr.submit("clip", prompt="cut", operation="text_to_video", width=640, height=480, seconds=3)
        video = mr.wait(task, timeout=60).output("video")
    assert video is not None and video.bytes and video.bytes > 20_000
    with FaultProxy(server.base_url, cut_after=10_000) as proxy:
        url = video.url.replace(server.base_url, proxy.base_url)
        got = cli(server, user_key, "download", url, "-o", str(tmp_path / "v.mp4"))
    assert got.returncode == 0, got.stderr
    assert "resumed at 10000" in got.stderr and got.stdout.strip() == str(tmp_path / "v.mp4")
    assert [(r.status, r.sent) for r in proxy.requests("/files/")] == [
        (200, 10_000),
        (206, video.bytes - 10_000),
    ]
    assert sha256(tmp_path / "v.mp4") == video.sha256


def test_help() -> None:
    out = subprocess.run(
        [str(BIN), "submit", "--help"], capture_output=True, text=True, env=env(), timeout=60, check=False
    )
    assert out.returncode == 0 and "--prompt" in out.stdout and "MEDIARELAY_URL" in out.stdout
