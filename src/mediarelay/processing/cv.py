"""OpenCV, typed as `Any` for this package.

OpenCV's bundled stubs type every array as `Mat | ndarray[integer | floating]`, which does not compose
with NumPy's dtypes under strict mypy; the processing modules annotate their own arrays instead
(`images.Img` and friends).
"""

from __future__ import annotations

from typing import Any

import cv2 as _cv2

cv2: Any = _cv2
