"""Tests for the sandbox channel's real-media generator: everything is read back from the written bytes."""

from __future__ import annotations

import array
import asyncio
import math
import os
import stat
import sys
import time
from collections.abc import Coroutine
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageChops

from mediarelay import media as sm
from mediarelay.media import (
    MediaInfo,
    make_image,
    make_poster,
    make_thumbnail,
    make_video,
    probe,
)

PROMPT = "A red fox jumps over a lazy dog in a sunny meadow, cinematic lighting, slow motion"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def is_jpeg(path: Path) -> bool:
    return path.read_bytes()[:2] == b"\xff\xd8"


def is_webp(path: Path) -> bool:
    head = path.read_bytes()[:12]
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def decode_frames(path: Path, indices: set[int]) -> dict[int, Image.Image]:
    wanted: dict[int, Image.Image] = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                wanted[i] = frame.to_image()  # type: ignore[no-untyped-call]
            if len(wanted) == len(indices):
                break
    return wanted


def decode_mono_samples(path: Path) -> tuple[array.array[float], int]:
    """All samples of the first channel of the first audio stream, as floats, plus the sample rate."""
    samples: array.array[float] = array.array("f")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            assert frame.format.name == "fltp", frame.format.name  # native AAC decoder output
            plane = frame.planes[0]
            chunk = array.array("f")
            chunk.frombytes(bytes(plane)[: frame.samples * 4])
            if sys.byteorder != "little":  # pragma: no cover
                chunk.byteswap()
            samples.extend(chunk)
    return samples, rate


# --------------------------------------------------------------------------------------------- video


