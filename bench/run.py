"""Every benchmark in one go: `.venv/bin/python bench/run.py` (add `--quick` for a short smoke run).

Each part runs against its own reference measured in the same run (nginx on the same bytes, the
embedded mode, a fixed polling round, a bare interpreter) and prints its table; docs/benchmarks.md
holds the results with their history. Installs wrk and nginx from Debian when they are missing.

Parts (`--only status,submit,...` to pick):
- status    status-query throughput and latency per dialect vs nginx (bench/status_bench.py)
- submit    durable submits per second on the embedded default (bench/submit_bench.py)
- memory    idle RSS, time to ready, RSS with 100,000 in-flight tasks (bench/memory_bench.py)
- freshness staleness and upstream requests per task vs fixed polling (bench/relay_freshness.py)
- scale     PostgreSQL with 1 and 2 workers vs embedded, cross-node wake-ups (bench/scale_bench.py)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL: dict[str, list[str]] = {
    "status": ["status_bench.py", "--tasks", "1000000", "--duration", "10", "--rounds", "2"],
    "submit": ["submit_bench.py", "--duration", "10"],
    "memory": ["memory_bench.py", "--tasks", "100000", "--seconds", "90"],
    "freshness": ["relay_freshness.py", "--tasks", "1000", "--types", "unified_video"],
    "scale": ["scale_bench.py", "--tasks", "1000", "--cross", "200"],
}
QUICK: dict[str, list[str]] = {
    "status": ["status_bench.py", "--tasks", "20000", "--duration", "3", "--rounds", "1", "--connections", "64"],
    "submit": ["submit_bench.py", "--duration", "3"],
    "memory": ["memory_bench.py", "--tasks", "10000", "--seconds", "15"],
    "freshness": ["relay_freshness.py", "--tasks", "50", "--types", "unified_video", "--min", "5", "--max", "10"],
    "scale": ["scale_bench.py", "--tasks", "100", "--cross", "20", "--setups", "embedded,1"],
}


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "nginx") if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    packages = ["wrk" if t == "wrk" else "nginx-light" for t in missing]
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {' '.join(packages)} from Debian", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every part runs")
    parser.add_argument("--only", default=",".join(FULL), help="comma-separated parts")
    args = parser.parse_args()
    ensure_tools()
    plan = QUICK if args.quick else FULL
    failed = []
    for part in args.only.split(","):
        command = [sys.executable, str(HERE / plan[part][0]), *plan[part][1:]]
        print(f"\n## {part}: {' '.join(['.venv/bin/python', 'bench/' + plan[part][0], *plan[part][1:]])}\n", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, check=False)
        print(f"({part}: {time.monotonic() - started:.0f} s, exit {done.returncode})", flush=True)
        if done.returncode:
            failed.append(part)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
