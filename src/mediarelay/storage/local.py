"""Result files on the local filesystem, written atomically and content-addressed by checksum."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

from mediarelay.storage.base import LocalFile

CHUNK = 1 << 20


class LocalStorage:
    """Files live at `<root>/<key>`; `staging` holds partial files that are renamed into place whole."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.staging = self.root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def clear_staging(self, older_than: float = 0.0) -> int:
        """Remove partial files killed steps left behind: all of them (only while no step runs), or
        those older than `older_than` seconds (while other steps may be writing theirs)."""
        removed = 0
        cutoff = time.time() - older_than
        for leftover in self.staging.iterdir():
            try:
                if leftover.is_file() and (not older_than or leftover.stat().st_mtime < cutoff):
                    leftover.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:  # stored (renamed away) meanwhile
                continue
        return removed

    def new_staging_path(self, suffix: str) -> Path:
        return self.staging / f"{uuid.uuid4().hex}{suffix}"

    def path(self, key: str) -> Path:
        """The file for `key`; refuses keys that would escape the root."""
        target = (self.root / key).resolve()
        if self.root not in target.parents or key.startswith("."):
            raise ValueError(f"bad storage key {key!r}")
        return target

    def put(self, key: str, src: Path) -> tuple[int, str]:
        """Move a finished staging file into place; returns (size, sha256). Re-putting a key replaces it."""
        digest = hashlib.sha256()
        size = 0
        with src.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)
        return size, digest.hexdigest()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def locate(self, key: str) -> LocalFile | None:
        """The stored file to serve, or None (no such file, or not a storage key)."""
        try:
            target = self.path(key)
            return LocalFile(target, target.stat()) if target.is_file() else None
        except (ValueError, OSError):
            return None

    def remove(self, key: str) -> None:
        """Delete one stored file (and its directory once empty); a missing file is not an error."""
        target = self.path(key)
        target.unlink(missing_ok=True)
        parent = target.parent
        if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()

    def remove_tree(self, top: str) -> None:
        """Delete a top-level directory of files (a task's results), whatever it holds."""
        target = self.path(top)
        if target.parent != self.root:
            raise ValueError(f"not a top-level storage directory: {top!r}")
        shutil.rmtree(target, ignore_errors=True)
