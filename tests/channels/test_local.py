"""The `local` channel end to end: a real server with only a local channel, inputs served from 127.0.0.1,
tasks submitted in the face-swap and avatar dialects (and mediarelay's own API), results downloaded and
measured. Every task of the module is submitted at once (the pool runs them two at a time) and each
test then waits for its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from local_media import (
    astronaut,
    decode,
    hopper,
    landmarks,
    laplacian_var,
    loudness_per_frame,
    m4a,
    mouth_openings,
    png,
    serve,
    syllables,
    talking_head_video,
    video_facts,
)

from conftest import Server, start_server, wait_until
from mediarelay.channels import local as local_channel
from mediarelay.channels.base import ChannelConfig, ChannelDeps
from mediarelay.channels.registry import TYPES
from mediarelay.dialects.faceswap import FILTERS as DIALECT_FILTERS
from mediarelay.processing import faces
from mediarelay.processing.filters import FILTERS

CLIP_SECONDS, CLIP_FPS = 2, 12
VOICE_SECONDS = 2.0


def local_env(tmp: Path, **options: Any) -> dict[str, str]:
    channel = {"name": "cpu", "type": "local", "options": {"workers": 2, **options}}
    return {
        "MEDIARELAY_SANDBOX__ENABLED": "false",  # nothing else may take (or hide) the local channel's tasks
        "MEDIARELAY_FETCH__ALLOWED_HOSTS": '["127.0.0.1"]',  # inputs come from a server on loopback
        "MEDIARELAY_CHANNELS": json.dumps([channel]),
        "MEDIARELAY_DATA_DIR": str(tmp / "data"),  # the channel's default work directory lives in it
    }


def small(img: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def noisy(img: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def blank() -> np.ndarray:
    ramp = np.linspace(40, 220, 256, dtype=np.uint8)
    return np.dstack([np.tile(ramp, (256, 1))] * 3)


@pytest.fixture(scope="module")
def inputs() -> Iterator[str]:
    files = {
        "/hopper.png": png(hopper()),
        "/astronaut.png": png(astronaut()),
        "/small.png": png(small(astronaut(), 160)),
        "/noisy.png": png(noisy(small(astronaut(), 200))),
        "/blank.png": png(blank()),
        "/text.png": b"this is not an image",
        "/clip.mp4": talking_head_video(hopper(), seconds=CLIP_SECONDS, fps=CLIP_FPS),
        "/voice.m4a": m4a(syllables(VOICE_SECONDS)),
    }
    with serve(files) as base:
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("local")
    srv = start_server(tmp, **local_env(tmp))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.new_key("local")) as client:
        yield client


# -- submitting and reading back ---------------------------------------------------------------------


def task_id(server: Server, public_id: str) -> str:
    [(tid,)] = server.rows(f"select id from tasks where public_id = '{public_id}'")
    return str(tid)


def create(server: Server, api: httpx.Client, body: dict[str, Any]) -> str:
    resp = api.post("/createTask", json=body)
    assert resp.status_code == 200 and resp.json()["code"] == 200, resp.text
    return task_id(server, resp.json()["data"]["promptId"])


def native(api: httpx.Client, body: dict[str, Any]) -> str:
    resp = api.post("/v1/tasks", json=body)
    assert resp.status_code in (200, 201, 202), resp.text
    return str(resp.json()["id"])


def view(api: httpx.Client, tid: str) -> dict[str, Any]:
    resp = api.get(f"/v1/tasks/{tid}")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def finished(api: httpx.Client, tid: str, timeout: float = 90) -> dict[str, Any]:
    done: dict[str, Any] = wait_until(
        lambda: view(api, tid), lambda v: v["status"] in ("succeeded", "failed", "canceled"), timeout, 0.3
    )
    return done


def succeeded(api: httpx.Client, tid: str) -> dict[str, Any]:
    done = finished(api, tid)
    assert done["status"] == "succeeded", done["error"]
    return done


def files(api: httpx.Client, done: dict[str, Any], role: str) -> list[bytes]:
    found = sorted((o for o in done["outputs"] if o["role"] == role), key=lambda o: o["index"])
    assert found, done["outputs"]
    result = []
    for output in found:
        resp = api.get(output["url"])
        assert resp.status_code == 200
        result.append(resp.content)
    return result


def one_image(api: httpx.Client, tid: str) -> np.ndarray:
    [data] = files(api, succeeded(api, tid), "image")
    return decode(data)


@dataclass
class Batch:
    upscale2: str
    upscale4: str
    filters: dict[str, str]
    enhance: str
    swap: str  # astronaut's face onto Hopper, and Hopper's onto the astronaut (two targets, one task)
    video: str  # the parent of one face-swapped video
    avatar: str
    tts: str
    no_face: str
    not_image: str
    bad_filter: str
    missing: str


@pytest.fixture(scope="module")
def batch(server: Server, api: httpx.Client, inputs: str) -> Batch:
    url = inputs.__add__
    return Batch(
        upscale2=create(server, api, {"taskType": 6, "targetUrls": [url("/small.png")], "scale": 2}),
        upscale4=create(server, api, {"taskType": 6, "targetUrls": [url("/small.png")], "scale": 4}),
        filters={
            name: create(server, api, {"taskType": 5, "targetUrls": [url("/small.png")], "filter": name})
            for name in DIALECT_FILTERS
        },
        enhance=create(server, api, {"taskType": 4, "targetUrls": [url("/noisy.png")]}),
        swap=create(
            server,
            api,
            {"taskType": 3, "faceUrl": url("/astronaut.png"), "targetUrls": [url("/hopper.png")]},
        ),
        video=create(
            server, api, {"taskType": 7, "faceUrl": url("/astronaut.png"), "targetUrls": [url("/clip.mp4")]}
        ),
        avatar=native(
            api,
            {
                "model": "local-avatar",
                "operation": "avatar",
                "images": [url("/astronaut.png")],
                "audio_url": url("/voice.m4a"),
            },
        ),
        tts=api.post(
            "/avatar/generation",
            json={
                "avatar_url": url("/astronaut.png"),
                "use_voice": {
                    "voice_engine_id": "x",
                    "audio_id": "y",
                    "language": "en",
                    "text": "Hello there",
                },
            },
        ).json()["data"],
        no_face=create(
            server, api, {"taskType": 3, "faceUrl": url("/astronaut.png"), "targetUrls": [url("/blank.png")]}
        ),
        not_image=create(server, api, {"taskType": 4, "targetUrls": [url("/text.png")]}),
        bad_filter=native(
            api,
            {
                "model": "filter",
                "operation": "filter",
                "target_urls": [url("/small.png")],
                "filter": "sepia-ish",
            },
        ),
        missing=create(server, api, {"taskType": 4, "targetUrls": [url("/nothing-here.png")]}),
    )


# -- acceptance criteria -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_upscale_is_larger_and_sharper_than_plain_resampling(
    api: httpx.Client, batch: Batch, scale: int
) -> None:
    src = small(astronaut(), 160)
    out = one_image(api, batch.upscale2 if scale == 2 else batch.upscale4)
    assert out.shape == (160 * scale, 160 * scale, 3)
    bicubic = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    # Same picture (not some other image of the right size) …
    assert np.abs(out.astype(int) - bicubic).mean() < 12
    # … with measurably more high-frequency energy than plain resampling.
    assert laplacian_var(out) > 1.5 * laplacian_var(bicubic), (laplacian_var(out), laplacian_var(bicubic))


def test_every_filter_changes_the_image_in_its_own_way(api: httpx.Client, batch: Batch) -> None:
    src = small(astronaut(), 160).astype(np.float64)
    out = {name: one_image(api, tid).astype(np.float64) for name, tid in batch.filters.items()}
    assert set(out) == set(FILTERS) == set(local_channel.FILTER_NAMES) == set(DIALECT_FILTERS)
    for name, img in out.items():
        assert img.shape == src.shape, name
        assert np.abs(img - src).mean() > 5, f"{name} barely changed the image"
    for a in out:  # and no two filters give the same look
        for b in out:
            if a < b:
                assert np.abs(out[a] - out[b]).mean() > 3, (a, b)

    def red_minus_blue(img: np.ndarray) -> float:
        return float((img[..., 2] - img[..., 0]).mean())

    def saturation(img: np.ndarray) -> float:
        return float(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV)[..., 1].mean())

    for grey in ("sketch", "noir"):
        assert np.abs(out[grey][..., 0] - out[grey][..., 2]).max() < 2, grey
    assert red_minus_blue(out["warm"]) > red_minus_blue(src) + 10
    assert red_minus_blue(out["cool"]) < red_minus_blue(src) - 10
    assert red_minus_blue(out["vintage"]) > red_minus_blue(src)  # sepia
    assert saturation(out["vivid"]) > saturation(src) * 1.2
    colours = {n: len(np.unique(img.reshape(-1, 3), axis=0)) for n, img in out.items()}
    assert colours["cartoon"] < len(np.unique(src.reshape(-1, 3), axis=0)) / 4  # flat colour areas

    def flat(img: np.ndarray) -> float:  # how often a pixel has exactly its right neighbour's colour
        return float((img[:, 1:] == img[:, :-1]).all(axis=2).mean())

    assert flat(out["oil"]) > flat(src) + 0.2  # brush strokes of one colour


def test_enhance_removes_noise_and_keeps_the_picture(api: httpx.Client, batch: Batch) -> None:
    clean = small(astronaut(), 200)
    given = noisy(clean)
    out = one_image(api, batch.enhance)
    assert out.shape == given.shape

    def grain(img: np.ndarray) -> float:  # what a median filter removes, in a flat background patch
        patch = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[5:45, 150:195].astype(float)
        return float(np.abs(patch - cv2.medianBlur(patch.astype(np.uint8), 5)).mean())

    assert grain(out) < 0.6 * grain(given), (grain(out), grain(given))
    assert np.abs(out.astype(int) - clean).mean() < 20


def test_face_swap_puts_the_source_face_geometry_on_the_target(api: httpx.Client, batch: Batch) -> None:
    out = one_image(api, batch.swap)
    assert out.shape == hopper().shape
    source, target, result = landmarks(astronaut()), landmarks(hopper()), landmarks(out)
    to_source = faces.shape_distance(result, source)
    to_target = faces.shape_distance(result, target)
    assert to_source < 0.6 * to_target, (to_source, to_target)
    # The rest of the target stays: the top of the cap and the background are untouched.
    assert np.abs(out[:40].astype(int) - hopper()[:40]).mean() < 2


def test_video_face_swap_keeps_frames_rate_and_sound(api: httpx.Client, batch: Batch, tmp_path: Path) -> None:
    parent = finished(api, batch.video)
    assert parent["status"] == "succeeded", parent
    [child] = parent["children"]
    [data] = files(api, succeeded(api, child), "video")
    (tmp_path / "out.mp4").write_bytes(data)
    facts = video_facts(tmp_path / "out.mp4")
    assert len(facts["frames"]) == CLIP_SECONDS * CLIP_FPS
    assert facts["rate"] == CLIP_FPS
    assert abs(facts["seconds"] - CLIP_SECONDS) < 0.1
    assert np.sqrt(np.mean(facts["sound"] ** 2)) > 0.05  # the tone is still there, not silence
    middle = facts["frames"][len(facts["frames"]) // 2]
    result = landmarks(middle)
    to_source = faces.shape_distance(result, landmarks(astronaut()))
    to_target = faces.shape_distance(result, landmarks(hopper()))
    assert to_source < 0.75 * to_target, (to_source, to_target)


def test_avatar_mouth_follows_the_loudness_of_the_audio(
    api: httpx.Client, batch: Batch, tmp_path: Path
) -> None:
    [data] = files(api, succeeded(api, batch.avatar), "video")
    (tmp_path / "avatar.mp4").write_bytes(data)
    facts = video_facts(tmp_path / "avatar.mp4")
    assert abs(facts["seconds"] - VOICE_SECONDS) < 0.1  # the given audio, muxed in
    assert facts["rate"] == 25
    assert abs(len(facts["frames"]) - VOICE_SECONDS * 25) <= 1
    openings = mouth_openings(facts["frames"])
    loud = loudness_per_frame(facts["sound"], 25, len(openings))
    assert openings.max() > 1.5 * openings.min()  # the mouth really moves
    r = float(np.corrcoef(openings, loud)[0, 1])
    assert r > 0.6, r


# -- what the channel refuses -----------------------------------------------------------------------


def test_text_to_speech_avatar_is_unsupported(server: Server, api: httpx.Client, batch: Batch) -> None:
    done = finished(api, task_id(server, batch.tts))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "unsupported"
    assert "text-to-speech" in done["error"]["message"]


@pytest.mark.parametrize(
    ("which", "code", "words"),
    [
        ("no_face", "no_face", "no face found in the target image"),
        ("not_image", "unreadable_image", "not a readable image"),
        ("bad_filter", "unsupported_filter", "unknown filter 'sepia-ish'"),
        ("missing", "input_unavailable", "HTTP 404"),
    ],
)
def test_bad_input_fails_with_a_clear_error(
    api: httpx.Client, batch: Batch, which: str, code: str, words: str
) -> None:
    done = finished(api, getattr(batch, which))
    assert done["status"] == "failed"
    assert done["error"]["code"] == code, done["error"]
    assert words in done["error"]["message"]


def test_results_are_staged_under_the_data_dir(server: Server, api: httpx.Client, batch: Batch) -> None:
    succeeded(api, batch.upscale2)
    work = server.data_dir / "local-channel" / "cpu" / batch.upscale2
    assert (work / "result.json").is_file() and (work / "result-0.png").is_file()


# -- durability --------------------------------------------------------------------------------------


def test_a_job_lost_with_a_killed_server_runs_again(tmp_path: Path, inputs: str) -> None:
    env = local_env(tmp_path, workers=1)
    srv = start_server(tmp_path, **env)
    try:
        with srv.client(srv.new_key()) as api:
            body = {"taskType": 7, "faceUrl": inputs + "/astronaut.png", "targetUrls": [inputs + "/clip.mp4"]}
            parent = create(srv, api, body)
            [child] = wait_until(lambda: view(api, parent)["children"], bool, 30)
            wait_until(lambda: view(api, child), lambda v: v["status"] == "running", 60, 0.1)
            srv.kill()  # mid-job: the worker dies with it
            work = srv.data_dir / "local-channel" / "cpu" / child
            assert not (work / "result.json").exists()
            srv.start()
            done = finished(api, child)
            assert done["status"] == "succeeded", done["error"]
            assert finished(api, parent)["status"] == "succeeded"
            assert srv.rows(f"select count(*) from tasks where parent_id = '{parent}'") == [(1,)]
    finally:
        srv.stop()


# -- the channel type ---------------------------------------------------------------------------------


def test_the_type_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_channel, "missing_extra", lambda: ["mediapipe"])
    with pytest.raises(ValueError, match=r"mediarelay\[local\]"):
        TYPES["local"](ChannelConfig(name="cpu", type="local"), ChannelDeps())
