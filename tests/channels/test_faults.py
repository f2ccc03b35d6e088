"""520 tasks through a real mediarelay relaying to a fault-injecting upstream (`fakeupstream.py`).

Every channel type talks to the fake in its own dialect; each task's fate is drawn from a seeded mix of
faults (timeouts, resets before and after the upstream acted, 5xx, 429 with Retry-After, malformed and
truncated JSON, unknown and empty statuses, upstream failures, stuck tasks, slow and cut-off downloads,
expiring result URLs, HTML instead of media). Then: every task reached the terminal state the policy
(docs/channels.md) prescribes, none was created twice upstream, none is left behind, every request about
a task used the credential that created it, the concurrency limit held, files are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import Server, start_server
from mediarelay import media

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeupstream import FakeUpstream

TYPES = {"gptbest": "gb", "unified_video": "uv", "openai_videos": "oa", "mediarelay": "mr"}
IDEMPOTENT = {"openai_videos", "mediarelay"}
PER_TYPE = 130
LIMIT = 30  # max_concurrency of every channel here
# Scenario -> weight in the mix (every scenario appears for every type: see the assertion below).
MIX = {
    "ok": 10, "submit_500": 3, "submit_429": 2, "submit_reset_before": 3, "submit_reset_after": 3,
    "submit_timeout_after": 2, "submit_malformed": 2, "submit_400": 2, "poll_flaky": 4, "unknown_status": 4,
    "upstream_fails": 3, "stuck": 2, "expired_once": 3, "expired_forever": 1, "slow_body": 2,
    "truncated_body": 2, "wrong_content": 2,
}
AMBIGUOUS = {"submit_reset_before", "submit_reset_after", "submit_timeout_after", "submit_malformed"}


def expected(scenario: str, kind: str) -> tuple[str, str | None, int]:
    """(status, error code, tasks the upstream should have created) under the documented policy."""
    if scenario in AMBIGUOUS and kind not in IDEMPOTENT:
        created = 0 if scenario == "submit_reset_before" else 1
        return "failed", "submit_unknown", created
    # Another mediarelay's own error code travels through (here the fake's "failed").
    failed_code = "failed" if kind == "mediarelay" else "upstream_failed"
    return {
        "submit_400": ("failed", "upstream_rejected", 0),
        "upstream_fails": ("failed", failed_code, 1),
        "stuck": ("failed", "timeout", 1),
        "expired_forever": ("failed", "result_expired", 1),
    }.get(scenario, ("succeeded", None, 1))


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    tmp = tmp_path_factory.mktemp("media")
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp / "r.png")
    import asyncio

    asyncio.run(media.make_video(tmp / "r.mp4", width=64, height=64, seconds=1, fps=8, text="fake", audio=False))
    upstream = FakeUpstream(png=(tmp / "r.png").read_bytes(), mp4=(tmp / "r.mp4").read_bytes()).start()
    yield upstream
    upstream.stop()


def channel(kind: str, prefix: str, base_url: str, *, short: bool) -> dict[str, Any]:
    return {
        "name": f"{kind}-short" if short else kind,
        "type": kind,
        "base_url": base_url,
        "credentials": [f"env:FAKE_{prefix.upper()}_A", f"env:FAKE_{prefix.upper()}_B"],
        "models": [f"{prefix}stuck-*"] if short else [f"{prefix}-*"],
        "model_map": {"*": "sora-2"} if kind in ("unified_video", "openai_videos") else {},
        "max_concurrency": LIMIT,
        "submit_timeout_seconds": 1.0,
        "poll_timeout_seconds": 1.0,
        # short: long enough to be dispatched (and so created upstream) on a loaded CI machine, where
        # 520 tasks queue behind 96 workers; 10 s was not (the tasks timed out before their submit).
        "deadline_seconds": 30 if short else 180,
        "breaker_failures": 10_000,
        "options": {"poll_fast_seconds": 0.3},
    }


def body_for(kind: str, prefix: str, marker: str, i: int, scenario: str) -> dict[str, Any]:
    model = f"{prefix}stuck-x" if scenario == "stuck" else f"{prefix}-x"
    if kind == "gptbest" and i % 3 == 0:
        return {"model": model, "operation": "avatar", "images": [f"https://example.com/face.png?{marker}"],
                "audio_url": "https://example.com/voice.mp3"}
    if kind in ("gptbest", "mediarelay") and i % 3 == 1:
        return {"model": model, "operation": "text_to_image", "prompt": f"a picture {marker}"}
    return {"model": model, "operation": "text_to_video", "prompt": f"a clip {marker}", "width": 64,
            "height": 64, "seconds": 4}


def test_500_tasks_against_a_faulty_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    env = {
        "MEDIARELAY_SANDBOX__ENABLED": "false",
        "MEDIARELAY_FETCH__ALLOWED_HOSTS": '["127.0.0.1"]',
        "MEDIARELAY_WORKERS": "96",
        "MEDIARELAY_ACCESS_LOG": "false",
        "MEDIARELAY_CHANNELS": json.dumps(
            [channel(k, p, fake.base_url, short=s) for k, p in TYPES.items() for s in (False, True)]
        ),
    }
    for prefix in TYPES.values():
        env[f"FAKE_{prefix.upper()}_A"] = f"tok-{prefix}-a"
        env[f"FAKE_{prefix.upper()}_B"] = f"tok-{prefix}-b"
    server: Server = start_server(tmp_path, **env)
    rng = random.Random(20261121)
    names = list(MIX)
    plan: dict[str, tuple[str, str, str]] = {}  # task id -> (kind, scenario, marker)
    try:
        key = server.new_key("faults")
        with server.client(key) as api:
            n = 0
            for kind, prefix in TYPES.items():
                # Every scenario at least once per type, the rest drawn from the weighted mix.
                scenarios = names + rng.choices(names, weights=list(MIX.values()), k=PER_TYPE - len(names))
                rng.shuffle(scenarios)
                for i, scenario in enumerate(scenarios):
                    n += 1
                    marker = f"mk-{scenario}-{n}"
                    r = api.post("/v1/tasks", json=body_for(kind, prefix, marker, i, scenario))
                    assert r.status_code == 200, r.text
                    plan[r.json()["id"]] = (kind, scenario, marker)
        assert len(plan) >= 500
        busiest: Counter[str] = Counter()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            for name, busy in server.rows(
                "select channel, count(*) from tasks where channel is not null "
                "and status in ('queued', 'running') group by channel"
            ):
                busiest[name] = max(busiest[name], busy)
            if not server.rows("select count(*) from tasks where status not in ('succeeded','failed','canceled')")[0][0]:
                break
            time.sleep(0.5)
        rows = {
            r[0]: r[1:]
            for r in server.rows("select id, status, error_code, error_message, channel, upstream from tasks")
        }
        stored = {
            r[0]: (r[1], r[2], r[3])
            for r in server.rows("select task_id, role, sha256, mime from assets where role in ('video','image')")
        }
        staging = list((server.data_dir / "files" / ".staging").iterdir())
    finally:
        server.stop()

    # None left behind: every task finished, no partial file remains.
    unfinished = {t: rows[t][0] for t in plan if rows[t][0] not in ("succeeded", "failed", "canceled")}
    assert not unfinished, f"{len(unfinished)} tasks still running: {list(unfinished.items())[:5]}"
    assert staging == []
    # Every task ended as the policy says.
    wrong = []
    for task_id, (kind, scenario, marker) in plan.items():
        status, code, message, _channel, _upstream = rows[task_id]
        want_status, want_code, want_created = expected(scenario, kind)
        if (status, code) != (want_status, want_code):
            wrong.append((kind, scenario, status, code, message))
        if fake.created[marker] != want_created:
            wrong.append((kind, scenario, "created", fake.created[marker], want_created))
    assert not wrong, f"{len(wrong)} tasks ended wrongly: {wrong[:10]}"
    # Never submitted twice (the upstream counted its creations per task marker).
    assert max(fake.created.values()) == 1
    # Every request about a task carried the credential that created it; both credentials were used.
    assert fake.wrong_credential == []
    for prefix in TYPES.values():
        assert fake.tokens_used[f"tok-{prefix}-a"] > 10 and fake.tokens_used[f"tok-{prefix}-b"] > 10
    # The concurrency limit held (sampled from the database while the run went on).
    assert busiest and max(busiest.values()) <= LIMIT, busiest
    # Retry-After was honoured: a 429'd submit came back no sooner than a second later.
    for marker, times in fake.attempt_times.items():
        if marker.startswith("mk-submit_429-"):
            assert len(times) >= 2 and times[1] - times[0] >= 0.9, (marker, times)
    # Results are the upstream's bytes, typed by their content (the fake sends application/octet-stream).
    sha = {"video/mp4": hashlib.sha256(fake.files["mp4"]).hexdigest(), "image/png": hashlib.sha256(fake.files["png"]).hexdigest()}
    succeeded = [t for t in plan if rows[t][0] == "succeeded"]
    assert len(succeeded) > 300
    for task_id in succeeded:
        role, digest, mime = stored[task_id]
        assert sha[mime] == digest and role == mime.split("/")[0].replace("image", "image")
        assert json.loads(rows[task_id][4])["outputs"][0]["url"].startswith(fake.base_url)
    # Polls of the mediarelay type were batched.
    assert fake.batch_requests > 0


def test_fake_upstream_speaks_the_dialects(fake: FakeUpstream) -> None:
    """The fake's answers parse with the dialects' own response models (the clients the channels use)."""
    from mediarelay.dialects import avatar, openai_videos, pika, unified_video

    headers = {"authorization": "Bearer t"}
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=5) as c:
        a = avatar.AvatarEnvelope.model_validate_json(c.post("/avatar/generation", json={"a": "mk-ok-900001"}).content)
        avatar.AvatarWork.model_validate_json(c.get(f"/avatar/task/{a.data}").content)
        p = pika.PikaSubmitted.model_validate_json(c.post("/pika/generate", json={"a": "mk-ok-900002"}).content)
        pika.PikaFeed.model_validate_json(c.get(f"/pika/feed/{p.id}").content)
        u = unified_video.CreateResponse.model_validate_json(c.post("/v1/video/create", json={"a": "mk-ok-900003"}).content)
        unified_video.QueryResponse.model_validate_json(c.get("/v1/video/query", params={"id": u.id}).content)
        o = openai_videos.Video.model_validate_json(c.post("/v1/videos", json={"a": "mk-ok-900004"}).content)
        openai_videos.Video.model_validate_json(c.get(f"/v1/videos/{o.id}").content)


def test_a_crash_in_the_middle_of_a_submit_never_submits_twice(fake: FakeUpstream, tmp_path: Path) -> None:
    """kill -9 while a submit is on its way (the upstream has acted, the answer is not back): after the
    restart the idempotent type asks again with the same key and gets the same task; the other type
    cannot know, so its task fails with submit_unknown. Either way the upstream made one task."""
    channels = [
        {**channel(kind, prefix, fake.base_url, short=False), "submit_timeout_seconds": 30}
        for kind, prefix in (("mediarelay", "mr"), ("gptbest", "gb"))
    ]
    env = {
        "MEDIARELAY_SANDBOX__ENABLED": "false",
        "MEDIARELAY_FETCH__ALLOWED_HOSTS": '["127.0.0.1"]',
        "MEDIARELAY_CHANNELS": json.dumps(channels),
        "FAKE_MR_A": "tok-mr-a", "FAKE_MR_B": "tok-mr-b", "FAKE_GB_A": "tok-gb-a", "FAKE_GB_B": "tok-gb-b",
    }
    server = start_server(tmp_path, **env)
    try:
        key = server.new_key()
        ids = {}
        with server.client(key) as api:
            for kind, prefix in (("mediarelay", "mr"), ("gptbest", "gb")):
                marker = f"mk-submit_timeout_after-{990000 + len(ids)}"
                body = {"model": f"{prefix}-x", "operation": "text_to_video", "prompt": f"crash {marker}"}
                ids[kind] = (api.post("/v1/tasks", json=body).json()["id"], marker)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(fake.created[m] for _, m in ids.values()):
            time.sleep(0.05)
        assert all(fake.created[m] == 1 for _, m in ids.values())
        server.kill()  # both submits are hanging at the upstream, which has already created the tasks
        server.start()
        with server.client(key) as api:
            ended = {
                kind: _wait_terminal(api, task_id) for kind, (task_id, _) in ids.items()
            }
    finally:
        server.stop()
    assert ended["mediarelay"]["status"] == "succeeded", ended
    assert ended["gptbest"]["status"] == "failed" and ended["gptbest"]["error"]["code"] == "submit_unknown"
    assert [fake.created[m] for _, m in ids.values()] == [1, 1]
    assert fake.attempts[ids["mediarelay"][1]] == 2 and fake.attempts[ids["gptbest"][1]] == 1


def _wait_terminal(api: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = api.get(f"/v1/tasks/{task_id}").json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            return dict(view)
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not finish")
