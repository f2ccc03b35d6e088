"""Face landmarks and piecewise-affine warps: what face swap and the talking avatar are built on.

Landmarks come from MediaPipe's face mesh (468 points), whose TFLite models ship inside the mediapipe
wheel: nothing is downloaded at run time. A warp moves an image so that landmarks land on new positions:
the points are triangulated once (Delaunay), every pixel of a destination triangle is mapped back through
that triangle's affine transform, and the whole map is applied with one `cv2.remap`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mediarelay.processing.cv import cv2
from mediarelay.processing.images import Img

Points = NDArray[np.float64]  # (n, 2) pixel coordinates
Triangles = NDArray[np.int32]  # (t, 3) indices into Points

# Landmark indices of MediaPipe's canonical face mesh.
FOREHEAD, CHIN = 10, 152
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_TOP, LIP_BOTTOM = 13, 14
# Eyes, brows, nose and mouth (no face outline): the face's own geometry, as the tests compare it.
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
NOSE = (1, 2, 4, 5, 6, 19, 94, 98, 327, 168, 195, 197)
MOUTH = (61, 291, 0, 17, 37, 267, 84, 314, 13, 14)
INNER_FACE = LEFT_EYE + RIGHT_EYE + BROWS + NOSE + MOUTH

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and up only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Landmarker:
    """MediaPipe face mesh for one face. `tracking=True` (videos) follows the face from frame to frame
    instead of searching for it in every frame: faster and steadier."""

    def __init__(self, *, tracking: bool = False) -> None:
        import mediapipe as mp  # the extra; imported here so that `import faces` stays cheap

        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not tracking,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def detect(self, img: Img) -> Points | None:
        """The landmarks of the most prominent face in a BGR image, in pixels, or None."""
        height, width = img.shape[:2]
        result = self._mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * width, p.y * height) for p in marks], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()


_STILL: Landmarker | None = None


def still_landmarker() -> Landmarker:
    """One static-image landmarker per worker process (loading the models takes a moment)."""
    global _STILL
    if _STILL is None:
        _STILL = Landmarker()
    return _STILL


def similarity(src: Points, dst: Points) -> NDArray[np.float64]:
    """The 2x3 similarity transform (rotation, uniform scale, translation) that best maps `src` onto
    `dst` in the least-squares sense (Umeyama): it keeps a face's shape while moving it into a pose."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, float(np.sign(np.linalg.det(u @ vt)) or 1.0)])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / max(s.var(0).sum(), 1e-12))
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def apply(matrix: NDArray[np.float64], points: Points) -> Points:
    result: Points = points @ matrix[:, :2].T + matrix[:, 2]
    return result


def shape_distance(a: Points, b: Points, index: tuple[int, ...] = INNER_FACE) -> float:
    """How different two faces' geometry is, whatever their position, size and roll: the RMS distance of
    the `index` landmarks after the best similarity alignment of `a` onto `b`, per unit of `b`'s size."""
    pa, pb = a[list(index)], b[list(index)]
    aligned = apply(similarity(pa, pb), pa)
    size = float(np.sqrt(((pb - pb.mean(0)) ** 2).sum(1).mean()))
    return float(np.sqrt(((aligned - pb) ** 2).sum(1).mean()) / size)


def below_forehead(points: Points, shape: tuple[int, int], margin: float = 0.6) -> NDArray[np.uint8]:
    """A mask (255) of the face up to a little above the brows: the upper forehead is where hair and
    hats begin, and blending across them smears their colour into the face."""
    up = points[FOREHEAD] - points[CHIN]
    up /= max(float(np.linalg.norm(up)), 1e-9)
    v = (points - points.mean(0)) @ up
    brows = float(v[list(BROWS)].mean())
    eyes = float(v[list(LEFT_EYE + RIGHT_EYE)].mean())
    keep = points[v <= brows + margin * (brows - eyes)]
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(keep).astype(np.int32)), 255)
    return mask


def delaunay(points: Points) -> Triangles:
    """Delaunay triangles over `points`, as index triples."""
    lo = np.floor(points.min(0)) - 2
    hi = np.ceil(points.max(0)) + 2
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])))
    for x, y in points:
        subdiv.insert((float(x), float(y)))
    corners = subdiv.getTriangleList().reshape(-1, 3, 2)
    inside = np.all((corners >= lo) & (corners <= hi), axis=(1, 2))
    corners = corners[inside]
    # Map each corner back to the nearest input point (Subdiv2D returns coordinates, not indices).
    dist = ((corners.reshape(-1, 1, 2) - points.reshape(1, -1, 2)) ** 2).sum(2)
    index = dist.argmin(1).reshape(-1, 3).astype(np.int32)
    keep = (index[:, 0] != index[:, 1]) & (index[:, 1] != index[:, 2]) & (index[:, 0] != index[:, 2])
    result: Triangles = np.unique(np.sort(index[keep], axis=1), axis=0)
    return result


def warp(
    src: Img, src_pts: Points, dst_pts: Points, triangles: Triangles, shape: tuple[int, int]
) -> tuple[Img, NDArray[np.uint8]]:
    """Move `src` so that `src_pts` land on `dst_pts`, inside the triangles only. Returns the warped
    image of size `shape` (height, width) and the mask (255) of the pixels it covers."""
    height, width = shape
    d = dst_pts[triangles]  # (t, 3, 2)
    s = src_pts[triangles]
    lo, hi = d.reshape(-1, 2).min(0), d.reshape(-1, 2).max(0)
    x0, y0 = max(0, int(np.floor(lo[0]))), max(0, int(np.floor(lo[1])))
    x1, y1 = min(width, int(np.ceil(hi[0])) + 1), min(height, int(np.ceil(hi[1])) + 1)
    out = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if x1 <= x0 or y1 <= y0:
        return out, mask
    # Rasterise triangle ids over the destination's bounding box (4 bits of sub-pixel precision).
    ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
    fixed = np.round((d - (x0, y0)) * 16).astype(np.int32)
    for t in range(len(triangles)):
        cv2.fillConvexPoly(ids, fixed[t], t, lineType=cv2.LINE_8, shift=4)
    # Per triangle, the affine map from destination to source: M = S · D⁻¹ (D in homogeneous form).
    dh = np.concatenate([d, np.ones((len(d), 3, 1))], axis=2).transpose(0, 2, 1)  # (t, 3, 3)
    ok = np.abs(np.linalg.det(dh)) > 1e-9
    inv = np.zeros_like(dh)
    inv[ok] = np.linalg.inv(dh[ok])
    maps = s.transpose(0, 2, 1) @ inv  # (t, 2, 3)
    ys, xs = np.nonzero(ids >= 0)
    k = ids[ys, xs]
    gx, gy = xs + x0, ys + y0
    m = maps[k]
    map_x = np.full(ids.shape, -1.0, np.float32)
    map_y = np.full(ids.shape, -1.0, np.float32)
    map_x[ys, xs] = m[:, 0, 0] * gx + m[:, 0, 1] * gy + m[:, 0, 2]
    map_y[ys, xs] = m[:, 1, 0] * gx + m[:, 1, 1] * gy + m[:, 1, 2]
    region = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    covered = ((ids >= 0) & ok[np.maximum(ids, 0)]).astype(np.uint8) * 255
    out[y0:y1, x0:x1] = region
    mask[y0:y1, x0:x1] = covered
    return out, mask
