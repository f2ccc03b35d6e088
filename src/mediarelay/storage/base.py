"""What every result-file backend offers (docs/storage.md): the filesystem one and the S3-compatible one.

Files are written to a local staging file first (always on this node's disk), then `put` under a key
`<task id>/<role>-<index>.<ext>` (or `inputs-<random>/<name>` for uploads); a stored file never changes.
Serving goes through `locate`: a local file (served by Starlette, Range and all) or a remote object
(redirected to a presigned URL, or streamed through with the client's Range passed on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import stat_result
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LocalFile:
    """A stored file on this node's disk."""

    path: Path
    stat: stat_result


class RangeNotSatisfiable(Exception):
    """The requested byte range starts beyond the end of the object."""


@dataclass
class RemoteBody:
    """Bytes of a remote object being read: all of it (200) or the requested range (206)."""

    status: int
    length: int
    content_range: str | None
    chunks: Iterator[bytes]  # blocking reads: iterate them in a worker thread
    close: Callable[[], None]


@dataclass(frozen=True)
class RemoteFile:
    """A stored object in a remote store, as its metadata says."""

    size: int
    etag: str  # quoted, as HTTP sends it
    last_modified: float  # seconds since the epoch
    redirect_url: str | None  # presigned mode: where clients fetch it; None: stream it through
    redirect_max_age: int  # how long a client may keep that redirect
    fetch: Callable[[str | None], RemoteBody]  # (a `bytes=a-b` Range or None) -> the bytes; blocking


class Storage(Protocol):
    """Result files under keys. Every method may block (disk or network): call them in a worker thread
    from async code."""

    staging: Path  # partial files: local, renamed or uploaded into place whole by `put`

    def new_staging_path(self, suffix: str) -> Path:
        """A fresh path in the staging directory for a file about to be written."""
        ...

    def clear_staging(self, older_than: float = 0.0) -> int:
        """Remove staging files left by killed steps (only those older than `older_than` seconds, when
        other steps may be running); returns how many were removed."""
        ...

    def put(self, key: str, src: Path) -> tuple[int, str]:
        """Store a finished staging file under `key` (re-putting replaces it); `src` is gone afterwards.
        Returns (size, sha256). Raises ValueError for a key that is not a storage key."""
        ...

    def exists(self, key: str) -> bool: ...

    def remove(self, key: str) -> None:
        """Delete one stored file; a missing one is not an error."""
        ...

    def remove_tree(self, top: str) -> None:
        """Delete every file under a top-level name (a task's results, an upload's directory)."""
        ...

    def locate(self, key: str) -> LocalFile | RemoteFile | None:
        """Where the stored file is, to serve it; None when there is none (or the key is not valid)."""
        ...