def test_video_with_audio_reads_back_exactly(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    run(
        make_video(
            dest, width=320, height=240, seconds=2, fps=24, text=PROMPT, audio=True, watermark="sandbox"
        )
    )

    info = probe(dest)
    assert isinstance(info, MediaInfo)
    assert info.mime == "video/mp4"
    assert (info.width, info.height) == (320, 240)
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac"
    assert info.frame_rate == pytest.approx(24.0)
    assert info.duration is not None and abs(info.duration - 2.0) < 0.15

    # independently of probe(): open the container with PyAV directly
    with av.open(str(dest)) as container:
        assert "mp4" in container.format.name.split(",")
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 1
        v = container.streams.video[0]
        a = container.streams.audio[0]
        assert v.codec_context.name == "h264"
        assert v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (320, 240)
        assert v.average_rate == Fraction(24)
        assert a.codec_context.name == "aac"
        assert v.duration is not None and v.time_base is not None
        assert a.duration is not None and a.time_base is not None
        v_dur = float(v.duration * v.time_base)
        a_dur = float(a.duration * a.time_base)
        assert abs(v_dur - 2.0) < 0.15
        assert abs(a_dur - 2.0) < 0.15
        frames = sum(1 for _ in container.decode(v))
    assert abs(frames - 48) <= 1

    # +faststart: the moov atom must precede the media data
    data = dest.read_bytes()
    assert data[4:8] == b"ftyp"
    assert 0 < data.index(b"moov") < data.index(b"mdat")

    # atomic write left nothing else behind, and the file got ordinary (umask) permissions, not 0600
    assert listing(tmp_path) == ["out.mp4"]
    assert stat.S_IMODE(dest.stat().st_mode) & stat.S_IRGRP


def test_video_without_audio_has_no_audio_stream(tmp_path: Path) -> None:
    dest = tmp_path / "silent.mp4"
    run(make_video(dest, width=240, height=320, seconds=1, fps=30, text="silent"))
    info = probe(dest)
    assert (info.width, info.height) == (240, 320)
    assert info.audio_codec is None
    assert info.video_codec == "h264"
    assert info.frame_rate == pytest.approx(30.0)
    assert info.duration is not None and abs(info.duration - 1.0) < 0.15
    with av.open(str(dest)) as container:
        assert len(container.streams.audio) == 0
        assert sum(1 for _ in container.decode(video=0)) == 30


def test_fractional_duration(tmp_path: Path) -> None:
    dest = tmp_path / "frac.mp4"
    run(make_video(dest, width=160, height=90, seconds=1.5, fps=20, text="x", audio=True))
    info = probe(dest)
    assert (info.width, info.height) == (160, 90)
    assert info.duration is not None and abs(info.duration - 1.5) < 0.15


def test_video_has_motion_and_visible_text(tmp_path: Path) -> None:
    dest = tmp_path / "motion.mp4"
    run(make_video(dest, width=320, height=240, seconds=2, fps=24, text=PROMPT))
    frames = decode_frames(dest, {3, 30})
    early, late = frames[3], frames[30]
    assert early.size == late.size == (320, 240)
    assert early.tobytes() != late.tobytes()
    # not only the progress bar at the bottom: the upper half (moving bar) changes too
    top = (0, 0, 320, 120)
    diff = ImageChops.difference(early.crop(top), late.crop(top)).convert("L")
    changed = sum(diff.histogram()[40:]) / (320 * 120)
    assert changed > 0.05  # a real moving object, not just encoder noise
    # the prompt is drawn in white in the centre: there are near-white pixels there
    centre = early.crop((40, 60, 280, 180)).convert("L")
    bright = sum(centre.histogram()[230:])
    assert bright > 100


def test_audio_loudness_varies_like_speech(tmp_path: Path) -> None:
    dest = tmp_path / "voice.mp4"
    run(make_video(dest, width=160, height=120, seconds=2, fps=24, text="hello", audio=True))
    samples, rate = decode_mono_samples(dest)
    assert rate > 0
    assert abs(len(samples) / rate - 2.0) < 0.15
    window = rate // 20  # 50 ms
    rms = [
        math.sqrt(sum(s * s for s in samples[i : i + window]) / window)
        for i in range(window, len(samples) - 2 * window, window)
    ]
    assert len(rms) >= 30
    assert max(rms) > 0.05  # clearly audible, not silence
    assert max(rms) / max(min(rms), 1e-9) > 2
    # it varies at syllable rate (a few Hz), not just slowly: every half second has a loud and a quiet part
    for start in range(0, len(rms) - 9, 10):
        span = rms[start : start + 10]
        assert max(span) / max(min(span), 1e-9) > 2, (start, span)


def test_cjk_prompt_does_not_crash(tmp_path: Path) -> None:
    video = tmp_path / "cjk.mp4"
    image = tmp_path / "cjk.png"
    long_cjk = "苹果蒸发" * 60  # one unspaced run, has to be broken per character
    run(make_video(video, width=320, height=240, seconds=1, fps=24, text=long_cjk, watermark="沙盒水印"))
    run(make_image(image, width=300, height=200, text="苹果蒸发 apple evaporates"))
    assert (probe(video).width, probe(video).height) == (320, 240)
    with Image.open(image) as img:
        assert img.size == (300, 200)


def test_long_and_empty_prompts(tmp_path: Path) -> None:
    run(make_video(tmp_path / "long.mp4", width=128, height=96, seconds=1, fps=12, text="word " * 2000))
    run(make_video(tmp_path / "empty.mp4", width=128, height=96, seconds=1, fps=12, text="   "))
    run(make_image(tmp_path / "tiny.png", width=3, height=2, text=PROMPT))
    assert probe(tmp_path / "long.mp4").video_codec == "h264"
    assert probe(tmp_path / "empty.mp4").video_codec == "h264"
    assert probe(tmp_path / "tiny.png").width == 3


@pytest.mark.parametrize(("width", "height"), [(321, 240), (320, 241), (0, 240), (-2, 240)])
def test_bad_dimensions_raise_value_error(tmp_path: Path, width: int, height: int) -> None:
    dest = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        run(make_video(dest, width=width, height=height, seconds=1, fps=24, text="x"))
    assert listing(tmp_path) == []


@pytest.mark.parametrize(("seconds", "fps"), [(1.0, 0), (1.0, -5), (-1.0, 24), (0.0, 24), (math.nan, 24)])
def test_bad_timing_raises_and_writes_nothing(tmp_path: Path, seconds: float, fps: int) -> None:
    dest = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        run(make_video(dest, width=320, height=240, seconds=seconds, fps=fps, text="x"))
    assert listing(tmp_path) == []


def test_real_ffmpeg_failure_is_atomic(tmp_path: Path) -> None:
    # libx264 refuses 20000x2 (even, so it passes validation); bare ffmpeg leaves a 0-byte file behind here
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"previous good file")
    with pytest.raises(RuntimeError) as excinfo:
        run(make_video(dest, width=20000, height=2, seconds=1, fps=24, text="x"))
    assert "libx264" in str(excinfo.value) or "width" in str(excinfo.value)
    assert dest.read_bytes() == b"previous good file"
    assert listing(tmp_path) == ["out.mp4"]


