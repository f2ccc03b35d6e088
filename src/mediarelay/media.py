"""Media work: read files back (`probe`), derive posters/thumbnails, and generate real test media.

The engine uses `probe`, `make_video_previews` (a video's poster, thumbnail and sprite sheet from one
decode) and `make_thumbnail` for every channel's results. The generators
(`make_video`, `make_image`) serve the built-in sandbox channel, a fake vendor: it answers every task
with *real* files of the requested shape (an H.264 MP4 of the right size, length and frame rate, a
PNG/JPEG/WEBP of the right size) so that users can build and test their integration end to end for free.
Everything here is deliberately cheap: ultrafast x264, at most two ffmpeg threads, a static text layer
rendered once with Pillow, and a moving bar composited by ffmpeg.

All writers are atomic: output goes to a temporary file in the destination directory and is moved into place
with ``os.replace`` only once complete, so a crash or error never leaves a half-written file at ``dest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import io
import math
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

__all__ = [
    "MIME",
    "MediaInfo",
    "Runner",
    "Sheet",
    "Still",
    "make_image",
    "make_poster",
    "make_spritesheet",
    "make_thumbnail",
    "make_video",
    "make_video_previews",
    "probe",
    "sniff",
]

# Runs a blocking function with its arguments, e.g. `asyncio.to_thread` or a process pool's `run`.
Runner = Callable[..., Awaitable[Any]]

MIME = {
    "mp4": "video/mp4",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mov": "video/quicktime",
    "webm": "video/webm",
}

_FFMPEG_THREADS = 2
POSTER_AT = 1 / 3  # posters and thumbnails show the frame about a third into the video
_AUDIO_RATE = 44100
_STDERR_TAIL = 2000

# (background, accent) pairs; the prompt picks one deterministically so different prompts look different.
_PALETTES: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((0x1D, 0x2B, 0x53), (0x29, 0xAD, 0xFF)),
    ((0x2B, 0x1B, 0x3D), (0xFF, 0x77, 0xA8)),
    ((0x12, 0x35, 0x2E), (0x3D, 0xDC, 0x84)),
    ((0x3A, 0x24, 0x12), (0xFF, 0xA3, 0x00)),
    ((0x20, 0x20, 0x28), (0xC2, 0xC3, 0xC7)),
)

# Fonts with CJK coverage, tried (if present) for text that the bundled default font cannot draw.
_CJK_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class MediaInfo:
    """What a media file really is, as read back from its bytes."""

    mime: str
    width: int | None
    height: int | None
    duration: float | None
    video_codec: str | None
    audio_codec: str | None
    frame_rate: float | None


# --------------------------------------------------------------------------------------------- public API


async def make_video(
    dest: Path,
    *,
    width: int,
    height: int,
    seconds: float,
    fps: int,
    text: str,
    audio: bool = False,
    watermark: str | None = None,
) -> None:
    """Write a real H.264 MP4 of the requested shape, so sandbox users get a file that behaves like one.

    The frame shows ``text`` (word-wrapped) on a panel over a background with a moving bar and a progress bar,
    so it is visibly a video and not a still. With ``audio=True`` an AAC track of the same length is muxed in,
    a buzzy tone whose loudness pulses like speech syllables, standing in for a talking avatar's voice.
    """
    _check_video_args(width, height, seconds, fps)
    dest = Path(dest)
    palette = _palette(text)
    # the text layer is piped to ffmpeg's stdin as a PNG: no second temp file to clean up
    layer = await asyncio.to_thread(_render_video_layer, width, height, text, watermark, palette)
    with _atomic_target(dest) as tmp:
        args = _video_args(
            tmp, width=width, height=height, seconds=seconds, fps=fps, audio=audio, palette=palette
        )
        await _run_ffmpeg(args, stdin=layer)


async def make_image(dest: Path, *, width: int, height: int, text: str, fmt: str = "PNG") -> None:
    """Write a real PNG/JPEG/WEBP of exactly ``width`` x ``height`` showing ``text`` over a gradient.

    Stands in for a text-to-image result; Pillow work runs in a thread so the event loop stays free.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    pil_fmt = _image_format(fmt, allowed=("PNG", "JPEG", "WEBP"))
    await asyncio.to_thread(_make_image_sync, Path(dest), width, height, text, pil_fmt)


