"""One small task per dialect, as `Client.submit` keyword arguments, and what its result must be."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mediarelay.media import probe

FACE = "https://example.com/face.png"
VOICE = "https://example.com/voice.mp3"
PHOTO = "https://example.com/photo.png"

# dialect alias -> submit kwargs (quick inputs; small outputs keep the sandbox fast)
CASES: dict[str, dict[str, Any]] = {
    "native": dict(
        model="clip", prompt="a kite", operation="text_to_video", width=96, height=64, seconds=1, fps=8
    ),
    "openai": dict(prompt="a red kite", seconds=4, size="1280x720"),
    "pika": dict(prompt="a kite", aspectRatio=1.0, frameRate=8),
    "unified": dict(model="grok-video-3", prompt="a fox", aspect_ratio="1:1"),
    "avatar": dict(image=FACE, audio=VOICE),
    "faceswap": dict(model="enhance", image=PHOTO),
}
# dialect alias -> (mime of the result, width, height)
EXPECT: dict[str, tuple[str, int, int]] = {
    "native": ("video/mp4", 96, 64),
    "openai": ("video/mp4", 1280, 720),
    "pika": ("video/mp4", 720, 720),
    "unified": ("video/mp4", 720, 720),
    "avatar": ("video/mp4", 512, 512),
    "faceswap": ("image/png", 512, 512),
}
CANONICAL = {
    "native": "native",
    "openai": "openai_videos",
    "pika": "pika",
    "unified": "unified_video",
    "avatar": "avatar",
    "faceswap": "faceswap",
}
PROGRESS = {"native", "openai", "pika", "unified"}  # dialects that publish a percentage


def check_media(path: Path, dialect: str) -> None:
    mime, width, height = EXPECT[dialect]
    info = probe(path)
    assert (info.mime, info.width, info.height) == (mime, width, height), (dialect, info)
    if mime.startswith("video/"):
        assert info.video_codec == "h264" and info.duration and info.duration > 0.5, info


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
