"""Settings: defaults, mediarelay.toml, MEDIARELAY_* environment (which wins), and a live override."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import start_server, wait_until
from mediarelay.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MEDIARELAY_CONFIG", "MEDIARELAY_PORT", "MEDIARELAY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8000, Path("mediarelay-data"))
    assert s.db_url == f"sqlite:///{(tmp_path / 'mediarelay-data' / 'mediarelay.db').resolve()}"
    assert s.base_url == "http://127.0.0.1:8000"
    assert [c.name for c in s.channel_configs()] == ["sandbox"]


def test_toml_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mediarelay.toml").write_text(
        'port = 9001\npublic_base_url = "https://media.example.test/"\n'
        "[sandbox]\nrun_seconds = 42\nfailure_rate = 0.5\n"
        '[[channels]]\nname = "sbx2"\ntype = "sandbox"\nmodels = ["pika-*"]\npriority = 5\n'
    )
    monkeypatch.setenv("MEDIARELAY_PORT", "9002")
    monkeypatch.setenv("MEDIARELAY_SANDBOX__RUN_SECONDS", "3")
    s = Settings()
    assert s.port == 9002  # environment wins over the file
    assert s.sandbox.run_seconds == 3 and s.sandbox.failure_rate == 0.5
    assert s.base_url == "https://media.example.test"
    configs = {c.name: c for c in s.channel_configs()}
    assert configs["sbx2"].models == ("pika-*",) and configs["sbx2"].priority == 5
    assert configs["sandbox"].options["run_seconds"] == 3
    other = tmp_path / "other.toml"
    other.write_text("port = 7000\n")
    monkeypatch.setenv("MEDIARELAY_CONFIG", str(other))
    monkeypatch.delenv("MEDIARELAY_PORT")
    assert Settings().port == 7000


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDIARELAY_SANDBOX__FAILURE_RATE", "2")
    with pytest.raises(ValueError, match="failure_rate"):
        Settings()


def test_public_base_url_shapes_result_urls(tmp_path: Path) -> None:
    server = start_server(tmp_path, MEDIARELAY_PUBLIC_BASE_URL="https://cdn.example.test/media")
    try:
        with server.client(server.new_key()) as api:
            task_id = api.post(
                "/avatar/generation",
                json={"avatar_url": "https://example.com/f.png", "audio_url": "https://example.com/a.mp3"},
                headers={"X-Sandbox-Duration": "0.2", "X-Sandbox-Queue": "0"},
            ).json()["data"]
            work = wait_until(
                lambda: api.get(f"/avatar/task/{task_id}").json(),
                lambda w: w["web_work_status"] == 200,
                timeout=30,
            )
            url = work["work_video_path"]
            assert url.startswith("https://cdn.example.test/media/files/")
            # The same path is served locally.
            local = httpx.get(server.base_url + url.removeprefix("https://cdn.example.test/media"))
            assert local.status_code == 200 and local.headers["content-type"] == "video/mp4"
    finally:
        server.stop()
