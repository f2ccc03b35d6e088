"""CPU media processing for the `local` channel (the optional extra `mediarelay[local]`).

Everything here runs inside the local channel's worker processes (`pool.py`), never on the server's
event loop: OpenCV, NumPy and MediaPipe are imported by the modules that need them, so importing this
package costs nothing and works without the extra. One module per job: `enhance`, `filters`,
`upscale`, `faceswap`, `talking`; `faces` (landmarks and triangle warps) and `video` (PyAV in/out)
are shared by them; `jobs` is the worker-side entry point and the on-disk record of a job.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("numpy", "cv2", "mediapipe")


class JobError(Exception):
    """A job failed for a reason the client should see (bad input, no face found, …): `code` becomes
    the task's error code. Picklable (its args are the code and the message), so it crosses the pool."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def missing_extra() -> list[str]:
    """The modules of the `local` extra that are not installed (empty when it is complete)."""
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
