"""Operations endpoints on real servers: /healthz, /readyz (database + storage), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PIKA, Server, start_server, wait_until
from mediarelay.api.operations import Readiness

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its own server: the counters checked here must see only this module's requests."""
    srv = start_server(tmp_path_factory.mktemp("ops"))
    yield srv
    srv.stop()


def scrape(server: Server) -> Samples:
    r = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_healthz_and_readyz_ok(ops_server: Server) -> None:
    r = httpx.get(f"{ops_server.base_url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"} and r.headers["x-mediarelay-version"]
    r = httpx.get(f"{ops_server.base_url}/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["storage"]["status"] == "ok"
    # The probe object is gone again.
    assert not list((ops_server.data_dir / "files").glob("readyz-*"))
    paths = httpx.get(f"{ops_server.base_url}/openapi.json").json()["paths"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert paths[path]["get"]["tags"] == ["Operations"], path


def test_metrics_count_requests_by_route_template_and_tasks_by_status(ops_server: Server) -> None:
    base = ops_server.base_url
    key = ops_server.new_key("ops")
    with ops_server.client(key) as api:
        ids = [
            api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Queue": "120"}).json()["id"]
            for _ in range(3)
        ]
        for _ in range(2):
            assert api.get(f"/pika/feed/{ids[0]}").status_code == 200  # the fast path
        assert api.get("/v1/tasks/does-not-exist").status_code == 404  # fast path, unknown id
    for path in ("/no/such/path/1", "/no/such/path/2", "/wp-login.php"):
        assert httpx.get(base + path).status_code == 404

    samples = scrape(ops_server)
    requests = "mediarelay_http_requests_total"
    assert value(samples, requests, method="GET", route="/pika/feed/{task_id}", status="200") == 2
    assert value(samples, requests, method="GET", route="/v1/tasks/{task_id}", status="404") == 1
    assert value(samples, requests, method="POST", route="/pika/generate", status="200") == 3
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 3  # one label for all
    assert not any("/no/such" in str(labels) or "wp-login" in str(labels) for _, labels in samples)
    # The latency histogram: buckets, count and sum per route.
    hist = "mediarelay_http_request_duration_seconds"
    feed = {"method": "GET", "route": "/pika/feed/{task_id}"}
    assert value(samples, hist + "_count", **feed) == 2
    assert value(samples, hist + "_bucket", le="+Inf", **feed) == 2
    assert value(samples, hist + "_bucket", le="0.001", **feed) is not None
    assert 0 < (value(samples, hist + "_sum", **feed) or 0) < 10
    assert value(samples, "mediarelay_queue_lag_seconds") is not None
    assert value(samples, "mediarelay_task_stats_ok") == 1

    # Tasks by status (a reading is reused for up to 5 s, and the three may be dispatched meanwhile).
    def queued() -> float:
        s = scrape(ops_server)
        return total(s, "mediarelay_tasks", status="queued") + total(s, "mediarelay_tasks", status="running")

    wait_until(queued, lambda n: n == 3, timeout=15, every=0.5)
    # The engine polls the dispatched tasks on the sandbox channel.
    polls = wait_until(
        lambda: value(scrape(ops_server), "mediarelay_upstream_polls_total", channel="sandbox") or 0,
        lambda n: n > 0,
        timeout=15,
        every=0.5,
    )
    assert polls > 0
    with ops_server.client(key) as api:
        for task_id in ids:
            api.post(f"/v1/tasks/{task_id}/cancel")
    canceled = wait_until(
        lambda: total(scrape(ops_server), "mediarelay_tasks", status="canceled"), lambda n: n == 3, timeout=15
    )
    assert canceled == 3


def test_readyz_reports_broken_storage_and_recovers(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        files = srv.data_dir / "files"
        assert httpx.get(f"{srv.base_url}/readyz").status_code == 200
        # A regular file where the storage directory was: no write can succeed, root or not.
        shutil.rmtree(files)
        files.write_text("not a directory")
        r = httpx.get(f"{srv.base_url}/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unready"
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["storage"]["status"] == "failed" and body["checks"]["storage"]["error"]
        assert str(srv.data_dir) not in r.text  # no paths to whoever can reach the port
        assert httpx.get(f"{srv.base_url}/healthz").status_code == 200  # alive, just not ready
        files.unlink()
        (files / ".staging").mkdir(parents=True)
        assert httpx.get(f"{srv.base_url}/readyz").status_code == 200
    finally:
        srv.stop()


def test_a_hung_check_times_out_and_is_not_started_twice() -> None:
    release = threading.Event()
    started: list[float] = []

    def stuck() -> None:
        started.append(time.monotonic())
        release.wait(10)

    async def probe() -> None:
        ready = Readiness({"database": lambda: None, "storage": stuck}, timeout=0.2)
        for _ in range(3):
            ok, checks = await ready.run()
            assert not ok and checks["database"]["status"] == "ok"
            assert checks["storage"] == {"status": "failed", "error": "no answer within 0.2 s"}
        assert len(started) == 1  # the later probes waited for the running check
        release.set()
        await asyncio.sleep(0.1)
        ok, _ = await ready.run()
        assert ok and len(started) == 2

    asyncio.run(probe())
