"""What the benchmarks share: ports, waiting for a server, running wrk, and an nginx reference.

Every benchmark compares against a reference measured in the same run; nginx (one worker, access log
off) is the usual one. wrk and nginx come from Debian (`apt-get install wrk nginx-light`, which
`.ci/run` and `bench/run.py` do when they are missing).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "mediarelay"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> float:
    """Wait until `url` answers at all; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return time.monotonic() - started
        except httpx.HTTPError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class WrkResult:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors


def parse_wrk(out: str) -> WrkResult:
    def latency(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(
        float(rps.group(1)) if rps else 0.0,
        latency("50"),
        latency("99"),
        int(total.group(1)) if total else 0,
        errors,
    )


def wrk(url: str, connections: int, duration: int, script: Path | None = None, threads: int = 1) -> WrkResult:
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    return parse_wrk(out)


class Nginx:
    """One nginx worker on 127.0.0.1 serving `root` as static files, plus fixed answers per path."""

    def __init__(self, work: Path, root: Path | None = None, fixed: dict[str, bytes] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        locations = "".join(
            f"location = {path} {{ return 200 '{body.decode()}'; }}" for path, body in (fixed or {}).items()
        )
        conf = work / f"nginx-{self.port}.conf"
        conf.write_text(
            f"worker_processes 1; pid {work}/nginx-{self.port}.pid; error_log {work}/nginx-error.log;"
            " daemon off;\nevents { worker_connections 4096; }\n"
            f"http {{ access_log off; default_type application/json; server {{"
            f" listen 127.0.0.1:{self.port} backlog=2048; root {root or work}; location / {{ }} {locations} }} }}\n"
        )
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
        wait_http(self.base + "/")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_nginx(work: Path, fixed: dict[str, bytes] | None = None, root: Path | None = None) -> Nginx:
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the files
    return Nginx(work, root, fixed)


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        sys.exit(f"needed: {' '.join(missing)} (apt-get install {' '.join(missing)}; bench/run.py does it)")
