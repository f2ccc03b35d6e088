"""Face swap (taskType 3 on images, 7 on videos): the face of one picture put onto the head in another.

The source face keeps its own shape: its landmarks are moved onto the target face by the best similarity
transform (position, size, roll), the source image is warped triangle by triangle onto those positions,
its colours are matched to the target's skin (mean and spread in Lab), and it is blended in with Poisson
editing (`cv2.seamlessClone`), which takes the light at the seam from the target. Videos go frame by frame
with a tracking landmarker; frames without a face pass through unchanged, the sound is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from mediarelay.processing import JobError, faces, video
from mediarelay.processing.cv import cv2
from mediarelay.processing.faces import Points, Triangles
from mediarelay.processing.images import Img


class Source:
    """The face to put in: its image, landmarks and triangulation, computed once per job."""

    def __init__(self, img: Img) -> None:
        points = faces.still_landmarker().detect(img)
        if points is None:
            raise JobError("no_face", "no face found in the face image")
        self.img = img
        self.points: Points = points
        self.triangles: Triangles = faces.delaunay(points)


def match_colour(img: Img, reference: Img, mask: NDArray[np.uint8]) -> Img:
    """Shift `img`'s colours (in Lab) so that, under `mask`, their mean and spread are `reference`'s."""
    where = mask > 0
    if where.sum() < 16:
        return img
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_BGR2LAB).astype(np.float32)
    mu, sd = lab[where].mean(0), lab[where].std(0) + 1e-3
    rmu, rsd = ref[where].mean(0), ref[where].std(0) + 1e-3
    gain = np.clip(rsd / sd, 0.5, 2.0)
    lab = (lab - mu) * gain + rmu
    result: Img = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
    return result


def swap_face(source: Source, target: Img, target_points: Points) -> Img:
    """`target` with `source`'s face blended onto the face at `target_points`."""
    height, width = target.shape[:2]
    placed = faces.apply(faces.similarity(source.points, target_points), source.points)
    warped, mask = faces.warp(source.img, source.points, placed, source.triangles, (height, width))
    mask &= faces.below_forehead(placed, (height, width))  # hairlines and hats stay the target's
    # Stay a little inside the face outline and off the image border (seamlessClone needs both).
    size = float(np.ptp(placed, axis=0).max())
    k = max(3, int(size * 0.04) | 1)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask[:2, :], mask[-2:, :], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0
    if cv2.countNonZero(mask) < 64:
        return target
    warped = match_colour(warped, target, mask)
    x, y, w, h = cv2.boundingRect(mask)
    center = (x + w // 2, y + h // 2)
    blended: Img = cv2.seamlessClone(warped, target, mask, center, cv2.NORMAL_CLONE)
    return blended


def swap_image(face: Img, target: Img, *, what: str = "target image") -> Img:
    source = Source(face)
    points = faces.still_landmarker().detect(target)
    if points is None:
        raise JobError("no_face", f"no face found in the {what}")
    return swap_face(source, target, points)


def swap_video(face: Img, src: Path, dest: Path, progress: Callable[[float], None]) -> None:
    """Every frame of `src` with its face swapped; frame count, timestamps, frame rate and sound kept."""
    source = Source(face)
    tracker = faces.Landmarker(tracking=True)
    found = 0

    def process(frame: Img, _index: int) -> Img:
        nonlocal found
        points = tracker.detect(frame)
        if points is None:
            return frame
        found += 1
        return swap_face(source, frame, points)

    try:
        video.transform(src, dest, process, progress)
    finally:
        tracker.close()
    if not found:
        dest.unlink(missing_ok=True)
        raise JobError("no_face", "no face found in any frame of the target video")
