"""Settings from `mediarelay.toml` and `MEDIARELAY_*` environment variables (environment wins).

The config file is `./mediarelay.toml` when present, or the path in `MEDIARELAY_CONFIG`.
Nested values use `__` in the environment, e.g. `MEDIARELAY_SANDBOX__RUN_SECONDS=2`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mediarelay.billing.prices import FREE, PriceRule
from mediarelay.channels.base import ChannelConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ENV_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")
SECRET_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# An admin-API channel's stored secret (encrypted in the database: mediarelay/secrets.py, docs/security.md).
SECRET_REF = re.compile(r"^secret:[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def http_url(value: str | None) -> str | None:
    """An http(s) URL with a host, without its trailing slash (channel base URLs, S3 endpoints)."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/")


class ChannelSettings(BaseModel):
    """One `[[channels]]` entry (docs/channels.md); the admin API takes the same fields."""

    # A secret pasted into `credentials` by mistake must not end up in an error message or a log.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    base_url: str | None = None  # relay types: the upstream's API root
    credentials: list[str] = []  # "env:NAME" references, used round robin; never the secrets themselves
    models: list[str] = ["*"]  # glob patterns over mediarelay's model names
    model_map: dict[str, str] = {}  # glob over mediarelay's model -> the upstream's model name, first wins
    operations: list[str] = ["*"]
    priority: int = 0
    weight: int = Field(default=1, ge=1)
    max_concurrency: int = Field(default=64, ge=1)  # tasks at the upstream at once, deployment-wide
    rate_limit: float | None = Field(default=None, gt=0)  # upstream requests per second (per node)
    rate_burst: int | None = Field(default=None, ge=1)
    submit_timeout_seconds: float = Field(default=30.0, gt=0)
    poll_timeout_seconds: float = Field(default=15.0, gt=0)
    deadline_seconds: float = Field(default=24 * 3600, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, ge=0)
    max_result_bytes: int | None = Field(default=None, ge=1)
    enabled: bool = True
    options: dict[str, Any] = {}

    @field_validator("credentials")
    @classmethod
    def _env_refs(cls, value: list[str]) -> list[str]:
        for i, ref in enumerate(value):
            if not (ENV_REF.match(ref) or SECRET_REF.match(ref)):  # never echo it: it may be a secret
                raise ValueError(
                    f"entry {i} is not an environment reference like 'env:VENDOR_KEY' (or, for channels "
                    "of the admin API, 'secret:LABEL' naming one of its `secrets`); secrets are never "
                    "written into the configuration"
                )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value)

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> ChannelSettings:
        return cls(
            name=cfg.name,
            type=cfg.type,
            base_url=cfg.base_url or None,
            credentials=list(cfg.credentials),
            models=list(cfg.models),
            model_map=dict(cfg.model_map),
            operations=list(cfg.operations),
            priority=cfg.priority,
            weight=cfg.weight,
            max_concurrency=cfg.max_concurrency,
            rate_limit=cfg.rate_limit,
            rate_burst=cfg.rate_burst,
            submit_timeout_seconds=cfg.submit_timeout_seconds,
            poll_timeout_seconds=cfg.poll_timeout_seconds,
            deadline_seconds=cfg.deadline_seconds,
            breaker_failures=cfg.breaker_failures,
            breaker_cooldown_seconds=cfg.breaker_cooldown_seconds,
            max_result_bytes=cfg.max_result_bytes,
            enabled=cfg.enabled,
            options=dict(cfg.options),
        )

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
            base_url=self.base_url or "",
            credentials=tuple(self.credentials),
            model_map=tuple(self.model_map.items()),
            rate_limit=self.rate_limit,
            rate_burst=self.rate_burst,
            submit_timeout_seconds=self.submit_timeout_seconds,
            poll_timeout_seconds=self.poll_timeout_seconds,
            breaker_failures=self.breaker_failures,
            breaker_cooldown_seconds=self.breaker_cooldown_seconds,
            max_result_bytes=self.max_result_bytes,
        )


class FetchSettings(BaseModel):
    """The one outbound fetcher of relay channels: upstream API calls and result downloads."""

    allow_private: bool = False  # let it reach private/loopback addresses (never metadata ones)
    allowed_hosts: list[str] = []  # IPs, CIDRs or host names exempt from the address check
    timeout_seconds: float = Field(default=300.0, gt=0)  # one result download, all of it
    max_bytes: int = Field(default=2 * 1024**3, ge=1)  # the largest result file taken
    max_redirects: int = Field(default=5, ge=0)


def config_path() -> Path:
    """The configuration file: `MEDIARELAY_CONFIG`, else `./mediarelay.toml` (it need not exist)."""
    return Path(os.environ.get("MEDIARELAY_CONFIG", "mediarelay.toml"))


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


class BillingSettings(BaseModel):
    """Money (docs/billing.md): amounts are integer micro-units of `currency`; prices are `[[prices]]`."""

    currency: str = ""  # a label only (e.g. "USD"), shown by the account API and the CLI
    default_price: PriceRule = FREE  # for models no `[[prices]]` rule matches: free by default
    default_seconds: float = Field(default=5.0, gt=0)  # a video's length when its request names none
    idempotency_hours: float = Field(default=24.0, ge=24)  # how long an Idempotency-Key is remembered


