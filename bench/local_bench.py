"""Local channel: CPU time of each job, per megapixel (images) and per second of video.

Runs the processing functions the local channel's workers run (`mediarelay.processing`), in this process,
single-threaded like a worker (`cv2.setNumThreads(1)`), on the two test faces (Grace Hopper from
matplotlib's sample data, Eileen Collins from scikit-image's) scaled to the sizes below. CPU time is
`time.process_time()` (this process, all threads); each figure is the median of `--repeat` runs. The
reference on each line is what a plain step costs on the same input: a Lanczos resize for image jobs,
decoding + re-encoding the same video for video jobs (what any frame-by-frame job pays anyway).

    .venv/bin/python bench/local_bench.py --repeat 3
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from mediarelay.processing import enhance, faces, faceswap, filters, talking, upscale, video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "channels"))
from local_media import astronaut, hopper, m4a, syllables, talking_head_video


def cpu(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", type=int, default=1024, help="image side (pixels) for the image jobs")
    parser.add_argument("--video-side", type=int, default=480, help="video frame side for the video jobs")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    assert importlib.util.find_spec("mediapipe"), "needs the extra: pip install 'mediarelay[local]'"
    cv2.setNumThreads(1)
    side = args.side
    face_img = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    target = cv2.resize(hopper(), (side, side), interpolation=cv2.INTER_CUBIC)
    mp = side * side / 1e6
    faces.still_landmarker().detect(target)  # load the models outside the timings

    print(f"# images {side}x{side} ({mp:.2f} MP), CPU seconds per megapixel (median of {args.repeat})")
    print("| job | CPU s / MP | reference: Lanczos resize, CPU s / MP |")
    print("|---|---|---|")
    ref = cpu(lambda: upscale.resample(target, 2), args.repeat) / mp
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("enhance", lambda: enhance.enhance(target)),
        *((f"filter {name}", lambda name=name: filters.apply(name, target)) for name in filters.FILTERS),
        ("upscale x2", lambda: upscale.upscale(target, 2)),
        ("upscale x4", lambda: upscale.upscale(target, 4)),
        ("face swap (image)", lambda: faceswap.swap_image(face_img, target)),
    ]
    for name, fn in rows:
        print(f"| {name} | {cpu(fn, args.repeat) / mp:.3f} | {ref:.3f} |")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vside, seconds, fps = args.video_side, args.seconds, args.fps
        clip = work / "clip.mp4"
        clip.write_bytes(talking_head_video(hopper(), seconds=seconds, fps=fps, size=vside))
        voice = work / "voice.m4a"
        voice.write_bytes(m4a(syllables(seconds)))
        small_face = cv2.resize(astronaut(), (vside, vside), interpolation=cv2.INTER_AREA)

        def reencode() -> None:
            video.transform(clip, work / "copy.mp4", lambda img, _i: img, lambda _f: None)

        def swap() -> None:
            faceswap.swap_video(small_face, clip, work / "swap.mp4", lambda _f: None)

        def avatar() -> None:
            talking.animate(
                small_face, voice, work / "avatar.mp4", fps=fps, max_seconds=60, progress=lambda _f: None
            )

        base = cpu(reencode, args.repeat) / seconds
        print()
        print(f"# video {vside}x{vside} at {fps} fps, {seconds:g} s, CPU seconds per video second")
        print("| job | CPU s / video s | reference: decode + re-encode, CPU s / video s |")
        print("|---|---|---|")
        print(f"| face swap (video, sound kept) | {cpu(swap, args.repeat) / seconds:.3f} | {base:.3f} |")
        talk = cpu(avatar, args.repeat) / seconds
        print(f"| talking avatar (from a still + audio) | {talk:.3f} | {base:.3f} |")


if __name__ == "__main__":
    main()
