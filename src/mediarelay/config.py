"""Settings from `mediarelay.toml` and `MEDIARELAY_*` environment variables (environment wins).

The config file is `./mediarelay.toml` when present, or the path in `MEDIARELAY_CONFIG`.
Nested values use `__` in the environment, e.g. `MEDIARELAY_SANDBOX__RUN_SECONDS=2`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mediarelay.channels.base import ChannelConfig


class ChannelSettings(BaseModel):
    name: str
    type: str
    models: list[str] = ["*"]
    operations: list[str] = ["*"]
    priority: int = 0
    weight: int = 1
    max_concurrency: int = 64
    deadline_seconds: float = 24 * 3600
    enabled: bool = True
    options: dict[str, Any] = {}

    def to_config(self) -> ChannelConfig:
        return ChannelConfig(
            name=self.name,
            type=self.type,
            models=tuple(self.models),
            operations=tuple(self.operations),
            priority=self.priority,
            weight=self.weight,
            max_concurrency=self.max_concurrency,
            deadline_seconds=self.deadline_seconds,
            enabled=self.enabled,
            options=dict(self.options),
        )


class SandboxSettings(BaseModel):
    """The built-in sandbox channel, on unless disabled; `[[channels]]` may add more of type sandbox."""

    enabled: bool = True
    queue_seconds: float = 1.0
    run_seconds: float = 6.0
    jitter: float = 0.3
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    deadline_seconds: float = 3600


class WebhookSettings(BaseModel):
    """Webhook delivery (docs/webhooks.md): the retry schedule and the outbound-address policy."""

    allow_private: bool = False  # let webhooks reach private/loopback addresses (never metadata ones)
    allowed_hosts: list[str] = []  # IPs, CIDRs or host names exempt from the address check
    # Delays between attempts, in seconds (±10 % jitter): like Svix's, about 27 h in all.
    retry_schedule: list[float] = [5, 300, 1800, 7200, 18000, 36000, 36000]
    timeout_seconds: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=16, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIARELAY_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("mediarelay-data")
    database_url: str | None = None
    public_base_url: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    access_log: bool = True  # one log line per request; off for load tests and log-shipping setups
    workers: int = 32  # concurrent engine steps in the in-process driver
    finalize_concurrency: int = 2  # media work is CPU-bound: keep it below the core count
    sandbox: SandboxSettings = SandboxSettings()
    webhooks: WebhookSettings = WebhookSettings()
    channels: list[ChannelSettings] = []

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("MEDIARELAY_CONFIG", "mediarelay.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mediarelay.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def channel_configs(self) -> list[ChannelConfig]:
        configs = [c.to_config() for c in self.channels]
        if self.sandbox.enabled and not any(c.name == "sandbox" for c in configs):
            s = self.sandbox
            configs.append(
                ChannelConfig(
                    name="sandbox",
                    type="sandbox",
                    priority=-100,  # real channels first; the sandbox serves what nothing else does
                    deadline_seconds=s.deadline_seconds,
                    options={
                        "queue_seconds": s.queue_seconds,
                        "run_seconds": s.run_seconds,
                        "jitter": s.jitter,
                        "failure_rate": s.failure_rate,
                    },
                )
            )
        return configs
