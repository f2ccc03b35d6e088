"""Upstream secrets stored through the admin API: encrypted at rest under the master key, usable by the
channel, never shown (API, admin pages, logs, errors), rotatable, and a wrong key stops the start
with one clear line (docs/security.md).

A front mediarelay relays to a back one (a `mediarelay` channel whose credential is a stored secret:
the back's API key).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from conftest import BIN, Server, start_server, wait_until

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
TINY = {"model": "tiny", "operation": "text_to_video", "prompt": "a tiny square", "width": 64, "height": 64,
        "seconds": 1, "fps": 8}


@pytest.fixture(scope="module")
def back(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("secrets-back"), MEDIARELAY_SANDBOX__RUN_SECONDS="0.5")
    yield srv
    srv.stop()


def front_with(tmp: Path, master_key: str) -> Server:
    return start_server(tmp, data_name="front", MEDIARELAY_SANDBOX__ENABLED="false",
                        MEDIARELAY_FETCH__ALLOWED_HOSTS='["127.0.0.1"]', MEDIARELAY_MASTER_KEY=master_key)


def restart_with(front: Server, master_key: str) -> Server:
    """The same node (data, database, port) started again with another master key setting."""
    env = {**front.env, "MEDIARELAY_MASTER_KEY": master_key}
    return Server(data_dir=front.data_dir, port=front.port, env=env, admin_key=front.admin_key)


def relayed(front: Server, key: str) -> str:
    with front.client(key) as c:
        r = c.post("/v1/tasks", json=TINY)
        assert r.status_code == 200, r.text
        task_id = str(r.json()["id"])
        done = wait_until(lambda: c.get(f"/v1/tasks/{task_id}").json(), lambda v: v["status"] in (
            "succeeded", "failed"), timeout=40)
    assert done["status"] == "succeeded", done
    return task_id


def admin_pages(front: Server, paths: list[str]) -> list[httpx.Response]:
    """The admin UI's pages, fetched after logging in like a browser (tests/web/webui.py does the same)."""
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    with httpx.Client(base_url=front.base_url, timeout=30) as http:
        form = http.get("/admin/login")
        token = csrf.search(form.text)
        assert token, form.text[:500]
        done = http.post("/admin/login", data={"csrf": token.group(1), "key": front.admin_key, "next": "/admin"})
        assert done.status_code == 303, done.text
        return [http.get(path) for path in paths]


def stored_tokens(front: Server) -> list[str]:
    (config,) = front.rows("select config from channels where name='relay'")[0]
    return list(json.loads(config)["secrets"].values())


def test_stored_secrets_are_encrypted_masked_and_rotatable(back: Server, tmp_path: Path) -> None:
    secret = back.new_key("front-relay")  # the upstream credential: must never show up on the front
    front = front_with(tmp_path, KEY_A)
    try:
        user = front.new_key("client")
        with front.client(front.admin_key) as admin:
            body = {"name": "relay", "type": "mediarelay", "base_url": back.base_url,
                    "credentials": ["secret:main"], "secrets": {"main": secret},
                    "options": {"poll_fast_seconds": 0.3}}
            # Refusals name the problem, never the value.
            bad = admin.post("/v1/admin/channels", json={**body, "secrets": {"bad label!": secret}})
            assert bad.status_code == 400 and secret not in bad.text
            missing = admin.post("/v1/admin/channels", json={**body, "secrets": {}})
            assert missing.status_code == 400 and "secret:main" in missing.text
            made = admin.post("/v1/admin/channels", json=body)
            assert made.status_code == 201, made.text
            assert made.json()["credentials"] == [{"ref": "secret:main", "set": True}]
            answers = [made, admin.patch("/v1/admin/channels/relay", json={"priority": 3}),
                       admin.get("/v1/admin/channels"), admin.get("/v1/admin/channels/relay")]
            assert answers[1].json()["credentials"] == [{"ref": "secret:main", "set": True}]  # kept by PATCH
        task_id = relayed(front, user)
        pages = admin_pages(front, ["/admin/channels", "/admin/channels/relay/edit", f"/admin/tasks/{task_id}"])
        assert all(p.status_code == 200 for p in pages)
        for shown in [*answers, *pages]:
            assert secret not in shown.text
        # At rest: only the ciphertext, which the master key opens.
        rows = front.rows("select config from channels")
        assert rows and secret not in str(rows)
        (token,) = stored_tokens(front)
        assert token.startswith("enc:v1:") and Fernet(KEY_A).decrypt(token[7:].encode()).decode() == secret
        assert user not in str(front.rows("select * from api_keys"))  # API keys: only their hashes
        front.stop()

        # A wrong key: the node refuses to start, with one clear line and no secret or traceback.
        wrong = restart_with(front, KEY_B)
        with pytest.raises(RuntimeError, match="cannot be decrypted"):
            wrong.start()
        assert wrong.proc is not None and wrong.proc.returncode == 2

        # Rotation: the new key first, the old one after it; the start re-encrypts under the new key.
        rotated = restart_with(front, f"{KEY_B},{KEY_A}")
        rotated.start()
        (token,) = stored_tokens(rotated)
        assert Fernet(KEY_B).decrypt(token[7:].encode()).decode() == secret
        rotated.stop()
        only_new = restart_with(front, KEY_B)
        only_new.start()
        try:
            relayed(only_new, user)  # the old key is gone and the channel still works
        finally:
            only_new.stop()
        log = front.log_path.read_text()
        assert "cannot be decrypted" in log and "Traceback" not in log
        assert secret not in log and KEY_A not in log and KEY_B not in log
    finally:
        front.stop()


def test_embedded_mode_generates_and_keeps_its_key_file(tmp_path: Path) -> None:
    if "MEDIARELAY_TEST_DATABASE" in os.environ and os.environ["MEDIARELAY_TEST_DATABASE"] == "postgresql":
        pytest.skip("the key file is the embedded (SQLite) default")
    srv = start_server(tmp_path, MEDIARELAY_MASTER_KEY="")
    try:
        path = srv.data_dir / "master.key"
        key = path.read_text().strip()
        Fernet(key.encode())  # a valid key
        assert path.stat().st_mode & 0o777 == 0o600
        srv.stop()
        srv.start()
        assert path.read_text().strip() == key  # reused, not replaced
    finally:
        srv.stop()


def test_scaled_out_without_a_shared_key_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "MEDIARELAY_MASTER_KEY": "", "MEDIARELAY_QUEUE": "procrastinate",
           "MEDIARELAY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    out = subprocess.run([str(BIN), "serve", "--data-dir", str(tmp_path / "d")], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "MEDIARELAY_MASTER_KEY" in out.stderr and "Traceback" not in out.stderr
