"""Scaled out on PostgreSQL, webhook deliveries are procrastinate jobs: deferred in the transaction that
writes the outbox row, run by whichever `mediarelay worker` is alive, retried as new jobs, and (for a
redelivery asked on an API-only node) made by that node and delivered by a worker.

Setup: one API node (`serve --no-worker`) and, when the test wants one, a worker, on a fresh database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import FAST_SANDBOX, Server, Worker, free_port, pg_available, server_database, wait_until
from webhooks.test_webhooks import AVATAR, HOLD, Receiver, deliveries, only_delivery

ENV = {
    "MEDIARELAY_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
    "MEDIARELAY_WEBHOOKS__RETRY_SCHEDULE": "[0.5, 1, 2]",
    "MEDIARELAY_WEBHOOKS__TIMEOUT_SECONDS": "3",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not pg_available():
        pytest.skip("no PostgreSQL server reachable")
    data = tmp_path_factory.mktemp("webhook-jobs") / "data"
    data.mkdir()
    env = {**os.environ, **FAST_SANDBOX, **ENV, "MEDIARELAY_DATABASE_URL": server_database()}
    env.pop("MEDIARELAY_CONFIG", None)
    srv = Server(data_dir=data, port=free_port(), env=env, args=("--no-worker",)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(node: Server) -> Iterator[httpx.Client]:
    with node.client(node.new_key("jobs")) as c:
        yield c


@pytest.fixture(scope="module")
def recv() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def worker(node: Server, name: str) -> Worker:
    return Worker(node.data_dir, node.env, name).start()


def webhook_jobs(node: Server, public_id: str) -> list[tuple[str, str]]:
    """(status, queueing lock) of the task's waiting or running delivery jobs."""
    return [
        (str(r[0]), str(r[1]))
        for r in node.rows(
            "select j.status, j.queueing_lock from procrastinate_jobs j join tasks t"
            " on j.lock = 'webhook:' || t.id where t.public_id = ? and j.task_name = 'mediarelay.webhook'",
            (public_id,),
        )
    ]


def test_a_delivery_is_a_job_made_with_the_change_and_run_by_a_worker(
    node: Server, client: httpx.Client, recv: Receiver, tmp_path: Path
) -> None:
    recv.plan["/jobs"] = [500]  # the first attempt fails: the retry is a new job
    r = client.post("/avatar/generation", json=AVATAR, headers={**HOLD, "X-Webhook-Url": recv.url("/jobs")})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]
    assert client.post(f"/avatar/task/{task_id}/cancel").status_code == 200
    # No worker yet: the cancel's transaction made the outbox row and its job, and nothing was sent.
    assert [s for s, _ in webhook_jobs(node, task_id)] == ["todo"]
    assert recv.at("/jobs") == []
    w = worker(node, "webhook-worker-1")
    try:
        hits = recv.wait("/jobs", 2)
        assert hits[0].headers["webhook-id"] == hits[1].headers["webhook-id"]
        log = only_delivery(client, task_id)
        assert [t["http_status"] for t in log["attempts"]] == [500, 200]
        wait_until(lambda: webhook_jobs(node, task_id), lambda jobs: jobs == [], 10, 0.1)  # nothing left over
    finally:
        w.stop()

    # A redelivery asked on the API-only node defers a job there; the next worker to start sends it.
    r = client.post(f"/v1/webhooks/deliveries/{log['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    assert [s for s, _ in webhook_jobs(node, task_id)] == ["todo"]
    w = worker(node, "webhook-worker-2")
    try:
        again = recv.wait("/jobs", 3)
        assert again[2].headers["webhook-id"] == log["id"]
        assert only_delivery(client, task_id)["attempt_count"] == 3
    finally:
        w.stop()


def test_events_of_one_task_go_out_in_order_through_jobs(
    node: Server, client: httpx.Client, recv: Receiver
) -> None:
    w = worker(node, "webhook-worker-3")
    try:
        r = client.post(
            "/avatar/generation",
            json=AVATAR,
            headers={
                "X-Webhook-Url": recv.url("/order"),
                "X-Sandbox-Queue": "0.2",
                "X-Sandbox-Duration": "1",
            },
        )
        assert r.status_code == 200, r.text
        task_id = r.json()["data"]
        hits = recv.wait("/order", 2)
        types = [h.body for h in hits]
        assert b"task.running" in types[0] and b"task.succeeded" in types[1]
        done = wait_until(
            lambda: deliveries(client, task_id=task_id),
            lambda d: len(d) == 2 and all(x["status"] == "delivered" for x in d),
            30,
            0.1,
        )
        assert len(done) == 2
    finally:
        w.stop()