def test_partial_output_from_failing_ffmpeg_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fake ffmpeg that writes half a file to its output path and then dies
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text(
        "#!/bin/sh\n"
        "for last; do :; done\n"
        'printf partial > "$last"\n'
        'echo "boom: simulated encoder crash" >&2\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sm, "_ffmpeg_exe", lambda: str(fake))
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "clip.mp4"
    with pytest.raises(RuntimeError, match=r"status 3: boom: simulated encoder crash"):
        run(make_video(dest, width=320, height=240, seconds=1, fps=24, text="x", audio=True))
    assert listing(out) == []


def test_cancellation_kills_ffmpeg_and_cleans_up(tmp_path: Path) -> None:
    dest = tmp_path / "cancelled.mp4"

    async def scenario() -> None:
        task = asyncio.create_task(make_video(dest, width=720, height=1280, seconds=30, fps=30, text=PROMPT))
        await asyncio.sleep(0.4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert listing(tmp_path) == []


def test_realistic_portrait_video_with_audio(tmp_path: Path) -> None:
    """The realistic avatar case; also checks the encode does not block the event loop."""
    dest = tmp_path / "avatar.mp4"

    async def scenario() -> tuple[float, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        start = time.perf_counter()
        try:
            await make_video(
                dest,
                width=720,
                height=1280,
                seconds=10,
                fps=30,
                text=PROMPT,
                audio=True,
                watermark="mediarelay sandbox",
            )
        finally:
            done.set()
            await tick_task
        return time.perf_counter() - start, ticks

    elapsed, ticks = run(scenario())
    print(f"720x1280 10s 30fps + audio: {elapsed:.2f}s wall, {ticks} loop ticks")
    info = probe(dest)
    assert (info.width, info.height) == (720, 1280)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.frame_rate == pytest.approx(30.0)
    assert info.duration is not None and abs(info.duration - 10.0) < 0.15
    assert elapsed < 30  # normally ~1-2 s on 2 cores; this only catches pathological regressions
    assert ticks >= min(20, int(elapsed / 0.01) // 4)  # the loop kept running while ffmpeg worked


# --------------------------------------------------------------------------------------------- posters


def test_poster_jpeg_full_size(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    poster = tmp_path / "poster.jpg"
    run(make_video(video, width=320, height=240, seconds=1, fps=24, text=PROMPT))
    size = run(make_poster(video, poster))
    assert size == (320, 240)
    assert is_jpeg(poster)
    with Image.open(poster) as img:
        assert img.format == "JPEG"
        assert img.size == (320, 240)
    assert probe(poster) == MediaInfo("image/jpeg", 320, 240, None, None, None, None)


@pytest.mark.parametrize(
    ("w", "h", "max_side", "expected"),
    [(320, 240, 100, (100, 75)), (240, 320, 160, (120, 160)), (320, 240, 1000, (320, 240))],
)
def test_poster_webp_scaled(tmp_path: Path, w: int, h: int, max_side: int, expected: tuple[int, int]) -> None:
    video = tmp_path / "v.mp4"
    poster = tmp_path / "poster.webp"
    run(make_video(video, width=w, height=h, seconds=1, fps=12, text="poster"))
    size = run(make_poster(video, poster, fmt="WEBP", max_side=max_side))
    assert size == expected
    assert is_webp(poster)
    with Image.open(poster) as img:
        assert img.size == expected
    assert probe(poster).mime == "image/webp"
    assert sorted(listing(tmp_path)) == ["poster.webp", "v.mp4"]


def test_poster_is_taken_about_a_third_in(tmp_path: Path) -> None:
    # the progress bar along the bottom edge grows linearly with time: its length dates the frame
    video = tmp_path / "v.mp4"
    poster = tmp_path / "poster.png"
    run(make_video(video, width=320, height=240, seconds=3, fps=24, text="when"))
    run(make_poster(video, poster, fmt="PNG"))
    with Image.open(poster) as img:
        rgb = img.convert("RGB")
    y = rgb.height - 1
    bar = rgb.getpixel((0, y))  # the progress bar grows from the left edge
    assert isinstance(bar, tuple)

    def on_bar(x: int) -> bool:
        px = rgb.getpixel((x, y))
        assert isinstance(px, tuple)
        return sum(abs(a - b) for a, b in zip(px, bar, strict=True)) < 60

    run_length = next((x for x in range(rgb.width) if not on_bar(x)), rgb.width)
    filled = run_length / rgb.width
    assert 0.25 < filled < 0.42


def test_poster_rejects_bad_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        run(make_poster(tmp_path / "missing.mp4", tmp_path / "p.gif", fmt="GIF"))


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("fmt", "name", "check", "mime"),
    [
        ("PNG", "a.png", is_png, "image/png"),
        ("JPEG", "a.jpg", is_jpeg, "image/jpeg"),
        ("jpg", "b.jpg", is_jpeg, "image/jpeg"),
        ("WEBP", "a.webp", is_webp, "image/webp"),
    ],
)
def test_make_image_formats_and_sizes(tmp_path: Path, fmt: str, name: str, check: Any, mime: str) -> None:
    dest = tmp_path / name
    run(make_image(dest, width=333, height=201, text=PROMPT, fmt=fmt))
    assert check(dest)
    with Image.open(dest) as img:
        assert img.size == (333, 201)
        pixels = img.convert("RGB")
        # a gradient, not a flat fill: opposite corners differ
        assert pixels.getpixel((0, 0)) != pixels.getpixel((332, 200))
    assert probe(dest) == MediaInfo(mime, 333, 201, None, None, None, None)
    assert listing(tmp_path) == [name]


def test_make_image_default_is_png_and_rejects_unknown_formats(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    run(make_image(dest, width=64, height=64, text="x"))
    assert is_png(dest)
    with pytest.raises(ValueError):
        run(make_image(tmp_path / "x.bmp", width=64, height=64, text="x", fmt="BMP"))
    with pytest.raises(ValueError):
        run(make_image(tmp_path / "x.png", width=0, height=64, text="x"))
    assert listing(tmp_path) == ["img"]


# --------------------------------------------------------------------------------------------- thumbnails


def test_thumbnail_scales_down_keeping_aspect(tmp_path: Path) -> None:
    src = tmp_path / "big.png"
    run(make_image(src, width=1000, height=500, text="big"))
    thumb = tmp_path / "thumb.webp"
    assert run(make_thumbnail(src, thumb)) == (320, 160)
    assert is_webp(thumb)
    with Image.open(thumb) as img:
        assert img.size == (320, 160)

    small = tmp_path / "small.jpg"
    assert run(make_thumbnail(src, small, fmt="JPEG", max_side=100)) == (100, 50)
    assert is_jpeg(small)


def test_thumbnail_never_upscales_and_flattens_alpha_for_jpeg(tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    Image.new("RGBA", (100, 40), (255, 0, 0, 0)).save(src)
    out = tmp_path / "small.jpg"
    assert run(make_thumbnail(src, out, fmt="JPEG", max_side=320)) == (100, 40)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (100, 40)
        # transparent pixels were composited on white, not turned black
        px = img.getpixel((50, 20))
        assert isinstance(px, tuple) and min(px) > 200


# --------------------------------------------------------------------------------------------- probe


def test_probe_rejects_non_media(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(64) + b"not media at all" * 10)
    with pytest.raises(ValueError):
        probe(junk)
