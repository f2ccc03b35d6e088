"""Channel types by name, and the configured set of channels a task can be routed to."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mediarelay.channels.base import Channel, ChannelConfig
from mediarelay.channels.sandbox import SandboxChannel
from mediarelay.domain import Operation

TYPES: dict[str, Callable[[ChannelConfig], Channel]] = {
    "sandbox": SandboxChannel,
}


class ChannelSet:
    """The enabled channels; `candidates` lists those that serve a task, best first."""

    def __init__(self, configs: Iterable[ChannelConfig]) -> None:
        self.channels: dict[str, Channel] = {}
        for cfg in configs:
            if cfg.type not in TYPES:
                raise ValueError(f"channel {cfg.name!r}: unknown type {cfg.type!r} (known: {sorted(TYPES)})")
            if cfg.name in self.channels:
                raise ValueError(f"channel {cfg.name!r} is configured twice")
            self.channels[cfg.name] = TYPES[cfg.type](cfg)

    def get(self, name: str) -> Channel | None:
        return self.channels.get(name)

    def candidates(self, model: str, operation: Operation) -> list[Channel]:
        found = [c for c in self.channels.values() if c.config.enabled and c.config.serves(model, operation)]
        return sorted(found, key=lambda c: (-c.config.priority, -c.config.weight, c.config.name))
