"""Features other parts of mediarelay provide when this build has them (billing, channel administration
kept in the database): the pages ask here and render the extra columns and forms only when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mediarelay.config import ChannelSettings


@dataclass(frozen=True)
class Features:
    billing: bool
    channel_admin: bool


def billing(svc: Any) -> Any | None:
    return getattr(svc, "billing", None)


def channel_admin(svc: Any) -> Any | None:
    """The channel manager (`channels/manager.py`): definitions stored in the database, every node."""
    return getattr(svc, "channel_manager", None)


def features(svc: Any) -> Features:
    return Features(billing=billing(svc) is not None, channel_admin=channel_admin(svc) is not None)


def update_channel(manager: Any, name: str, changes: dict[str, Any]) -> None:
    """Store a changed channel definition like `PATCH /v1/admin/channels/{name}` does: the current
    definition plus `changes`, checked, kept in the database (overriding mediarelay.toml's channel of
    that name) and applied. Sync (run it in a thread); raises ValueError with a message for people."""
    found = manager.effective.get(name)
    if found is None:
        raise ValueError(f"no channel {name!r}")
    current = ChannelSettings.from_config(found.config).model_dump(mode="json")
    try:
        cfg = ChannelSettings.model_validate({**current, **changes, "name": name}).to_config()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None
    manager.store(cfg)  # keeps the channel's stored (encrypted) secrets