async def make_poster(
    video: Path, dest: Path, *, fmt: str = "JPEG", max_side: int | None = None
) -> tuple[int, int]:
    """Save a frame from about a third into ``video`` as a cover image, since many dialects return one.

    ``fmt`` is "JPEG" or "WEBP" (PNG also works). If ``max_side`` is given the image is scaled down, keeping
    the aspect ratio, so its longest side is at most ``max_side``. Returns the written (width, height).
    """
    pil_fmt = _image_format(fmt, allowed=("JPEG", "WEBP", "PNG"))
    if max_side is not None and max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    return await asyncio.to_thread(_make_poster_sync, Path(video), Path(dest), pil_fmt, max_side)


@dataclass(frozen=True)
class Still:
    """A still of the frame about a third into a video (a poster, a thumbnail): saved to ``dest`` in
    ``fmt`` ("JPEG", "WEBP" or "PNG"), scaled down so its longest side is at most ``max_side`` if given."""

    dest: Path
    fmt: str = "JPEG"
    max_side: int | None = None


@dataclass(frozen=True)
class Sheet:
    """A JPEG sprite sheet: ``columns`` x ``rows`` tiles ``tile_width`` wide (see `make_spritesheet`)."""

    dest: Path
    columns: int
    rows: int
    tile_width: int


async def make_video_previews(
    video: Path, *, stills: Sequence[Still] = (), sheet: Sheet | None = None, run: Runner = asyncio.to_thread
) -> list[tuple[int, int]]:
    """Every preview of one video from a single decode: the ``stills`` (all of the frame about a third
    in, as `make_poster`) and the sprite ``sheet`` (as `make_spritesheet`). Returns the written
    (width, height) of each, stills first, then the sheet. ``run`` runs the decode (a thread by
    default; the engine passes its media process pool)."""
    checked = [
        Still(Path(s.dest), _image_format(s.fmt, allowed=("JPEG", "WEBP", "PNG")), s.max_side) for s in stills
    ]
    for s in checked:
        if s.max_side is not None and s.max_side <= 0:
            raise ValueError(f"max_side must be positive, got {s.max_side}")
    if sheet is not None and (sheet.columns <= 0 or sheet.rows <= 0 or sheet.tile_width <= 0):
        raise ValueError(
            f"columns, rows and tile_width must be positive, got {sheet.columns}, {sheet.rows}, "
            f"{sheet.tile_width}"
        )
    if not checked and sheet is None:
        return []
    sizes: list[tuple[int, int]] = await run(_video_previews_sync, Path(video), checked, sheet)
    return sizes


async def make_spritesheet(
    video: Path, dest: Path, *, columns: int, rows: int, tile_width: int
) -> tuple[int, int]:
    """Save a JPEG grid of ``columns`` x ``rows`` frames taken at evenly spaced times, for scrubbers/previews.

    Tile ``i`` (row-major) shows the frame at ``(i + 0.5) / n`` of the duration; tiles are ``tile_width``
    wide with the video's aspect ratio. Returns the written (width, height) of the whole sheet.
    """
    if columns <= 0 or rows <= 0 or tile_width <= 0:
        raise ValueError(
            f"columns, rows and tile_width must be positive, got {columns}, {rows}, {tile_width}"
        )
    return await asyncio.to_thread(_make_spritesheet_sync, Path(video), Path(dest), columns, rows, tile_width)


async def make_thumbnail(
    image: Path, dest: Path, *, fmt: str = "WEBP", max_side: int = 320, run: Runner = asyncio.to_thread
) -> tuple[int, int]:
    """Scale an image down (never up, aspect kept) into ``fmt`` for previews; returns (width, height)."""
    pil_fmt = _image_format(fmt, allowed=("WEBP", "JPEG", "PNG"))
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    size: tuple[int, int] = await run(_make_thumbnail_sync, Path(image), Path(dest), pil_fmt, max_side)
    return size


