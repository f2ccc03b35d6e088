"""Upstream secrets at rest: Fernet encryption under the master key (docs/security.md).

Channels defined through the admin API may carry their vendors' secrets (`secrets`, referenced as
`secret:LABEL` in `credentials`). The database only ever holds them as `enc:v1:<Fernet token>`: a copy of
the database (a backup, a replica, a support dump) is useless without the master key.

The master key is `master_key` (MEDIARELAY_MASTER_KEY): one or more Fernet keys separated by commas; the
first encrypts, every one decrypts, so a key is rotated by putting the new one first, starting every node
(each re-encrypts what it finds under an old key), then dropping the old one. Unset, the embedded mode
keeps a key it generated in `<data_dir>/master.key` (mode 0600); scaled out, nodes must share one key,
so a node refuses to start without the setting or that file (e.g. on a shared data directory).

Errors never contain a secret nor the key, only what to do about them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc:v1:"
KEY_FILE = "master.key"


class MasterKeyError(Exception):
    """The master key is missing, malformed, or not the one the stored secrets were encrypted with."""


@dataclass(frozen=True)
class SecretBox:
    """Encrypts with the first master key, decrypts with any of them."""

    keys: tuple[Fernet, ...]
    source: str  # where the key came from, for `mediarelay doctor` and error messages

    def __repr__(self) -> str:  # never the keys
        return f"SecretBox(keys={len(self.keys)}, source={self.source!r})"

    @property
    def _multi(self) -> MultiFernet:
        return MultiFernet(list(self.keys))

    def encrypt(self, secret: str) -> str:
        return PREFIX + self.keys[0].encrypt(secret.encode()).decode()

    def decrypt(self, stored: str, what: str = "a stored secret") -> str:
        """The plaintext of `stored`; a value without the prefix is plaintext written before encryption
        (`is_sealed` tells them apart so startup can encrypt it)."""
        if not is_sealed(stored):
            return stored
        try:
            return self._multi.decrypt(stored[len(PREFIX) :].encode()).decode()
        except (InvalidToken, ValueError):
            raise MasterKeyError(
                f"{what} cannot be decrypted with the master key from {self.source}: it was encrypted "
                "with another key. Set MEDIARELAY_MASTER_KEY to that key (several keys: comma-separated, "
                "the new one first), or enter the secret again through the admin API."
            ) from None

    def current(self, stored: str) -> bool:
        """Encrypted under the first key (nothing to rotate)."""
        if not is_sealed(stored):
            return False
        try:
            self.keys[0].decrypt(stored[len(PREFIX) :].encode())
        except (InvalidToken, ValueError):
            return False
        return True

    def reseal(self, stored: str, what: str = "a stored secret") -> str:
        """`stored` encrypted under the first key (plaintext is encrypted, old keys' tokens rotated)."""
        return self.encrypt(self.decrypt(stored, what))


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def _parse(value: str, source: str) -> tuple[Fernet, ...]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        raise MasterKeyError(f"the master key from {source} is empty")
    keys: list[Fernet] = []
    for i, part in enumerate(parts):
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):  # never echo it
            raise MasterKeyError(
                f"master key {i + 1} from {source} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    return tuple(keys)


def open_box(master_key: str | None, data_dir: Path, *, shared: bool) -> SecretBox:
    """The node's SecretBox: the setting, else `<data_dir>/master.key`, else (embedded only) a new key
    written there. `shared`: several nodes use the database (scaled out), so a key of this node's own
    would make the others unable to read what it writes: refuse instead."""
    if master_key:
        return SecretBox(_parse(master_key, "MEDIARELAY_MASTER_KEY"), "MEDIARELAY_MASTER_KEY")
    path = data_dir / KEY_FILE
    if path.exists():
        return SecretBox(_parse(path.read_text(), str(path)), str(path))
    if shared:
        raise MasterKeyError(
            "scaled out (a PostgreSQL database shared by several nodes), every node needs the same master "
            f"key: set MEDIARELAY_MASTER_KEY on every node (or put the key file at {path}); refusing to "
            "start with a key of this node's own"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key + b"\n")
    finally:
        os.close(fd)
    return SecretBox((Fernet(key),), str(path))
