"""API keys: only a SHA-256 of each key is stored; the key itself is shown once, at creation.

Keys are 256-bit random tokens, so a fast unsalted hash is enough (as GitHub and Stripe do): it can
be looked up by equality on every request without a slow KDF.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Row, insert, or_, select, update
from ulid import ULID

from mediarelay.domain import now_ms
from mediarelay.store import ledger
from mediarelay.store.database import Database
from mediarelay.store.schema import api_keys
from mediarelay.store.webhooks import new_secret

KEY_PREFIX = "mr-"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    is_admin: bool
    created_at: int
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _from_row(row: Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        is_admin=bool(m["is_admin"]),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


class KeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str = "",
        *,
        is_admin: bool = False,
        webhook_url: str | None = None,
        limits: ledger.Limits | None = None,
        balance: int = 0,
    ) -> tuple[ApiKey, str]:
        """Create a key with its account (default: unlimited credit, no limits; docs/billing.md) and an
        opening top-up of `balance`; returns it with its secret, which is never stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id=str(ULID()).lower(),
            name=name,
            prefix=secret[: len(KEY_PREFIX) + 6],
            is_admin=is_admin,
            created_at=now_ms(),
            revoked_at=None,
        )
        with self.db.write() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    key_hash=hash_key(secret),
                    prefix=key.prefix,
                    is_admin=is_admin,
                    created_at=key.created_at,
                    webhook_url=webhook_url,
                    webhook_secret=new_secret(),  # every key can sign its webhooks
                )
            )
            ledger.open_account(conn, key.id, limits or ledger.Limits(), key.created_at)
            if balance:
                ledger.move(conn, key.id, balance, ledger.TOPUP, key.created_at, note="opening balance")
        return key, secret

    def by_secret(self, secret: str) -> ApiKey | None:
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == hash_key(secret))).first()
        return _from_row(row) if row else None

    def get(self, ident: str) -> ApiKey | None:
        """A key by id or by its printed prefix."""
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys).where(or_(api_keys.c.id == ident, api_keys.c.prefix == ident))
            ).first()
        return _from_row(row) if row else None

    def list(self) -> list[ApiKey]:
        with self.db.read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_from_row(r) for r in rows]

    def has_admin(self) -> bool:
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(api_keys.c.is_admin.is_(True), api_keys.c.revoked_at.is_(None))
            ).first()
        return row is not None

    def rename(self, key_id: str, name: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(name=name))

    def revoke(self, ident: str) -> bool:
        """Revoke by id or by the printed prefix; returns whether a live key was revoked."""
        with self.db.write() as conn:
            result = conn.execute(
                update(api_keys)
                .where(
                    or_(api_keys.c.id == ident, api_keys.c.prefix == ident), api_keys.c.revoked_at.is_(None)
                )
                .values(revoked_at=now_ms())
            )
        return bool(result.rowcount)
