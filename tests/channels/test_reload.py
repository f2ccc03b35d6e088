"""Channel configuration changes without a restart: mediarelay.toml is watched (and re-read at once on
SIGHUP); a broken file keeps the running configuration and says why; tasks route to the new channels."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import start_server, wait_until

FIRST = """
[sandbox]
enabled = false

[[channels]]
name = "alpha"
type = "sandbox"
models = ["alpha-*"]
options = { run_seconds = 0.3, queue_seconds = 0.1 }
"""

SECOND = FIRST + """
[[channels]]
name = "beta"
type = "sandbox"
models = ["beta-*"]
priority = 3
max_concurrency = 2
options = { run_seconds = 0.3, queue_seconds = 0.1 }
"""


def names(admin: object) -> list[str]:
    return [c["name"] for c in admin.get("/v1/admin/channels").json()["data"]]  # type: ignore[attr-defined]


def test_the_configuration_file_is_watched(tmp_path: Path) -> None:
    config = tmp_path / "mediarelay.toml"  # the server's working directory is tmp_path
    config.write_text(FIRST)
    server = start_server(tmp_path)
    try:
        key = server.new_key()
        with server.client(server.admin_key) as admin, server.client(key) as api:
            assert names(admin) == ["alpha"]
            body = {"model": "beta-1", "operation": "text_to_image", "prompt": "x"}
            first = api.post("/v1/tasks", json=body).json()["id"]
            failed = wait_until(lambda: api.get(f"/v1/tasks/{first}").json(), lambda v: v["status"] == "failed")
            assert failed["error"]["code"] == "no_channel"
            config.write_text(SECOND)
            wait_until(lambda: names(admin), lambda n: n == ["alpha", "beta"], timeout=15)
            beta = admin.get("/v1/admin/channels/beta").json()
            assert beta["source"] == "file" and beta["config"]["max_concurrency"] == 2
            second = api.post("/v1/tasks", json=body).json()["id"]
            done = wait_until(lambda: api.get(f"/v1/tasks/{second}").json(), lambda v: v["status"] == "succeeded")
            assert done["channel"] == "beta"
            # A broken file changes nothing and is reported; fixing it and SIGHUP applies it at once.
            broken = SECOND + "\n[[channels]]\nname = 'gamma'\ntype = 'no-such-type'\n"
            config.write_text(broken)
            listing = wait_until(
                lambda: admin.get("/v1/admin/channels").json(), lambda v: v["config_error"] is not None, timeout=15
            )
            assert "no-such-type" in listing["config_error"] and names(admin) == ["alpha", "beta"]
            # Same size and time stamp as the broken file: only SIGHUP can make the server notice.
            stamp = config.stat()
            config.write_text(FIRST + "#" * (len(broken) - len(FIRST)))
            os.utime(config, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            time.sleep(2.5)
            assert names(admin) == ["alpha", "beta"]
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: names(admin), lambda n: n == ["alpha"], timeout=15, every=0.05)
            assert admin.get("/v1/admin/channels").json()["config_error"] is None
    finally:
        server.stop()
