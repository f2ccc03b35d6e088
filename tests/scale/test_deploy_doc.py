"""docs/deploy.md, followed on 127.0.0.1: its environment, migration, Procfile and nginx blocks taken
verbatim (only addresses, ports and paths replaced), run against a private PostgreSQL, and a task
submitted, awaited and downloaded through the proxy."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import BIN, free_port, wait_until
from scale.pgcluster import Cluster, private_cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def block(name: str) -> str:
    """The fenced block right after `<!-- deploy:name -->`."""
    found = re.search(rf"<!-- deploy:{name} -->\n```[a-z]*\n(.*?)\n```", DOC.read_text(), re.S)
    assert found, f"docs/deploy.md has no deploy:{name} block"
    return found.group(1)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = private_cluster()
    try:
        yield found
    finally:
        found.stop()


def test_the_deployment_guide_works_as_written(cluster: Cluster, tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    proxy_port = free_port()
    ports = {"8001": str(free_port()), "8002": str(free_port())}

    # The environment file, with this machine's database, address and data directory.
    env = dict(os.environ)
    env.pop("MEDIARELAY_CONFIG", None)
    for line in block("env").splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    assert {"MEDIARELAY_DATABASE_URL", "MEDIARELAY_PUBLIC_BASE_URL", "MEDIARELAY_DATA_DIR"} <= set(env)
    env["MEDIARELAY_DATABASE_URL"] = cluster.url
    env["MEDIARELAY_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{proxy_port}"
    env["MEDIARELAY_DATA_DIR"] = str(tmp_path / "data")
    env["MEDIARELAY_SANDBOX__RUN_SECONDS"] = "1"

    def command(text: str) -> list[str]:
        for doc_port, port in ports.items():
            text = text.replace(doc_port, port)
        args = shlex.split(text)
        assert args[0] == "mediarelay"
        return [str(BIN), *args[1:]]

    migrate = subprocess.run(command(block("migrate")), env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr

    procs: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for line in block("procfile").splitlines():
            name, _, text = line.partition(":")
            out = (logs / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(command(text.strip()), env=env, stdout=out, stderr=out))

        conf = block("nginx").replace("listen 80;", f"listen 127.0.0.1:{proxy_port};")
        for doc_port, port in ports.items():
            conf = conf.replace(f"127.0.0.1:{doc_port}", f"127.0.0.1:{port}")
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        temp = "\n".join(
            f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"daemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
            f"http {{\naccess_log off;\n{temp}\n{conf}\n}}\n"
        )
        procs.append(subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]))

        base = f"http://127.0.0.1:{proxy_port}"
        wait_until(lambda: _health(base), bool, timeout=60)
        admin = (logs / "api1.log").read_text() + (logs / "api2.log").read_text()
        admin_key = next(w for w in admin.split() if w.startswith("mr-"))
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60) as api:
            r = api.post("/v1/tasks", json={"model": "sandbox-video", "operation": "text_to_video",
                                            "prompt": "deployed", "width": 64, "height": 64, "seconds": 1})  # fmt: skip
            assert r.status_code == 200, r.text
            task_id = r.json()["id"]
            etag = r.headers.get("etag", "")
            done = None
            for _ in range(30):  # long-polls through the proxy until it is done
                view = api.get(f"/v1/tasks/{task_id}?wait=20", headers={"If-None-Match": etag})
                if view.status_code == 200:
                    etag, done = view.headers["etag"], view.json()
                    if done["status"] in ("succeeded", "failed"):
                        break
            assert done is not None and done["status"] == "succeeded", done
            video = next(o for o in done["outputs"] if o["role"] == "video")
            assert video["url"].startswith(base + "/files/")
            blob = api.get(video["url"]).content
            assert hashlib.sha256(blob).hexdigest() == video["sha256"]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
    # Every process stopped cleanly on SIGTERM (uvicorn re-raises the signal once it has shut down).
    assert all(p.returncode in (0, -signal.SIGTERM) for p in procs), [(p.args, p.returncode) for p in procs]
    for name in ("api1", "api2", "worker"):
        assert "mediarelay stopped" in (logs / f"{name}.log").read_text(), name  # the lifespan's end ran


def _health(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
