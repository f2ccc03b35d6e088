"""Test media for the local channel: two real faces from files that ship inside installed wheels (no
network), small videos and sounds made here, a tiny HTTP server on 127.0.0.1 that serves them, and the
measurements the tests assert on (sharpness, face geometry, mouth opening, loudness).

Faces: Grace Hopper (matplotlib's sample data) and Eileen Collins (scikit-image's `astronaut.png`).
"""

from __future__ import annotations

import importlib.util
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from mediarelay.processing import faces

AUDIO_RATE = 44100


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin, f"{package} is not installed (mediarelay[test])"
    path = Path(spec.origin).parent.joinpath(*parts)
    assert path.is_file(), path
    return path


@cache
def hopper() -> np.ndarray:
    """Grace Hopper, head and shoulders, 320x320."""
    img = cv2.imread(str(_package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")))
    return cv2.resize(img[40:440, 60:460], (320, 320), interpolation=cv2.INTER_AREA)


@cache
def astronaut() -> np.ndarray:
    """Eileen Collins, head and shoulders, 320x320."""
    img = cv2.imread(str(_package_file("skimage", "data", "astronaut.png")))
    return cv2.resize(img[0:280, 85:365], (320, 320), interpolation=cv2.INTER_AREA)


def png(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def tone(seconds: float, envelope: np.ndarray | None = None) -> np.ndarray:
    """A voice-like buzz (150 Hz and harmonics), shaped by `envelope` (one gain per sample)."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    buzz = (
        np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 450 * t)
    ) / 1.8
    gain = np.ones_like(t) if envelope is None else envelope
    return (0.5 * buzz * gain).astype(np.float32)


def syllables(seconds: float) -> np.ndarray:
    """Loud and quiet stretches like speech: ~1.7 bursts a second, with a silent half second."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    env = np.clip(np.sin(2 * np.pi * 1.7 * t), 0, 1) ** 1.5 * (0.4 + 0.6 * (t > 0.5))
    return tone(seconds, env)


def m4a(samples: np.ndarray) -> bytes:
    """Mono AAC in an MP4 container (what a phone records)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def talking_head_video(face: np.ndarray, *, seconds: float, fps: int, size: int = 240) -> bytes:
    """The face drifting left and right (so that tracking has something to follow), with a sound track."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound = tone(seconds)
        per_frame = AUDIO_RATE // fps
        for i in range(int(seconds * fps)):
            shift = 8 * np.sin(i / 4)
            matrix = np.float32([[size / face.shape[1], 0, shift], [0, size / face.shape[0], 0]])
            img = cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(frame))
            chunk = sound[i * per_frame : (i + 1) * per_frame].reshape(1, -1)
            audio = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            audio.sample_rate, audio.pts = AUDIO_RATE, i * per_frame
            out.mux(aus.encode(audio))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return buf.getvalue()


# -- reading results back --------------------------------------------------------------------------


def video_facts(path: Path) -> dict[str, Any]:
    """Decoded frame count, frame rate, frames (BGR), and the sound as mono samples."""
    frames = []
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        rate = vs.average_rate
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
    samples = []
    with av.open(str(path)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    samples.append(out.to_ndarray().reshape(-1))
    sound = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    return {"frames": frames, "rate": rate, "sound": sound, "seconds": len(sound) / AUDIO_RATE}


def landmarks(img: np.ndarray) -> np.ndarray:
    points = faces.Landmarker().detect(img)
    assert points is not None, "no face found"
    return points


def mouth_openings(frames: list[np.ndarray]) -> np.ndarray:
    """Per frame: the gap between the inner lips, per unit of face height (forehead to chin)."""
    tracker = faces.Landmarker(tracking=True)
    out = []
    for img in frames:
        p = tracker.detect(img)
        assert p is not None, "lost the face"
        out.append(
            np.linalg.norm(p[faces.LIP_TOP] - p[faces.LIP_BOTTOM])
            / np.linalg.norm(p[faces.FOREHEAD] - p[faces.CHIN])
        )
    tracker.close()
    return np.array(out)


def loudness_per_frame(sound: np.ndarray, fps: float, frames: int) -> np.ndarray:
    step = AUDIO_RATE / fps
    return np.array(
        [
            np.sqrt(
                np.mean(sound[int(i * step) : int((i + 1) * step)] ** 2)
                if int(i * step) < len(sound)
                else 0.0
            )
            for i in range(frames)
        ]
    )


def laplacian_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


# -- serving inputs ----------------------------------------------------------------------------------


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `files` by path; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
