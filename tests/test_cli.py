"""The command line: keys create/list/revoke against the same data directory as a running server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from conftest import Server, start_server


def test_keys_create_prints_the_key_alone(server: Server) -> None:
    out = server.cli("keys", "create", "--name", "script")
    assert out.returncode == 0
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("mr-")
    key = out.stdout.strip()
    with server.client(key) as c:
        assert c.get("/avatar/voice").status_code == 200


def test_keys_list_shows_prefixes_not_secrets(server: Server) -> None:
    key = server.new_key("listed")
    out = server.cli("keys", "list")
    assert out.returncode == 0 and "listed" in out.stdout
    assert key not in out.stdout and key[:9] in out.stdout


def test_revoke_stops_a_key_within_seconds(server: Server) -> None:
    key = server.new_key("doomed")
    with server.client(key) as c:
        assert c.get("/avatar/voice").status_code == 200
        prefix = key[:9]
        out = server.cli("keys", "revoke", prefix)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 10
        while c.get("/avatar/voice").status_code != 401:
            assert time.monotonic() < deadline, "revoked key still accepted"
            time.sleep(0.25)
    assert server.cli("keys", "revoke", prefix).returncode == 1  # already revoked


def test_keys_are_stored_hashed(server: Server) -> None:
    key = server.new_key("hashed")
    dump = "\n".join(str(row) for row in server.rows("select * from api_keys"))
    assert key not in dump and key[len("mr-") :] not in dump


def test_admin_key_is_printed_once_and_sees_every_task(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    admin = server.admin_key
    user = server.new_key("u")
    with server.client(user) as api:
        task_id = api.post(
            "/avatar/generation",
            json={"avatar_url": "https://example.com/f.png", "audio_url": "https://example.com/a.mp3"},
            headers={"X-Sandbox-Queue": "60"},
        ).json()["data"]
    server.stop()
    server.start()  # second start: no new admin key
    with server.client(admin) as op:
        assert op.get(f"/avatar/task/{task_id}").json()["animate_id"] == task_id
    server.stop()
    assert server.proc is not None and server.proc.stdout is not None
    printed = server.proc.stdout.read().splitlines()  # uvicorn's access log also goes to stdout
    assert not [line for line in printed if "mr-" in line]
    listed = server.cli("keys", "list").stdout
    assert listed.count("admin") == 2  # the name and the admin column of the single admin key


def test_openapi_documents_every_dialect_endpoint(server: Server) -> None:
    doc = httpx.get(f"{server.base_url}/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/avatar/generation", "post"),
        ("/avatar/task/{task_id}", "get"),
        ("/avatar/voice", "get"),
        ("/pika/generate", "post"),
        ("/pika/feed/{task_id}", "get"),
        ("/v1/video/create", "post"),
        ("/v1/video/query", "get"),
        ("/createTask", "post"),
        ("/getTaskInfo", "get"),
        ("/files/{task_id}/{name}", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /openapi.json"
    query_params = {p["name"] for p in paths["/v1/video/query"]["get"]["parameters"]}
    assert "id" in query_params
    assert "promptId" in {p["name"] for p in paths["/getTaskInfo"]["get"]["parameters"]}