# What a result file really is, by its first bytes: (role, extension). Upstream names and Content-Types lie.
_MAGIC: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image", "png"),
    (0, b"\xff\xd8\xff", "image", "jpg"),
    (0, b"GIF87a", "image", "gif"),
    (0, b"GIF89a", "image", "gif"),
    (0, b"\x1a\x45\xdf\xa3", "video", "webm"),
)
# ISO media files that are not videos: audio only, and HEIF/AVIF still images (not taken).
_NOT_VIDEO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(role, extension) of an image or video from its first bytes — "video"/"mp4"|"mov"|"webm" or
    "image"/"png"|"jpg"|"webp"|"gif" — or None for anything else (HTML error pages, audio, text)."""
    for offset, magic, role, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return role, ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _NOT_VIDEO_BRANDS:
            return None
        return "video", "mov" if brand == b"qt  " else "mp4"
    return None


def probe(path: Path) -> MediaInfo:
    """Read a media file back so callers record its real dimensions/duration rather than what was asked for.

    Images are read with Pillow (header only), audio/video containers with PyAV (no decoding). Synchronous
    and cheap. Raises ``ValueError`` if the file is neither.
    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(32)
    if _looks_like_image(head):
        return _probe_image(path)
    return _probe_container(path, head)


# --------------------------------------------------------------------------------------------- video


def _check_video_args(width: int, height: int, seconds: float, fps: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"video size must be positive, got {width}x{height}")
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs even dimensions, got {width}x{height}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")


