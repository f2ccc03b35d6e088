"""The published API dialects mediarelay serves; one module each, registered here (one line per dialect)."""

from mediarelay.dialects import (
    avatar,
    faceswap,
    native,
    openai_videos,
    pika,
    unified_video,
)
from mediarelay.dialects.base import Dialect

DIALECTS: tuple[Dialect, ...] = (
    avatar.dialect,
    faceswap.dialect,
    native.dialect,
    openai_videos.dialect,
    pika.dialect,
    unified_video.dialect,
)
