"""Reading and writing still images for the jobs: one place that turns undecodable input into a clear
`JobError` and that writes results whole (temporary file, then rename), so a crash never leaves half a
PNG where the channel would take it for a result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mediarelay.processing import JobError
from mediarelay.processing.cv import cv2

Img = NDArray[np.uint8]
MAX_PIXELS = 50_000_000  # a larger input is refused before it is decoded (decompression bombs)


def read_image(path: Path, *, what: str = "image", max_pixels: int = MAX_PIXELS) -> Img:
    """A BGR uint8 image; `JobError("unreadable_image")` for anything that is not a decodable image."""
    try:
        with Image.open(path) as probe:  # header only: the size, before anything is decoded
            width, height = probe.size
    except Exception:
        raise JobError("unreadable_image", f"the {what} is not a readable image") from None
    if width * height > max_pixels:
        raise JobError(
            "input_too_large", f"the {what} has {width}x{height} pixels, more than {max_pixels} in all"
        )
    img: Any = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise JobError("unreadable_image", f"the {what} is not a readable image")
    return np.ascontiguousarray(img, dtype=np.uint8)


def write_png(path: Path, img: Img) -> None:
    """Write `img` as a PNG at `path`, atomically."""
    ok, data = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise JobError("processing_failed", "could not encode the result as PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def sharpness(img: Img) -> float:
    """Variance of the Laplacian of the grey image: the usual focus measure (benchmarks and tests)."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
