"""Enhance (taskType 4): denoise, then local contrast, then sharpen — the order matters, since sharpening
first would amplify the noise the first step removes."""

from __future__ import annotations

import numpy as np

from mediarelay.processing.cv import cv2
from mediarelay.processing.images import Img


def unsharp(img: Img, sigma: float, amount: float) -> Img:
    """Unsharp mask: add back `amount` times the detail above a Gaussian blur of `sigma` pixels."""
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    result: Img = cv2.addWeighted(img, 1 + amount, blurred, -amount, 0)
    return result


def enhance(img: Img) -> Img:
    # Non-local means keeps edges and texture while it removes sensor/JPEG noise; mild settings so that
    # skin and hair keep their texture.
    clean = cv2.fastNlMeansDenoisingColored(img, None, 5, 5, 5, 15)
    # Local contrast: CLAHE on the lightness only, so colours do not shift.
    lab = cv2.cvtColor(clean, cv2.COLOR_BGR2LAB)
    tiles = max(2, min(8, min(img.shape[:2]) // 64))
    lab[..., 0] = cv2.createCLAHE(clipLimit=1.8, tileGridSize=(tiles, tiles)).apply(
        np.ascontiguousarray(lab[..., 0])
    )
    contrasted = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    return unsharp(contrasted, sigma=1.2, amount=0.7)