def _video_args(
    out: Path,
    *,
    width: int,
    height: int,
    seconds: float,
    fps: int,
    audio: bool,
    palette: tuple[tuple[int, int, int], tuple[int, int, int]],
) -> list[str]:
    """ffmpeg arguments: colour background + moving bar + Pillow text layer + progress bar (+ audio).

    Only ``color`` sources and ``overlay`` (in yuv420) are used: they exist in every ffmpeg build and keep the
    per-frame cost tiny; drawtext is avoided because static builds may lack freetype/fontconfig.
    """
    bg, accent = palette
    dur = f"{seconds:.6f}"
    bar_w = max(2, (width // 5) & ~1)
    prog_h = max(2, (height // 90) & ~1)
    # the bar crosses the frame in ~2.5 s, whatever the size
    speed = (width + bar_w) / 2.5
    src = f"r={fps}:d={dur}"
    args = [
        "-y",
        "-loglevel",
        "error",
        "-nostdin",
        "-filter_complex_threads",
        str(_FFMPEG_THREADS),
        "-f",
        "lavfi",
        "-i",
        f"color=c={_hex(bg)}:s={width}x{height}:{src}",
        "-f",
        "lavfi",
        "-i",
        f"color=c={_hex(_mix(bg, accent, 0.55))}:s={bar_w}x{height}:{src}",
        "-f",
        "lavfi",
        "-i",
        f"color=c={_hex(accent)}:s={width}x{prog_h}:{src}",
        "-f",
        "png_pipe",
        "-i",
        "pipe:0",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"aevalsrc='{_VOICE_EXPR}':s={_AUDIO_RATE}:c=mono:d={dur}"]
    graph = (
        f"[0:v][1:v]overlay=x='mod(t*{speed:.3f},W+w)-w':y=0:eval=frame[moving];"
        "[moving][3:v]overlay=x=0:y=0[texted];"
        f"[texted][2:v]overlay=x='-w+w*min(t/{dur},1)':y=H-h:eval=frame,format=yuv420p[v]"
    )
    args += ["-filter_complex", graph, "-map", "[v]"]
    if audio:
        args += ["-map", "4:a"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(fps),
        "-g",
        str(max(1, 2 * fps)),
        "-threads",
        str(_FFMPEG_THREADS),
    ]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k", "-ar", str(_AUDIO_RATE), "-ac", "1"]
    args += ["-t", dur, "-movflags", "+faststart", "-f", "mp4", str(out)]
    return args


# A ~150 Hz buzz with a few harmonics (voice-like timbre), amplitude-modulated at 4 Hz like syllables, with a
# slower phrase envelope so there are quieter stretches too. Commas are safe inside the single quotes.
_VOICE_EXPR = (
    "0.55*(sin(2*PI*150*t)+0.5*sin(2*PI*300*t+0.3)+0.25*sin(2*PI*450*t+0.7))/1.75"
    "*pow(abs(sin(PI*4*t)),2)"
    "*(0.6+0.4*sin(2*PI*0.35*t))"
)


async def _run_ffmpeg(args: list[str], *, stdin: bytes | None = None) -> None:
    """Run ffmpeg without blocking the event loop; raise RuntimeError with the stderr tail on failure.

    If the awaiting task is cancelled, ffmpeg is killed and reaped before the cancellation propagates.
    """
    proc = await asyncio.create_subprocess_exec(
        _ffmpeg_exe(),
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        _, stderr = await proc.communicate(stdin)
    except BaseException:
        # cancelled (or anything else): don't leave an orphan encoder running
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        raise RuntimeError(f"ffmpeg exited with status {proc.returncode}: {tail or '(no stderr)'}")


# Resolved once at import: the pre-exec hook below must not load libraries in a forked child.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if the server is SIGKILLed, its encoders die with it (no orphan writers)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _ffmpeg_exe() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _render_video_layer(
    width: int,
    height: int,
    text: str,
    watermark: str | None,
    palette: tuple[tuple[int, int, int], tuple[int, int, int]],
) -> bytes:
    """The static RGBA layer (PNG bytes) ffmpeg composites on every frame: text panel plus watermark."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    _draw_text_panel(layer, text, panel_fill=(*_mix(palette[0], (0, 0, 0), 0.6), 185))
    if watermark:
        _draw_watermark(layer, watermark, bottom_reserve=max(2, height // 90))
    buf = io.BytesIO()
    layer.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- images


def _make_image_sync(dest: Path, width: int, height: int, text: str, pil_fmt: str) -> None:
    bg, accent = _palette(text)
    img = _gradient(width, height, bg, accent).convert("RGBA")
    _draw_text_panel(img, text, panel_fill=(0, 0, 0, 140))
    _save_image(img, dest, pil_fmt)


def _gradient(width: int, height: int, c0: tuple[int, int, int], c1: tuple[int, int, int]) -> Image.Image:
    """A diagonal two-colour gradient without numpy: average of a vertical and a horizontal ramp."""
    ramp = Image.linear_gradient("L")  # 256x256, black at top -> white at bottom
    vertical = ramp.resize((width, height), Image.Resampling.BILINEAR)
    horizontal = ramp.rotate(90, expand=True).resize((width, height), Image.Resampling.BILINEAR)
    diagonal = ImageChops.add(vertical, horizontal, scale=2.0)
    return ImageOps.colorize(diagonal, black=c0, white=c1)


def _make_poster_sync(video: Path, dest: Path, pil_fmt: str, max_side: int | None) -> tuple[int, int]:
    return _video_previews_sync(video, (Still(dest, pil_fmt, max_side),), None)[0]


def _make_spritesheet_sync(
    video: Path, dest: Path, columns: int, rows: int, tile_width: int
) -> tuple[int, int]:
    return _video_previews_sync(video, (), Sheet(dest, columns, rows, tile_width))[0]


# A target further ahead than this (seconds) is reached by seeking to the keyframe before it rather than
# by decoding every frame up to it; short clips (every result the bench sees) are decoded straight through.
SEEK_GAP = 2.0
# Frames up to this many pixels are decoded and scaled on the calling thread: helper threads cost more
# than they save on small frames, and a busy server has no idle core to give them anyway.
SMALL_FRAME = 640 * 360


def _video_previews_sync(video: Path, stills: Sequence[Still], sheet: Sheet | None) -> list[tuple[int, int]]:
    """Every preview of ``video`` from one open and one pass of the decoder; sizes in order (stills, sheet).

    Only the frames that are used are converted to RGB, and sprite-sheet tiles are scaled by swscale while
    converting (never a full-size RGB frame per tile). Each target time takes the first frame at or after
    it; when the stream ends early the last decoded frame fills the remaining targets.
    """
    count = sheet.columns * sheet.rows if sheet is not None else 0
    still: Image.Image | None = None
    tiles: dict[int, Image.Image] = {}
    tile_size: tuple[int, int] | None = None
    converted: tuple[av.VideoFrame, Image.Image] | None = None  # short clips reuse a frame for many tiles
    with av.open(str(video)) as container:
        if not container.streams.video:
            raise ValueError(f"{video} has no video stream")
        stream = container.streams.video[0]
        small = (stream.codec_context.width or 0) * (stream.codec_context.height or 0) <= SMALL_FRAME
        if small:
            stream.codec_context.thread_count = 1
        else:
            stream.thread_type = "AUTO"
        duration = _container_duration(container, stream) or 0.0
        targets = [(duration * (i + 0.5) / count, i) for i in range(count)]
        if stills:
            targets.append((duration * POSTER_AT, -1))

        def take(slot: int, frame: av.VideoFrame) -> None:
            nonlocal still, tile_size, converted
            if slot < 0:
                still = frame.to_image()  # type: ignore[no-untyped-call]
                return
            if converted is not None and converted[0] is frame:
                tiles[slot] = converted[1]
                return
            assert sheet is not None
            if tile_size is None:
                tile_size = (
                    sheet.tile_width,
                    max(1, round(sheet.tile_width * frame.height / max(1, frame.width))),
                )
            downscale = frame.width > tile_size[0]
            image: Image.Image = frame.to_image(  # type: ignore[no-untyped-call]
                width=tile_size[0],
                height=tile_size[1],
                interpolation="AREA" if downscale else "BILINEAR",
                threads=1 if small else 0,
            )
            converted = (frame, image)
            tiles[slot] = image

        _pick_frames(container, stream, targets, take, video)
    sizes: list[tuple[int, int]] = []
    for wanted in stills:
        assert still is not None
        image = _fit(still, wanted.max_side) if wanted.max_side is not None else still
        sizes.append(_save_image(image, wanted.dest, wanted.fmt))
    if sheet is not None:
        assert tile_size is not None
        tile_w, tile_h = tile_size
        grid = Image.new("RGB", (sheet.columns * tile_w, sheet.rows * tile_h), (0, 0, 0))
        for i in range(count):
            grid.paste(tiles[i], ((i % sheet.columns) * tile_w, (i // sheet.columns) * tile_h))
        sizes.append(_save_image(grid, sheet.dest, "JPEG"))
    return sizes


def _pick_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    targets: list[tuple[float, int]],
    take: Callable[[int, av.VideoFrame], None],
    video: Path,
) -> None:
    """Hand each (time, slot) target the first frame at or after its time, in one forward pass: decoding
    straight through, and seeking (keyframe before the target) only over gaps longer than SEEK_GAP."""
    pending = sorted(targets)
    nxt = 0
    position = 0.0
    last: av.VideoFrame | None = None
    sought: float | None = None
    time_base = stream.time_base
    while nxt < len(pending):
        target = pending[nxt][0]
        if time_base is not None and target - position > SEEK_GAP and target != sought:
            container.seek(int(target / time_base), stream=stream, backward=True)
            sought = target
        jumped = False
        for frame in container.decode(stream):
            last = frame
            position = frame.time if frame.time is not None else position
            while nxt < len(pending) and position + 1e-3 >= pending[nxt][0]:
                take(pending[nxt][1], frame)
                nxt += 1
            if nxt == len(pending):
                break
            ahead = pending[nxt][0]
            if time_base is not None and ahead - position > SEEK_GAP and ahead != sought:
                jumped = True
                break
        if not jumped:
            break
    if last is None:
        raise ValueError(f"{video} has no decodable video frames")
    for _, slot in pending[nxt:]:
        take(slot, last)


def _make_thumbnail_sync(image: Path, dest: Path, pil_fmt: str, max_side: int) -> tuple[int, int]:
    with Image.open(image) as src:
        src.seek(0)
        if src.format == "JPEG":
            src.draft(None, (2 * max_side, 2 * max_side))  # let the decoder scale down (DCT), cheaply
        img = ImageOps.exif_transpose(src)
        img.load()
    return _save_image(_fit(img, max_side), dest, pil_fmt)


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    """Scale down so the longest side is <= max_side, keeping aspect; never upscale."""
    w, h = img.size
    longest = max(w, h)
    if longest <= max_side:
        return img
    scale = max_side / longest
    size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _save_image(img: Image.Image, dest: Path, pil_fmt: str) -> tuple[int, int]:
    """Atomically save ``img`` in ``pil_fmt`` (flattening alpha for JPEG); returns the saved size."""
    if pil_fmt == "JPEG":
        img = _flatten(img)
        options: dict[str, object] = {"quality": 85}
    elif pil_fmt == "WEBP":
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        options = {"quality": 80, "method": 4}
    else:
        if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            img = img.convert("RGBA")
        options = {"compress_level": 6}
    with _atomic_target(dest) as tmp:
        img.save(tmp, format=pil_fmt, **options)
    return img.size


def _flatten(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    base = Image.new("RGB", rgba.size, (255, 255, 255))
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


# --------------------------------------------------------------------------------------------- text


def _draw_text_panel(img: Image.Image, text: str, *, panel_fill: tuple[int, int, int, int]) -> None:
    """Draw ``text`` word-wrapped and centred on a translucent rounded panel, shrinking the font to fit.

    Tiny canvases simply get no text; text the font cannot render (e.g. CJK without a CJK font installed)
    comes out as placeholder boxes rather than failing.
    """
    width, height = img.size
    text = "\n".join(" ".join(part.split()) for part in text.strip().splitlines())
    if not text:
        return
    short = min(width, height)
    pad = max(2, round(short * 0.04))
    max_text_w = int(width * 0.84) - 2 * pad
    max_text_h = int(height * 0.8) - 2 * pad
    size = max(10, round(short * 0.06))
    min_size = max(8, round(short * 0.03))
    if max_text_w < min_size or max_text_h < min_size:
        return
    while True:
        font = _font(size, text)
        line_h = _line_height(font, size)
        lines = _wrap(text, font, max_text_w)
        max_lines = max(1, max_text_h // line_h)
        if len(lines) <= max_lines or size <= min_size:
            break
        size = max(min_size, int(size * 0.85))
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _ellipsize(lines[-1], font, max_text_w, always=True)
    block_w = max(1, max(math.ceil(font.getlength(line)) for line in lines))
    block_h = line_h * len(lines)
    x0 = (width - block_w) // 2
    y0 = (height - block_h) // 2
    draw = ImageDraw.Draw(img)
    box = (x0 - pad, y0 - pad, x0 + block_w + pad, y0 + block_h + pad)
    draw.rounded_rectangle(box, radius=pad, fill=panel_fill)
    shadow = max(1, size // 18)
    for i, line in enumerate(lines):
        lw = font.getlength(line)
        lx = (width - lw) / 2
        ly = y0 + i * line_h
        draw.text((lx + shadow, ly + shadow), line, font=font, fill=(0, 0, 0, 200))
        draw.text((lx, ly), line, font=font, fill=(255, 255, 255, 255))


def _draw_watermark(img: Image.Image, watermark: str, *, bottom_reserve: int) -> None:
    """Small semi-transparent text in the bottom-right corner (above the progress bar)."""
    width, height = img.size
    short = min(width, height)
    size = max(8, round(short * 0.035))
    margin = max(2, round(short * 0.03))
    font = _font(size, watermark)
    label = _ellipsize(" ".join(watermark.split()), font, max(1, width - 2 * margin))
    if not label:
        return
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    x = width - margin - (right - left) - left
    y = height - margin - bottom_reserve - (bottom - top) - top
    shadow = max(1, size // 16)
    draw.text((x + shadow, y + shadow), label, font=font, fill=(0, 0, 0, 150))
    draw.text((x, y), label, font=font, fill=(255, 255, 255, 190))


def _wrap(text: str, font: Font, max_w: int) -> list[str]:
    """Greedy word wrap by pixel width; over-long words (or unspaced CJK runs) break per character."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if font.getlength(candidate) <= max_w:
                current = candidate
                continue
            if current:
                lines.append(current)
                current = ""
            for ch in word:
                if current and font.getlength(current + ch) > max_w:
                    lines.append(current)
                    current = ""
                current += ch
        lines.append(current)
    return lines or [""]


def _ellipsize(line: str, font: Font, max_w: int, *, always: bool = False) -> str:
    """Shorten ``line`` to fit ``max_w`` with a trailing "..." (added even if it fits when ``always``)."""
    ell = "..."
    if not always and font.getlength(line) <= max_w:
        return line
    if font.getlength(line + ell) <= max_w:
        return line + ell
    while line and font.getlength(line + ell) > max_w:
        line = line[:-1]
    return (line.rstrip() + ell) if line else ""


def _line_height(font: Font, size: int) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return max(1, round((ascent + descent) * 1.12))
    return max(1, round(size * 1.3))


def _font(size: int, text: str) -> Font:
    """Pillow's bundled scalable font, or an installed CJK font when the text needs one and one exists."""
    if any(ord(ch) >= 0x2E80 for ch in text):
        cjk = _cjk_font_path()
        if cjk is not None:
            with contextlib.suppress(OSError):
                return ImageFont.truetype(cjk, size)
    return ImageFont.load_default(size=size)


_cjk_font_cache: list[str | None] = []


def _cjk_font_path() -> str | None:
    if not _cjk_font_cache:
        _cjk_font_cache.append(next((p for p in _CJK_FONT_CANDIDATES if os.path.isfile(p)), None))
    return _cjk_font_cache[0]


# --------------------------------------------------------------------------------------------- probing


def _looks_like_image(head: bytes) -> bool:
    return (
        head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith(b"\xff\xd8\xff")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head[:6] in (b"GIF87a", b"GIF89a")
    )


def _probe_image(path: Path) -> MediaInfo:
    with Image.open(path) as img:
        mime = Image.MIME.get(img.format or "", "application/octet-stream")
        width, height = img.size
    return MediaInfo(mime, width, height, None, None, None, None)


def _probe_container(path: Path, head: bytes) -> MediaInfo:
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path} is not a readable image or media container: {exc}") from exc
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise ValueError(f"{path} has no audio or video stream")
        duration = _container_duration(container, video or audio)
        frame_rate: float | None = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            frame_rate = float(rate) if rate else None
        return MediaInfo(
            mime=_container_mime(container.format.name, head, has_video=video is not None),
            width=(video.codec_context.width or None) if video is not None else None,
            height=(video.codec_context.height or None) if video is not None else None,
            duration=duration,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            frame_rate=frame_rate,
        )


def _container_duration(
    container: av.container.InputContainer, stream: av.stream.Stream | None
) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _container_mime(format_name: str, head: bytes, *, has_video: bool) -> str:
    names = set(format_name.split(","))
    if "mp4" in names:
        if head[8:12] == b"qt  ":
            return "video/quicktime"
        return "video/mp4" if has_video else "audio/mp4"
    if "webm" in names or "matroska" in names:
        return "video/webm" if has_video else "audio/webm"
    simple = {
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
        "ogg": "audio/ogg",
        "flac": "audio/flac",
        "gif": "image/gif",
    }
    for name, mime in simple.items():
        if name in names:
            return mime
    return "application/octet-stream"


# --------------------------------------------------------------------------------------------- helpers


def _image_format(fmt: str, *, allowed: tuple[str, ...]) -> str:
    pil_fmt = fmt.strip().upper()
    if pil_fmt == "JPG":
        pil_fmt = "JPEG"
    if pil_fmt not in allowed:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of {', '.join(allowed)}")
    return pil_fmt


def _temp_path(dest: Path, suffix: str) -> Path:
    """A fresh hidden name next to ``dest`` (same filesystem, so ``os.replace`` is atomic).

    The file is not created here: the writer creates it, so it gets the usual umask-derived permissions
    (``tempfile.mkstemp`` would leave the final file 0600).
    """
    return dest.parent / f".{dest.name}.{secrets.token_hex(6)}{suffix}"


@contextlib.contextmanager
def _atomic_target(dest: Path) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; on success move it over ``dest``, on any failure delete it."""
    tmp = _temp_path(dest, ".part")
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _palette(text: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).digest()
    return _PALETTES[digest[0] % len(_PALETTES)]


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * k),
        round(a[1] + (b[1] - a[1]) * k),
        round(a[2] + (b[2] - a[2]) * k),
    )


def _hex(c: tuple[int, int, int]) -> str:
    return f"0x{c[0]:02X}{c[1]:02X}{c[2]:02X}"