class RetentionSettings(BaseModel):
    """How long finished work is kept (docs/operations.md#retention); None keeps it forever.

    Ages count from a task's `finished_at`; active tasks and the billing ledger are never touched."""

    files_days: float | None = Field(default=None, gt=0)  # result files of finished tasks
    tasks_days: float | None = Field(default=None, gt=0)  # finished top-level tasks with all their rows
    interval_seconds: float = Field(default=3600.0, gt=0)  # between cleanup passes, per worker
    batch: int = Field(default=500, ge=1)  # tasks per transaction


class S3Settings(BaseModel):
    """An S3-compatible bucket for result files (docs/storage.md); used when `storage.backend = "s3"`."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a secret pasted by mistake stays out of logs

    bucket: str = ""
    endpoint_url: str | None = None  # none: AWS S3 itself; else MinIO, Ceph RGW, R2, … (http(s) URL)
    public_endpoint_url: str | None = None  # presigned URLs' host, when clients reach the store elsewhere
    region: str | None = None  # none: boto3's default (AWS_REGION, the profile, us-east-1)
    prefix: str = ""  # every key under this "directory" of the bucket
    # "env:NAME" references; unset: boto3's own chain (AWS_ACCESS_KEY_ID…, profiles, instance roles)
    access_key_id: str | None = None
    secret_access_key: str | None = None
    url_mode: Literal["presigned", "proxy"] = "proxy"  # how /files/… answers: 302 to S3, or the bytes
    presign_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    multipart_threshold_mb: int = Field(default=16, ge=5)  # larger uploads go in parts of this size

    @field_validator("access_key_id", "secret_access_key")
    @classmethod
    def _env_ref(cls, value: str | None) -> str | None:
        if value is not None and not ENV_REF.match(value):  # never echo it: it may be the secret
            raise ValueError("must be an environment reference like 'env:S3_SECRET_KEY'")
        return value

    @field_validator("endpoint_url", "public_endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value)


class StorageSettings(BaseModel):
    """Where result files live (docs/storage.md): the data directory, or an S3-compatible bucket."""

    model_config = ConfigDict(hide_input_in_errors=True)

    backend: Literal["local", "s3"] = "local"
    s3: S3Settings = S3Settings()

    @model_validator(mode="after")
    def _bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("storage.s3.bucket is required with storage.backend = 's3'")
        return self


class Settings(BaseSettings):
    # hide_input_in_errors: a secret pasted where a reference belongs must not reach the logs.
    model_config = SettingsConfigDict(
        env_prefix="MEDIARELAY_", env_nested_delimiter="__", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("mediarelay-data")
    database_url: str | None = None
    public_base_url: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    access_log: bool = True  # one log line per request; off for load tests and log-shipping setups
    # Log lines as text, or one JSON object per line (time, level, logger, message, request_id, task_id).
    log_format: Literal["text", "json"] = "text"
    # Fernet key(s) encrypting stored upstream secrets, comma-separated (the first encrypts, all decrypt);
    # unset: <data_dir>/master.key, generated on the first embedded start (docs/security.md).
    master_key: str | None = Field(default=None, repr=False)
    # The HTTP server: granian (Rust, in this process; the faster one) or uvicorn (uvloop + httptools).
    server: Literal["granian", "uvicorn"] = "granian"
    # Requests one node handles at once; more wait in the server. Held long-polls and event streams
    # count: each is a parked coroutine (a few KB), so the bound is high (granian's default, 2,048,
    # left a node with 10,000 waiting clients answering everyone else tens of seconds late).
    max_requests_in_flight: int = Field(default=16384, ge=64)
    workers: int = 32  # concurrent engine steps per node (in-process driver or job worker)
    # Where background steps run: "inprocess" (the task table is the queue; one node), "procrastinate"
    # (jobs on PostgreSQL; any number of API nodes and workers), "auto": procrastinate on PostgreSQL.
    queue: Literal["auto", "inprocess", "procrastinate"] = "auto"
    # Sandbox encodes at once (and probes/previews too when media_processes is 0): CPU-bound, keep it
    # below the core count.
    finalize_concurrency: int = 2
    # Processes probing results and making their previews (0: threads of the server process instead).
    media_processes: int = Field(default=1, ge=0, le=64)
    sandbox: SandboxSettings = SandboxSettings()
    webhooks: WebhookSettings = WebhookSettings()
    channels: list[ChannelSettings] = []
    fetch: FetchSettings = FetchSettings()
    billing: BillingSettings = BillingSettings()
    storage: StorageSettings = StorageSettings()
    retention: RetentionSettings = RetentionSettings()
    prices: list[PriceRule] = []  # first match wins; the admin API may replace the table

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path()))

    @property
    def uses_jobs(self) -> bool:
        """Background steps as procrastinate jobs (scaled-out mode) rather than the in-process driver."""
        if self.queue == "auto":
            return self.db_url.startswith("postgresql")
        return self.queue == "procrastinate"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL; a plain `postgresql://` (or `postgres://`) URL gets the psycopg 3 driver."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'mediarelay.db').resolve()}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url.removeprefix(plain)
        return url

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
                    max_concurrency=1_000_000,  # [MR] no upstream to protect: no concurrency limit
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
