"""Upscale (taskType 6) by 2 or 4: Lanczos resampling, then an unsharp mask that is kept from ringing by
clamping every pixel to the range of its neighbourhood in the resampled image (no halos on edges).

An operator may configure a super-resolution network (`options.sr_model`: a local EDSR/ESPCN/FSRCNN/
LapSRN `.pb` file for OpenCV's dnn_superres, named like `ESPCN_x4.pb`); it is used when present and
loadable, and the resampler is the fallback otherwise. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mediarelay.processing import JobError
from mediarelay.processing.cv import cv2
from mediarelay.processing.enhance import unsharp
from mediarelay.processing.images import Img

log = logging.getLogger(__name__)
MAX_OUTPUT_PIXELS = 64_000_000
MODEL_NAME = re.compile(r"(edsr|espcn|fsrcnn|lapsrn)[_-]?x([2348])", re.IGNORECASE)
_models: dict[str, Any] = {}


def resample(img: Img, scale: int) -> Img:
    h, w = img.shape[:2]
    result: Img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)
    return result


def sharpen_clamped(img: Img, scale: int) -> Img:
    sharp = unsharp(img, sigma=0.6 * scale, amount=1.0)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    hi, lo = cv2.dilate(img, kernel), cv2.erode(img, kernel)
    result: Img = cv2.min(cv2.max(sharp, lo), hi)
    return result


def _model(path: str) -> tuple[Any, int] | None:
    """The dnn_superres model at `path` and its scale, or None (logged) when it cannot be used."""
    match = MODEL_NAME.search(Path(path).name)
    if match is None or not Path(path).is_file() or not hasattr(cv2, "dnn_superres"):
        log.warning("super-resolution model %s not usable (name like ESPCN_x4.pb, opencv-contrib)", path)
        return None
    if path not in _models:
        try:
            sr = cv2.dnn_superres.DnnSuperResImpl_create()
            sr.readModel(path)
            sr.setModel(match.group(1).lower(), int(match.group(2)))
            _models[path] = sr
        except cv2.error:
            log.warning("super-resolution model %s could not be loaded", path, exc_info=True)
            return None
    return _models[path], int(match.group(2))


def upscale(img: Img, scale: int, *, model_path: str | None = None) -> Img:
    if scale not in (2, 3, 4):
        raise JobError("invalid_scale", f"scale must be 2 or 4, not {scale}")
    h, w = img.shape[:2]
    if h * w * scale * scale > MAX_OUTPUT_PIXELS:
        raise JobError(
            "input_too_large", f"{w}x{h} upscaled {scale}x is more than {MAX_OUTPUT_PIXELS} pixels"
        )
    found = _model(model_path) if model_path else None
    if found is not None:
        sr, factor = found
        out: Img = sr.upsample(img)
        if factor != scale:
            out = cv2.resize(
                out,
                (w * scale, h * scale),
                interpolation=cv2.INTER_AREA if factor > scale else cv2.INTER_LANCZOS4,
            )
        return out
    return sharpen_clamped(resample(img, scale), scale)
