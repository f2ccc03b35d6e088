"""`mediarelay doctor`: is this installation and data directory ready to serve?

Checks, without changing anything: the settings load; the database exists, is migrated to the newest
revision and takes writes (a table created and dropped in a transaction that is rolled back); the file
storage is writable with room to spare; ffmpeg (imageio-ffmpeg) runs and PyAV imports; and every
configured channel answers (the sandbox is built in; a relay gets one HTTP request to its base URL).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from mediarelay.channels.base import ChannelConfig
    from mediarelay.config import Settings

State = Literal["ok", "warn", "fail"]
GIB = 1 << 30
MIN_FREE, LOW_FREE = 100 << 20, 1 * GIB  # fail below 100 MiB free, warn below 1 GiB
REACH_TIMEOUT = 5.0
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@dataclass(frozen=True)
class Check:
    area: str
    name: str
    state: State
    detail: str


def check_config(data_dir: Path | None) -> tuple[Settings | None, Check]:
    from pydantic import ValidationError

    from mediarelay.config import Settings

    try:
        overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
        settings = Settings(**overrides)
    except (ValidationError, ValueError, OSError) as exc:
        return None, Check("config", "settings", "fail", " ".join(str(exc).split())[:300])
    return settings, Check(
        "config", "settings", "ok", f"data in {settings.data_dir.resolve()}, public URL {settings.base_url}"
    )


def check_database(settings: Settings) -> list[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from mediarelay.store.database import alembic_config, make_engine

    url = settings.db_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return [
                Check("database", "schema", "fail", f"no database at {path}: `mediarelay serve` creates it")
            ]
    shown = url.split("@")[-1] if "@" in url else url  # never print a password
    engine = make_engine(url)
    checks: list[Check] = []
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
            heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
            if current == heads:
                checks.append(Check("database", "schema", "ok", f"{shown} at revision {', '.join(heads)}"))
            else:
                have = ", ".join(sorted(current)) or "none"
                checks.append(
                    Check(
                        "database",
                        "schema",
                        "fail",
                        f"at revision {have}, newest {', '.join(heads)}: `mediarelay serve` migrates it",
                    )
                )
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                conn.execute(text("CREATE TABLE mediarelay_doctor_probe (x INTEGER)"))
                conn.execute(text("DROP TABLE mediarelay_doctor_probe"))
            finally:
                trans.rollback()
        checks.append(Check("database", "writable", "ok", "a write transaction succeeded (rolled back)"))
    except SQLAlchemyError as exc:
        message = " ".join(str(exc.__cause__ or exc).split())[:300]
        checks.append(Check("database", "access", "fail", message))
    finally:
        engine.dispose()
    return checks


def check_storage(settings: Settings) -> list[Check]:
    root = settings.files_dir
    if root.exists() and not root.is_dir():
        return [Check("storage", "files", "fail", f"{root} is not a directory")]
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [Check("storage", "files", "fail", f"{existing} is not a directory")]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".doctor-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return [Check("storage", "writable", "fail", f"cannot write in {existing}: {exc.strerror or exc}")]
    where = str(root.resolve()) if root.exists() else f"{root.resolve()} (created on start)"
    checks = [Check("storage", "writable", "ok", where)]
    free = shutil.disk_usage(existing).free
    state: State = "fail" if free < MIN_FREE else "warn" if free < LOW_FREE else "ok"
    checks.append(Check("storage", "free space", state, f"{free / GIB:.1f} GiB free"))
    return checks


def check_media() -> list[Check]:
    checks: list[Check] = []
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        run = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20, check=True
        )
        version = subprocess.run(
            [exe, "-version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout.splitlines()[0]
        version = " ".join(version.split()[:3])  # "ffmpeg version n9.0.2-…"
        if "libx264" in run.stdout:
            checks.append(Check("media", "ffmpeg", "ok", f"{version} (libx264)"))
        else:
            checks.append(Check("media", "ffmpeg", "fail", f"{version}: no libx264 encoder"))
    except (OSError, RuntimeError, subprocess.SubprocessError, IndexError) as exc:
        checks.append(Check("media", "ffmpeg", "fail", f"cannot run ffmpeg: {exc}"))
    try:
        import av

        checks.append(Check("media", "PyAV", "ok", f"av {av.__version__}"))
    except ImportError as exc:
        checks.append(Check("media", "PyAV", "fail", f"cannot import av: {exc}"))
    return checks


def _base_url(config: ChannelConfig) -> str | None:
    value = getattr(config, "base_url", None) or config.options.get("base_url")
    return str(value) if value else None


def check_channels(settings: Settings) -> list[Check]:
    import httpx

    from mediarelay.channels.registry import TYPES

    try:
        configs = settings.channel_configs()
    except (ValueError, TypeError) as exc:
        return [Check("channels", "config", "fail", str(exc))]
    if not configs:
        return [Check("channels", "config", "fail", "no channel is configured: no task can run")]
    checks: list[Check] = []
    for cfg in configs:
        name = f"{cfg.name} ({cfg.type})"
        url = _base_url(cfg)
        if cfg.type not in TYPES:
            checks.append(Check("channels", name, "fail", f"unknown type; known: {', '.join(sorted(TYPES))}"))
        elif not cfg.enabled:
            checks.append(Check("channels", name, "ok", "disabled"))
        elif cfg.type == "local":
            try:  # the `local` extra's libraries, as the channel's jobs import them
                import cv2  # noqa: F401
                import mediapipe  # noqa: F401

                checks.append(Check("channels", name, "ok", "runs on this machine's CPU"))
            except ImportError as exc:
                detail = f"{exc}: pip install 'mediarelay[local]'"
                checks.append(Check("channels", name, "fail", detail))
        elif url is None:
            local = cfg.type == "sandbox"
            detail = "built in, nothing to reach" if local else "no base URL to check"
            checks.append(Check("channels", name, "ok" if local else "warn", detail))
        else:
            started = time.monotonic()
            try:
                answer = httpx.get(url, timeout=REACH_TIMEOUT)
            except httpx.HTTPError as exc:
                checks.append(
                    Check("channels", name, "fail", f"{url} unreachable: {type(exc).__name__} {exc}")
                )
                continue
            ms = (time.monotonic() - started) * 1000
            checks.append(
                Check("channels", name, "ok", f"{url} answered HTTP {answer.status_code} in {ms:.0f} ms")
            )
    return checks


def run_checks(data_dir: Path | None) -> list[Check]:
    settings, config = check_config(data_dir)
    if settings is None:
        return [config]
    return [
        config,
        *check_database(settings),
        *check_storage(settings),
        *check_media(),
        *check_channels(settings),
    ]


def doctor(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the database and files live.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON on stdout.")] = False,
) -> None:
    """Check the settings, database, storage, ffmpeg and every channel; exit 1 if anything fails."""
    checks = run_checks(data_dir)
    failed = any(c.state == "fail" for c in checks)
    if json_out:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        table = Table("area", "check", "state", "detail")
        for c in checks:
            table.add_row(c.area, c.name, Text(c.state, style=STYLE[c.state]), c.detail)
        Console(width=None if sys.stdout.isatty() else 160).print(table)
        summary = "some checks failed" if failed else "all checks passed"
        Console(stderr=True).print(Text(summary, style=STYLE["fail" if failed else "ok"]))
    if failed:
        raise typer.Exit(1)


def register(app: Any) -> None:
    app.command("doctor")(doctor)
