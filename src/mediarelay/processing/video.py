"""Video in and out with PyAV (a core dependency): decode frames as BGR arrays, encode H.264 + AAC MP4.

The jobs that make videos (face swap, talking avatar) keep the input's frame count, timestamps and frame
rate, and carry the sound over re-encoded as AAC (an MP4 cannot hold every codec a source may have).
The file is written under a temporary name and renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from mediarelay.processing import JobError
from mediarelay.processing.images import Img

CRF = "20"
PRESET = "veryfast"
AUDIO_RATE = 44100


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction
    frames: int  # an estimate when the container does not say
    seconds: float
    has_audio: bool


def probe(path: Path) -> VideoInfo:
    """What the input video is; `JobError("unreadable_video")` if it has no decodable video stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise JobError("unreadable_video", "the input has no video stream")
            vs = container.streams.video[0]
            rate = Fraction(vs.average_rate or vs.guessed_rate or 25)
            seconds = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else 0.0
            if not seconds and container.duration:
                seconds = container.duration / 1_000_000
            frames = int(vs.frames) or round(seconds * rate)
            return VideoInfo(
                width=vs.codec_context.width,
                height=vs.codec_context.height,
                rate=rate,
                frames=max(1, frames),
                seconds=seconds,
                has_audio=bool(container.streams.audio),
            )
    except av.FFmpegError as exc:
        raise JobError("unreadable_video", f"the input is not a readable video ({exc})") from None


def even(n: int) -> int:
    """H.264 in yuv420p needs even sizes: one row or column is dropped from odd ones."""
    return max(2, n - n % 2)


class Mp4Writer:
    """An H.264 (+ AAC) MP4 being written; `close()` renames it into place, `abort()` removes it."""

    def __init__(self, path: Path, *, width: int, height: int, rate: Fraction, audio: bool) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.width, self.height = even(width), even(height)
        self.container: Any = av.open(str(self.tmp), "w", format="mp4")
        self.video: Any = self.container.add_stream("libx264", rate=rate)
        self.video.width, self.video.height = self.width, self.height
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": CRF, "preset": PRESET}
        self.video.codec_context.thread_count = 1  # one worker process per core already
        self.audio: Any = self.container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        self.frames = 0
        self._samples = 0

    def write(self, img: Img, pts: int | None = None, time_base: Fraction | None = None) -> None:
        """One frame; without `pts` frames are numbered at the stream's rate."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[: self.height, : self.width]), "bgr24")
        if pts is not None and time_base is not None:
            frame.pts, frame.time_base = pts, time_base
        else:
            frame.pts, frame.time_base = self.frames, 1 / Fraction(self.video.codec_context.framerate)
        self.container.mux(self.video.encode(frame))
        self.frames += 1

    def write_audio_frame(self, frame: Any) -> None:
        """A decoded audio frame of the input, re-encoded (resampled to mono AAC by the encoder)."""
        if self.audio is not None:
            frame.pts = None  # the encoder's resampler times the samples itself
            self.container.mux(self.audio.encode(frame))

    def write_samples(self, samples: NDArray[np.float32]) -> None:
        """Mono float samples at `AUDIO_RATE`, appended to the sound track."""
        if self.audio is None or not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts, frame.time_base = self._samples, Fraction(1, AUDIO_RATE)
        self._samples += len(samples)
        self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # already failing; the file goes anyway
            self.container.close()
        self.tmp.unlink(missing_ok=True)


def transform(
    src: Path, dest: Path, process: Callable[[Img, int], Img], progress: Callable[[float], None]
) -> int:
    """Re-encode `src` into `dest` frame by frame through `process(frame, index)`, keeping every frame's
    timestamp, the frame rate and the sound. Returns the number of frames written."""
    info = probe(src)
    try:
        container: Any = av.open(str(src))
    except av.FFmpegError as exc:
        raise JobError("unreadable_video", f"the input is not a readable video ({exc})") from None
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        streams = [vs, *container.streams.audio[:1]]
        writer = Mp4Writer(dest, width=info.width, height=info.height, rate=info.rate, audio=len(streams) > 1)
        try:
            for frame in _decode(container, streams):
                if isinstance(frame, av.VideoFrame):
                    pixels: Any = frame.to_ndarray(format="bgr24")
                    img = process(pixels, writer.frames)
                    writer.write(img, frame.pts, frame.time_base)
                    if writer.frames % 5 == 0:
                        progress(min(0.99, writer.frames / info.frames))
                else:
                    writer.write_audio_frame(frame)
            if writer.frames == 0:
                raise JobError("unreadable_video", "the input video has no frames")
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return writer.frames


def _decode(container: Any, streams: list[Any]) -> Iterator[Any]:
    try:
        for packet in container.demux(*streams):
            yield from packet.decode()
    except av.FFmpegError as exc:
        raise JobError("unreadable_video", f"the input video could not be decoded ({exc})") from None


def first_frame(path: Path) -> Img:
    """The first frame of a video (an avatar given as a clip is animated from its first frame)."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                img: Any = frame.to_ndarray(format="bgr24")
                return np.ascontiguousarray(img, dtype=np.uint8)
    except av.FFmpegError as exc:
        raise JobError("unreadable_video", f"the input is not a readable video ({exc})") from None
    raise JobError("unreadable_video", "the input video has no frames")


def read_audio(path: Path, *, rate: int = AUDIO_RATE, max_seconds: float) -> NDArray[np.float32]:
    """The first audio stream of `path` as mono float samples at `rate`."""
    chunks: list[NDArray[np.float32]] = []
    total = 0
    limit = int(max_seconds * rate)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise JobError("unreadable_audio", "the audio input has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.float32)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > limit:
                    raise JobError("input_too_long", f"the audio is longer than {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))
    except av.FFmpegError as exc:
        raise JobError("unreadable_audio", f"the audio input is not readable ({exc})") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if len(samples) < rate // 10:
        raise JobError("unreadable_audio", "the audio input is empty")
    return samples
