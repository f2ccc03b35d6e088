"""Talking avatar from a still and a sound file: the mouth opens and closes with the sound's loudness.

Per video frame, the loudness of that frame's stretch of audio (RMS in dB, normalised between the
quiet floor and the loud peaks of the whole file, lightly smoothed) sets how far the jaw drops. The jaw
is moved with a piecewise-affine warp of the face-mesh landmarks: the lower lip and chin move along the
face's own "down" direction, most in the middle, fading towards the mouth corners and the jaw line, while
points under the chin stay put (the neck absorbs the motion). The gap between the lips is painted as a
dark mouth interior. No text-to-speech here: the sound must be given (`audio_url`).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from mediarelay.processing import JobError, faces, video
from mediarelay.processing.cv import cv2
from mediarelay.processing.faces import Points
from mediarelay.processing.images import Img

MAX_SIDE = 1024  # larger stills are scaled down first: this is a preview-grade animation
OPENING = 0.45  # the widest opening, as a fraction of the mouth's width


def loudness(samples: NDArray[np.float32], rate: int, fps: Fraction, frames: int) -> NDArray[np.float64]:
    """Per video frame, how open the mouth should be (0..1), from the sound's loudness envelope."""
    edges = (np.arange(frames + 1) * (rate / float(fps))).astype(np.int64).clip(0, len(samples))
    power = np.add.reduceat(samples.astype(np.float64) ** 2, edges[:-1].clip(0, max(0, len(samples) - 1)))
    counts = np.maximum(np.diff(edges), 1)
    rms = np.sqrt(np.where(np.diff(edges) > 0, power / counts, 0.0))
    db = 20 * np.log10(rms + 1e-6)
    top = float(np.percentile(db, 95))
    if top < -50:  # silence throughout
        return np.zeros(frames)
    floor = max(top - 30.0, float(np.percentile(db, 5)))
    span = max(top - floor, 1e-6)
    level = np.clip((db - floor - 0.1 * span) / (0.9 * span), 0, 1)
    smooth: NDArray[np.float64] = np.convolve(np.pad(level, 1, mode="edge"), [0.25, 0.5, 0.25], "valid")
    return smooth


class Mouth:
    """The still with its landmarks, able to render the face with the jaw dropped by 0..1."""

    def __init__(self, img: Img, points: Points) -> None:
        self.img = img
        height, width = img.shape[:2]
        down = points[faces.CHIN] - points[faces.FOREHEAD]
        face_h = float(np.linalg.norm(down))
        self.down = down / max(face_h, 1e-9)
        right = np.array([self.down[1], -self.down[0]])
        centre = (points[faces.LIP_TOP] + points[faces.LIP_BOTTOM]) / 2
        mouth_w = float(np.linalg.norm(points[faces.MOUTH_LEFT] - points[faces.MOUTH_RIGHT]))
        u = (points - centre) @ right
        v = (points - centre) @ self.down
        # The upper lip's lower edge as a function of u: everything below it belongs to the jaw.
        upper = list(faces.UPPER_INNER_LIP)
        order = np.argsort(u[upper])
        edge_v = np.interp(u, u[upper][order], v[upper][order])
        lower = v > edge_v + 0.03 * mouth_w
        lower[list(faces.LOWER_INNER_LIP)] = True
        lower[upper] = False
        half = 0.55 * mouth_w + np.maximum(v, 0) * 0.8  # the moving region widens towards the chin
        weight = np.where(lower, np.clip(1 - (u / half) ** 2, 0, 1), 0.0)
        # Fixed points below the moving jaw (the neck) and the image corners close the mesh.
        jaw = points[lower & (weight > 0)]
        below = jaw + self.down * 0.3 * face_h
        corners = np.array([(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)], np.float64)
        anchors = np.clip(np.vstack([below, corners]), 0, [width - 1, height - 1])
        self.points = np.vstack([points, anchors])
        self.weight = np.concatenate([weight, np.zeros(len(anchors))])
        triangles = faces.delaunay(self.points)
        self.triangles = triangles[(self.weight[triangles] > 0).any(1)]
        self.amplitude = OPENING * mouth_w
        # The upper lip's inner edge, left to right: the top of the gap that opens below it.
        self.upper = np.array(upper)[np.argsort(u[upper])]
        lips = np.array(faces.LOWER_INNER_LIP)[np.argsort(u[list(faces.LOWER_INNER_LIP)])]
        self.gap = np.interp(u[self.upper], u[lips], weight[lips])  # how far the lower lip drops there

    def render(self, opening: float) -> Img:
        if opening <= 0.01:
            return self.img
        moved = self.points + (self.weight * self.amplitude * opening)[:, None] * self.down
        warped, mask = faces.warp(
            self.img, self.points, moved, self.triangles, (self.img.shape[0], self.img.shape[1])
        )
        out = self.img.copy()
        out[mask > 0] = warped[mask > 0]
        # The gap the jaw opened under the upper lip: dark, with soft edges. (A mouth already open in the
        # still keeps its teeth; they move down with the jaw.)
        top = self.points[self.upper]
        bottom = top + (self.gap * self.amplitude * opening)[:, None] * self.down
        polygon = np.vstack([top, bottom[::-1]])
        gap = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(gap, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(gap, (0, 0), 1.0).astype(np.float32)[..., None] / 255 * 0.92
        interior = np.array([28, 22, 48], np.float32)  # BGR: dark red-brown
        blended: Img = (out * (1 - alpha) + interior * alpha).astype(np.uint8)
        return blended


def prepare(img: Img) -> Img:
    h, w = img.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    if scale < 1:
        img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    result: Img = np.ascontiguousarray(img[: video.even(h), : video.even(w)])
    return result


def animate(
    still: Img, audio: Path, dest: Path, *, fps: int, max_seconds: float, progress: Callable[[float], None]
) -> None:
    img = prepare(still)
    points = faces.still_landmarker().detect(img)
    if points is None:
        raise JobError("no_face", "no face found in the avatar image")
    samples = video.read_audio(audio, max_seconds=max_seconds)
    rate = video.AUDIO_RATE
    frame_rate = Fraction(fps)
    frames = max(1, int(np.ceil(len(samples) / rate * fps)))
    opening = loudness(samples, rate, frame_rate, frames)
    mouth = Mouth(img, points)
    writer = video.Mp4Writer(dest, width=img.shape[1], height=img.shape[0], rate=frame_rate, audio=True)
    try:
        for i in range(frames):
            writer.write(mouth.render(float(opening[i])))
            start, end = int(i * rate / fps), int((i + 1) * rate / fps)
            writer.write_samples(samples[start:end])
            if i % 10 == 0:
                progress(i / frames)
        writer.close()
    except BaseException:
        writer.abort()
        raise
