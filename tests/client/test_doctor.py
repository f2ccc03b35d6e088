"""`mediarelay doctor`: a healthy data directory passes; broken ones fail with a non-zero exit and say why."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from alembic import command

from conftest import BIN, Server, free_port
from mediarelay.store.database import alembic_config


def doctor(data_dir: Path, **env: str) -> tuple[int, dict[str, Any]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIARELAY_")}
    out = subprocess.run(
        [str(BIN), "doctor", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=data_dir.parent,
        timeout=90,
        check=False,
    )
    return out.returncode, json.loads(out.stdout)


def states(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["area"], c["name"]): c["state"] for c in report["checks"]}


def test_a_healthy_data_directory(server: Server) -> None:
    out = server.cli("doctor")  # the running server's own data directory
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stderr
    for area in ("config", "database", "storage", "media", "channels"):
        assert area in out.stdout
    db = {k: v for k, v in server.env.items() if k == "MEDIARELAY_DATABASE_URL"}  # PostgreSQL runs
    code, report = doctor(server.data_dir, **db)
    assert code == 0 and report["ok"]
    found = states(report)
    assert found[("database", "schema")] == "ok" and found[("database", "writable")] == "ok"
    assert found[("media", "ffmpeg")] == "ok" and found[("media", "PyAV")] == "ok"
    assert found[("channels", "sandbox (sandbox)")] == "ok"
    assert server.task_count() >= 0  # the database still opens after the write probe


def test_a_broken_data_directory_fails(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    (data / "mediarelay.db").write_bytes(b"this is not a database")
    (data / "files").write_text("a file where the storage directory should be")
    code, report = doctor(data)
    assert code == 1 and not report["ok"]
    found = states(report)
    assert found[("database", "access")] == "fail"
    assert found[("storage", "files")] == "fail"
    assert found[("media", "ffmpeg")] == "ok"  # the rest is still checked


def test_a_missing_or_old_database_fails(tmp_path: Path) -> None:
    code, report = doctor(tmp_path / "empty")
    assert code == 1 and states(report)[("database", "schema")] == "fail"
    assert "mediarelay serve" in json.dumps(report)
    old = tmp_path / "old"
    old.mkdir()
    command.upgrade(alembic_config(f"sqlite:///{old / 'mediarelay.db'}"), "0001")
    code, report = doctor(old)
    schema = next(c for c in report["checks"] if c["name"] == "schema")
    assert code == 1 and schema["state"] == "fail" and "0001" in schema["detail"]


def test_channels_are_reached(server: Server, tmp_path: Path) -> None:
    """A relay gets one HTTP request to its base URL (any answer means reachable); an unreachable one
    fails, and so does an unknown channel type."""
    channels = [
        {"name": "up", "type": "mediarelay", "base_url": server.base_url},
        {"name": "down", "type": "unified_video", "base_url": f"http://127.0.0.1:{free_port()}"},
        {"name": "odd", "type": "no-such-type"},
    ]
    code, report = doctor(server.data_dir, MEDIARELAY_CHANNELS=json.dumps(channels))
    found = {c["name"]: c for c in report["checks"] if c["area"] == "channels"}
    assert code == 1
    up, down = found["up (mediarelay)"], found["down (unified_video)"]
    assert up["state"] == "ok" and "answered HTTP 404" in up["detail"], up
    assert down["state"] == "fail" and "unreachable" in down["detail"], down
    assert found["odd (no-such-type)"]["state"] == "fail"
    assert found["sandbox (sandbox)"]["state"] == "ok"


def test_bad_settings_fail(tmp_path: Path) -> None:
    (tmp_path / "mediarelay.toml").write_text("port = 'not a number'\n")
    data = tmp_path / "data"
    data.mkdir()
    code, report = doctor(data)
    assert code == 1 and [c["state"] for c in report["checks"]] == ["fail"]
    assert "port" in report["checks"][0]["detail"]
