"""The command line: keys create/list/revoke against the same data directory as a running server."""

from __future__ import annotations

import time

from conftest import Server


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
    import sqlite3

    key = server.new_key("hashed")
    with sqlite3.connect(f"file:{server.data_dir / 'mediarelay.db'}?mode=ro", uri=True) as db:
        dump = "\n".join(str(row) for row in db.execute("select * from api_keys"))
    assert key not in dump and key[len("mr-"):] not in dump
