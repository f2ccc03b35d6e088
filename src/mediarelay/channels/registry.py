"""Channel types by name, and the configured set of channels a task can be routed to."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from mediarelay.channels.base import Channel, ChannelConfig, ChannelDeps
from mediarelay.channels.gptbest import GptBestChannel
from mediarelay.channels.health import ChannelHealth
from mediarelay.channels.mediarelay import MediarelayChannel
from mediarelay.channels.openai_videos import OpenAIVideosChannel
from mediarelay.channels.sandbox import SandboxChannel
from mediarelay.channels.unified_video import UnifiedVideoChannel
from mediarelay.domain import Operation

TYPES: dict[str, Callable[[ChannelConfig, ChannelDeps], Channel]] = {
    "sandbox": lambda config, _deps: SandboxChannel(config),
    "gptbest": GptBestChannel,
    "unified_video": UnifiedVideoChannel,
    "openai_videos": OpenAIVideosChannel,
    "mediarelay": MediarelayChannel,
    "local": lambda cfg, deps: __import__("mediarelay.channels.local", fromlist=["_"]).build(cfg, deps),
}


class ChannelSet:
    """The configured channels; `candidates` lists those that may take a task, best first.

    `replace` swaps in a new configuration at once (one assignment): steps already running keep the
    channel object they hold, the next lookup sees the new one. Health records outlive reloads.
    """

    def __init__(self, configs: Iterable[ChannelConfig], deps: ChannelDeps | None = None) -> None:
        self.deps = deps or ChannelDeps()
        self.health: dict[str, ChannelHealth] = {}
        self.channels: dict[str, Channel] = {}
        self.replace(configs)

    def build(self, configs: Iterable[ChannelConfig]) -> tuple[dict[str, Channel], dict[str, ChannelHealth]]:
        """Channel objects for `configs` (and their health records), reusing the current object of a
        channel whose config is unchanged. Raises ValueError for an unknown type, a duplicate name or
        a bad setting; nothing changes then."""
        built: dict[str, Channel] = {}
        healths: dict[str, ChannelHealth] = {}
        for cfg in configs:
            if cfg.type not in TYPES:
                raise ValueError(f"channel {cfg.name!r}: unknown type {cfg.type!r} (known: {sorted(TYPES)})")
            if cfg.name in built:
                raise ValueError(f"channel {cfg.name!r} is configured twice")
            current = self.channels.get(cfg.name)
            if current is not None and current.config == cfg:
                built[cfg.name] = current
                continue
            health = self.health.get(cfg.name)
            if health is None:
                health = ChannelHealth.create(
                    threshold=cfg.breaker_failures,
                    cooldown=cfg.breaker_cooldown_seconds,
                    rate=cfg.rate_limit,
                    burst=cfg.rate_burst,
                )
            else:
                health.configure(
                    threshold=cfg.breaker_failures,
                    cooldown=cfg.breaker_cooldown_seconds,
                    rate=cfg.rate_limit,
                    burst=cfg.rate_burst,
                )
            healths[cfg.name] = health
            deps = replace(self.deps, health=health)
            built[cfg.name] = TYPES[cfg.type](cfg, deps)
        return built, healths

    def replace(self, configs: Iterable[ChannelConfig]) -> None:
        built, healths = self.build(configs)
        self.health.update(healths)
        self.channels = built

    def get(self, name: str) -> Channel | None:
        return self.channels.get(name)

    def health_of(self, name: str) -> ChannelHealth:
        found = self.health.get(name)
        if found is None:
            found = self.health[name] = ChannelHealth.create(threshold=5, cooldown=30, rate=None, burst=None)
        return found

    def candidates(self, model: str, operation: Operation, *, seed: str = "") -> list[Channel]:
        """Enabled channels that serve the model and operation and whose type can run it: by priority
        (higher first), then in a weighted random order (stable for a given `seed`)."""
        found = [
            c
            for c in self.channels.values()
            if c.config.enabled and operation in c.operations and c.config.serves(model, operation)
        ]
        rng = random.Random(seed) if seed else random.Random()
        # Weighted shuffle (Efraimidis–Spirakis): key = u^(1/w), larger first.
        keyed = [
            (-c.config.priority, -(rng.random() ** (1 / max(1, c.config.weight))), c.config.name, c)
            for c in found
        ]
        keyed.sort(key=lambda k: (k[0], k[1], k[2]))
        return [k[3] for k in keyed]
