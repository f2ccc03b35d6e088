"""Filters (taskType 5): the dialect's documented named set, each a fixed, deterministic look.

| name | what it does |
|---|---|
| cartoon | flattened colours (bilateral smoothing, colour quantisation) with dark outlines |
| sketch | grey pencil drawing (colour dodge of the inverted, blurred grey image) |
| vintage | sepia toning, faded blacks and a vignette |
| noir | high-contrast black and white with a vignette |
| warm | a warmer white balance (more red, less blue) |
| cool | a cooler white balance (more blue, less red) |
| vivid | more saturation and contrast |
| oil | oil painting (OpenCV's xphoto oilPainting, or stylization where that is missing) |
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from mediarelay.processing import JobError
from mediarelay.processing.cv import cv2
from mediarelay.processing.images import Img


def _lut(curve: Callable[[NDArray[np.float64]], NDArray[np.float64]]) -> NDArray[np.uint8]:
    x = np.arange(256, dtype=np.float64)
    return np.clip(curve(x), 0, 255).astype(np.uint8)


def _vignette(img: Img, strength: float) -> Img:
    h, w = img.shape[:2]
    ys, xs = np.ogrid[:h, :w]
    r = np.sqrt(((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2) / np.sqrt(2)
    gain = 1 - strength * np.clip(r, 0, 1) ** 2
    result: Img = np.clip(img * gain[..., None], 0, 255).astype(np.uint8)
    return result


def _grey3(grey: Img) -> Img:
    result: Img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return result


def cartoon(img: Img) -> Img:
    smooth = img
    for _ in range(2):
        smooth = cv2.bilateralFilter(smooth, 9, 60, 7)
    flat = (smooth // 40) * 40 + 20  # few colour levels
    grey = cv2.medianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 5)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    result: Img = cv2.bitwise_and(flat.astype(np.uint8), flat.astype(np.uint8), mask=edges)
    return result


def sketch(img: Img) -> Img:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    blur = cv2.GaussianBlur(255 - grey, (0, 0), 6)
    dodge = cv2.divide(grey, 255 - blur, scale=256)
    return _grey3(dodge)


def vintage(img: Img) -> Img:
    sepia = np.array([[0.272, 0.534, 0.131], [0.349, 0.686, 0.168], [0.393, 0.769, 0.189]])  # BGR rows
    toned = np.clip(img.astype(np.float64) @ sepia.T, 0, 255)
    faded = 30 + toned * (215 / 255)  # lifted blacks, dimmed whites
    return _vignette(faded.astype(np.uint8), 0.45)


def noir(img: Img) -> Img:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    grey = cv2.equalizeHist(grey)
    s_curve = _lut(lambda x: 255 / (1 + np.exp(-(x - 128) / 28)))
    return _vignette(_grey3(cv2.LUT(grey, s_curve)), 0.5)


def _balance(img: Img, red: float, blue: float) -> Img:
    b, g, r = cv2.split(img)
    r = cv2.LUT(r, _lut(lambda x: 255 * (x / 255) ** (1 / red)))
    b = cv2.LUT(b, _lut(lambda x: 255 * (x / 255) ** (1 / blue)))
    result: Img = cv2.merge([b, g, r])
    return result


def warm(img: Img) -> Img:
    return _balance(img, red=1.25, blue=0.8)


def cool(img: Img) -> Img:
    return _balance(img, red=0.8, blue=1.25)


def vivid(img: Img) -> Img:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float64)
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.45, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    result: Img = cv2.convertScaleAbs(out, alpha=1.12, beta=-12)
    return result


def oil(img: Img) -> Img:
    xphoto = getattr(cv2, "xphoto", None)
    if xphoto is not None and hasattr(xphoto, "oilPainting"):
        result: Img = xphoto.oilPainting(img, 7, 1)
        return result
    styled: Img = cv2.stylization(img, sigma_s=60, sigma_r=0.45)
    return styled


FILTERS: dict[str, Callable[[Img], Img]] = {
    "cartoon": cartoon,
    "sketch": sketch,
    "vintage": vintage,
    "noir": noir,
    "warm": warm,
    "cool": cool,
    "vivid": vivid,
    "oil": oil,
}


def apply(name: str, img: Img) -> Img:
    try:
        return FILTERS[name](img)
    except KeyError:
        raise JobError(
            "unsupported_filter", f"unknown filter {name!r}; this channel has {', '.join(FILTERS)}"
        ) from None
