"""The effective channel configuration, kept current without a restart.

Two sources: `[[channels]]` of mediarelay.toml (plus the built-in sandbox) and the definitions made
through the admin API (the `channels` table); a definition in the database replaces the file's channel
of the same name. Every node rebuilds its `ChannelSet` when the file changes (checked every
`WATCH_SECONDS`, or at once on SIGHUP) or when any node changed the table. A rebuild that fails (a bad
file, an unknown type) changes nothing and is reported in the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediarelay.channels.base import ChannelConfig
from mediarelay.channels.registry import ChannelSet
from mediarelay.domain import now_ms
from mediarelay.secrets import SecretBox
from mediarelay.store.channels import ChannelRepo

log = logging.getLogger("mediarelay.channels")

WATCH_SECONDS = 2.0
FILE, ADMIN = "file", "admin"


@dataclass(frozen=True)
class Effective:
    config: ChannelConfig
    source: str  # "file" | "admin"
    overrides_file: bool  # an admin definition hiding the file's channel of the same name


class ChannelManager:
    def __init__(
        self,
        channels: ChannelSet,
        repo: ChannelRepo,
        *,
        file_configs: list[ChannelConfig],
        load_file: Callable[[], list[ChannelConfig]],
        parse: Callable[[dict[str, Any]], ChannelConfig],
        path: Path | None,
        box: SecretBox,
    ) -> None:
        self.channels = channels
        self.box = box  # decrypts the `secrets` of admin definitions (mediarelay/secrets.py)
        self.repo = repo
        self.file_configs = file_configs
        self.load_file = load_file
        self.parse = parse
        self.path = path
        self.effective: dict[str, Effective] = {}
        self.last_error: str | None = None
        self.reloaded_at: int | None = None
        self._file_stamp = self._stat()
        self._db_stamp: tuple[int, int] | None = None
        self._hup = asyncio.Event()
        self._lock = threading.Lock()  # rebuilds run in worker threads: one at a time
        self._runner: asyncio.Task[None] | None = None

    # -- building -------------------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def compose(self, admin: dict[str, ChannelConfig]) -> dict[str, Effective]:
        found = {c.name: Effective(c, FILE, False) for c in self.file_configs}
        for name, cfg in admin.items():
            found[name] = Effective(cfg, ADMIN, name in found)
        return found

    def _admin_configs(self) -> dict[str, ChannelConfig]:
        out: dict[str, ChannelConfig] = {}
        for row in self.repo.list():
            config = dict(row.config)
            stored: dict[str, str] = config.pop("secrets", None) or {}
            try:
                cfg = self.parse({**config, "name": row.name})
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                log.error("channel %s in the database is invalid and ignored: %s", row.name, exc)
                continue
            if stored:  # a wrong master key raises MasterKeyError (no secret in it): nothing is swapped
                secrets = {
                    label: self.box.decrypt(value, f"secret {label!r} of channel {row.name!r}")
                    for label, value in stored.items()
                }
                cfg = dataclasses.replace(cfg, secrets=secrets)
            out[row.name] = cfg
        return out

    def rebuild(self) -> None:
        """Recompute and swap in the channel set (sync: call it from a thread). Raises ValueError."""
        with self._lock:
            stamp = self.repo.stamp()
            effective = self.compose(self._admin_configs())
            self.channels.replace(e.config for e in effective.values())
            self.effective = effective
            self._db_stamp = stamp
            self.reloaded_at = now_ms()

    def check(self, admin: dict[str, ChannelConfig]) -> None:
        """Would this set of admin definitions build? Raises ValueError like `rebuild` would."""
        self.channels.build(e.config for e in self.compose(admin).values())

    def admin_configs(self) -> dict[str, ChannelConfig]:
        return self._admin_configs()

    def store(self, cfg: ChannelConfig, changes: Mapping[str, str | None] | None = None) -> None:
        """Persist and apply an admin definition (sync: call it from a thread). Raises ValueError.

        Its stored secrets are kept unless `changes` replaces (a value) or removes (None) them, and only
        those a `secret:LABEL` credential names are kept; the database gets them encrypted only."""
        from mediarelay.config import ChannelSettings  # config imports the channels package

        found = self.repo.get(cfg.name)
        stored: dict[str, str] = dict((found.config.get("secrets") or {}) if found else {})
        for label, value in (changes or {}).items():
            if value is None:
                stored.pop(label, None)
            else:
                stored[label] = self.box.encrypt(value)
        used = {ref[7:] for ref in cfg.credentials if ref.startswith("secret:")}
        if missing := sorted(used - stored.keys()):
            raise ValueError(
                f"credentials: 'secret:{missing[0]}' names no stored secret (give it in `secrets`)"
            )
        stored = {label: value for label, value in stored.items() if label in used}
        plain = {
            label: self.box.decrypt(value, f"secret {label!r} of channel {cfg.name!r}")
            for label, value in stored.items()
        }
        admin = self.admin_configs()
        admin[cfg.name] = dataclasses.replace(cfg, secrets=plain)
        self.check(admin)
        data = ChannelSettings.from_config(cfg).model_dump(mode="json", exclude={"name"})
        if stored:
            data["secrets"] = stored
        self.repo.put(cfg.name, data)
        self.rebuild()

    def reload_file(self) -> bool:
        """Read the configuration file again; True when the channel set changed."""
        try:
            configs = self.load_file()
            self.file_configs, old = configs, self.file_configs
            try:
                self.rebuild()
            except ValueError:
                self.file_configs = old
                raise
        except Exception as exc:  # a bad file must not take the running configuration down
            self.last_error = f"{self.path}: {exc}"
            log.error("channel configuration not reloaded: %s", self.last_error)
            return False
        self.last_error = None
        log.info("channels reloaded from %s: %s", self.path, ", ".join(sorted(self.effective)))
        return True

    # -- watching -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._watch(), name="mediarelay-channel-watch")
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hup.set)

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hup.wait(), timeout=WATCH_SECONDS)
            hup = self._hup.is_set()
            self._hup.clear()
            try:
                stamp = self._stat()
                if hup or stamp != self._file_stamp:
                    self._file_stamp = stamp
                    await asyncio.to_thread(self.reload_file)
                elif await asyncio.to_thread(self.repo.stamp) != self._db_stamp:
                    await asyncio.to_thread(self.rebuild)
            except Exception:
                log.exception("channel configuration check failed")
