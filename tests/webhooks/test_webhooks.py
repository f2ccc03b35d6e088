"""Webhooks end to end: a real gateway pushes signed events to a receiver on 127.0.0.1.

The dedicated gateway allowlists 127.0.0.1 and retries on a short schedule (0.5 s, 1 s, 2 s); the shared
`server` has no allowlist and shows what the address guard refuses. Signatures are verified with the
Standard Webhooks reference implementation (`standardwebhooks`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from conftest import PIKA_SEED, Server, free_port, start_server, wait_until

AVATAR = {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/voice.mp3"}
SORA = {
    "model": "sora-2",
    "prompt": "make animate",
    "orientation": "portrait",
    "size": "small",
    "duration": 10,
}
FACESWAP_VIDEOS = {
    "taskType": 7,
    "faceUrl": "https://example.com/face.png",
    "targetUrls": ["https://example.com/a.mp4", "https://example.com/b.mp4"],
}
HOLD = {"X-Sandbox-Queue": "60"}  # stays queued until canceled: exactly one event, task.canceled
EVENT_ID = re.compile(r"^msg_[0-9A-HJKMNP-TV-Z]{26}$")


# -- a receiver -----------------------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def verify(self, secret: str) -> dict[str, Any]:
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload


class Receiver:
    """An HTTP server on 127.0.0.1 recording every request; `plan[path]` lists the statuses to answer
    first (then 200). Stopped, its port refuses connections; started again, it listens on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self.plan: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._srv: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.hits.append(
                        Hit(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    planned = receiver.plan.get(self.path) or []
                    status = planned.pop(0) if planned else 200
                answer = b"fail" if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def wait(self, path: str, count: int, timeout: float = 30) -> list[Hit]:
        hits: list[Hit] = wait_until(lambda: self.at(path), lambda h: len(h) >= count, timeout, 0.05)
        return hits


def types(hits: list[Hit], secret: str) -> list[str]:
    return [h.verify(secret)["type"] for h in hits]


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("webhooks"),
        MEDIARELAY_WEBHOOKS__ALLOWED_HOSTS='["127.0.0.1"]',
        MEDIARELAY_WEBHOOKS__RETRY_SCHEDULE="[0.5, 1, 2]",
        MEDIARELAY_WEBHOOKS__TIMEOUT_SECONDS="3",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def recv() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def key_a(wh: Server) -> str:
    return wh.new_key("a")


@pytest.fixture
def a(wh: Server, key_a: str) -> Iterator[httpx.Client]:
    with wh.client(key_a) as c:
        yield c


def secret_of(client: httpx.Client) -> str:
    r = client.get("/v1/webhook")
    assert r.status_code == 200, r.text
    secret: str = r.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


def held_and_canceled(client: httpx.Client, url: str) -> str:
    """An avatar task that is canceled while queued: its only event is task.canceled."""
    r = client.post("/avatar/generation", json=AVATAR, headers={**HOLD, "X-Webhook-Url": url})
    assert r.status_code == 200, r.text
    task_id: str = r.json()["data"]
    assert client.post(f"/avatar/task/{task_id}/cancel").status_code == 200
    return task_id


def deliveries(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/webhooks/deliveries", params=params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def only_delivery(client: httpx.Client, task_id: str, done: str = "delivered") -> dict[str, Any]:
    found = wait_until(
        lambda: deliveries(client, task_id=task_id), lambda d: len(d) == 1 and d[0]["status"] == done, 30, 0.1
    )
    return dict(found[0])


# -- delivery ---------------------------------------------------------------------------------------------


def test_status_events_arrive_in_order_signed_per_standard_webhooks(a: httpx.Client, recv: Receiver) -> None:
    secret = secret_of(a)
    r = a.post("/avatar/generation", json=AVATAR, headers={"X-Webhook-Url": recv.url("/t1")})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]
    hits = recv.wait("/t1", 2)
    time.sleep(0.3)
    assert len(recv.at("/t1")) == 2  # queued makes no event; finalizing is still "running"
    payloads = [h.verify(secret) for h in hits]
    assert [p["type"] for p in payloads] == ["task.running", "task.succeeded"]
    for hit, payload in zip(hits, payloads, strict=True):
        assert EVENT_ID.match(hit.headers["webhook-id"])
        assert hit.headers["content-type"] == "application/json"
        assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
        assert hit.headers["webhook-signature"].startswith("v1,")
        assert set(payload) == {"type", "timestamp", "data"}
        when = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        assert abs(when.timestamp() - time.time()) < 60 and payload["timestamp"].endswith("Z")
        data = payload["data"]
        assert set(data) == {"task_id", "public_id", "dialect", "status", "version", "error", "view"}
        assert data["public_id"] == task_id and data["dialect"] == "avatar" and data["error"] is None
        assert type(data["version"]) is int and len(data["task_id"]) == 26
    assert hits[0].headers["webhook-id"] != hits[1].headers["webhook-id"]
    running, succeeded = (p["data"] for p in payloads)
    assert running["status"] == "running" and running["view"]["web_work_status"] == 1
    assert running["view"]["work_video_path"] == ""
    assert succeeded["status"] == "succeeded" and succeeded["version"] > running["version"]
    # The payload carries the task's own dialect view: exactly what a status GET answers now.
    assert succeeded["view"] == a.get(f"/avatar/task/{task_id}").json()
    # A tampered body or another secret fails verification.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(hits[1].body.replace(b"succeeded", b"failed"), hits[1].headers)
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        hits[1].verify(other)
    log = deliveries(a, task_id=task_id)
    assert [d["type"] for d in log] == ["task.succeeded", "task.running"]  # newest first
    assert all(d["status"] == "delivered" and d["attempt_count"] == 1 for d in log)
    assert [d["id"] for d in reversed(log)] == [h.headers["webhook-id"] for h in hits]
    assert log[0]["payload"] == payloads[1] and log[0]["url"] == recv.url("/t1")
    attempt = log[0]["attempts"][0]
    assert attempt["attempt"] == 1 and attempt["http_status"] == 200 and attempt["error"] is None
    assert attempt["response"] == "ok" and type(attempt["duration_ms"]) is int


def test_natural_fields_and_the_key_default(wh: Server, recv: Receiver) -> None:
    out = wh.cli("keys", "create", "--name", "b", "--webhook-url", recv.url("/default"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("mr-")  # the key alone, as before
    key = out.stdout.strip()
    shown = wh.cli("keys", "webhook", key[:9])
    assert shown.returncode == 0 and shown.stdout.count("\n") == 1
    secret = shown.stdout.strip()
    with wh.client(key) as b:
        assert b.get("/v1/webhook").json() == {
            "object": "webhook_endpoint",
            "url": recv.url("/default"),
            "secret": secret,
        }
        pika = b.post("/pika/generate", json={**PIKA_SEED, "callbackUrl": recv.url("/pika")}, headers=HOLD)
        sora = b.post("/v1/video/create", json={**SORA, "callback_url": recv.url("/uv")}, headers=HOLD)
        batch = b.post("/createTask", json={**FACESWAP_VIDEOS, "callbackUrl": recv.url("/fs")})
        failing = b.post("/avatar/generation", json=AVATAR, headers={"X-Sandbox-Fail": "boom"})
        override = b.post(
            "/avatar/generation", json=AVATAR, headers={**HOLD, "X-Webhook-Url": recv.url("/o")}
        )
        for r in (pika, sora, batch, failing, override):
            assert r.status_code == 200 and "error" not in r.json(), r.text
        pika_id, sora_id = pika.json()["id"], sora.json()["id"]
        assert b.post(f"/pika/feed/{pika_id}/cancel").status_code == 200
        assert b.post("/v1/video/cancel", params={"id": sora_id}).status_code == 200
        assert b.post(f"/avatar/task/{override.json()['data']}/cancel").status_code == 200

        assert types(recv.wait("/pika", 1), secret) == ["task.canceled"]
        assert recv.at("/pika")[0].verify(secret)["data"]["view"]["id"] == pika_id
        canceled = recv.wait("/uv", 1)[0].verify(secret)["data"]
        assert canceled["public_id"] == sora_id and canceled["error"]["code"] == "canceled"
        assert canceled["view"]["status"] == "failed"  # the dialect's own word for it
        assert types(recv.wait("/o", 1), secret) == ["task.canceled"]  # the header beats the default
        # The fan-out batch: the parent's events only; its view embeds the children.
        batch_hits = recv.wait("/fs", 2)
        assert types(batch_hits, secret) == ["task.running", "task.succeeded"]
        done = batch_hits[1].verify(secret)["data"]
        assert done["public_id"] == batch.json()["data"]["promptId"]
        assert len(done["view"]["data"]["taskList"]) == 2
        # No URL on the task: the key's default gets it.
        failed = wait_until(
            lambda: [h.verify(secret) for h in recv.at("/default")],
            lambda p: bool(p) and p[-1]["type"] == "task.failed",
            30,
            0.1,
        )
        assert {p["data"]["public_id"] for p in failed} == {failing.json()["data"]}
        assert failed[-1]["data"]["status"] == "failed" and failed[-1]["data"]["error"]["code"]
        time.sleep(0.3)
        assert len(recv.at("/fs")) == 2 and len(recv.at("/pika")) == 1 and len(recv.at("/o")) == 1


def test_the_header_works_on_the_openai_and_native_endpoints(a: httpx.Client, recv: Receiver) -> None:
    secret = secret_of(a)
    video = a.post(
        "/v1/videos", json={"prompt": "a lighthouse"}, headers={**HOLD, "X-Webhook-Url": recv.url("/oa")}
    )
    assert video.status_code == 200, video.text
    assert a.post(f"/v1/videos/{video.json()['id']}/cancel").status_code == 200
    native = a.post(
        "/v1/tasks",
        json={"model": "sora-2", "operation": "text_to_video", "prompt": "p"},
        headers={**HOLD, "X-Webhook-Url": recv.url("/native")},
    )
    assert native.status_code == 200, native.text
    assert a.post(f"/v1/tasks/{native.json()['id']}/cancel").status_code == 200
    oa = recv.wait("/oa", 1)[0].verify(secret)["data"]
    assert oa["public_id"] == video.json()["id"] and oa["view"]["object"] == "video"
    assert oa["view"]["status"] == "failed" and oa["view"]["error"]["code"] == "canceled"
    nat = recv.wait("/native", 1)[0].verify(secret)
    assert nat["type"] == "task.canceled" and nat["data"]["task_id"] == native.json()["id"]
    bad = a.post("/v1/videos", json={"prompt": "p"}, headers={"X-Webhook-Url": "http://10.0.0.1/"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Webhook-Url"


def test_redelivery_after_500_keeps_the_event_id_and_body(a: httpx.Client, recv: Receiver) -> None:
    secret = secret_of(a)
    recv.plan["/r500"] = [500, 500]
    task_id = held_and_canceled(a, recv.url("/r500"))
    hits = recv.wait("/r500", 3)
    assert len({h.headers["webhook-id"] for h in hits}) == 1  # one event, delivered at least once
    assert len({h.body for h in hits}) == 1
    assert [h.verify(secret)["type"] for h in hits] == ["task.canceled"] * 3
    assert hits[1].at - hits[0].at >= 0.4 and hits[2].at - hits[1].at >= 0.85  # 0.5 s, then 1 s (±10 %)
    log = only_delivery(a, task_id)
    assert [(t["attempt"], t["http_status"], t["response"]) for t in log["attempts"]] == [
        (1, 500, "fail"),
        (2, 500, "fail"),
        (3, 200, "ok"),
    ]
    assert log["id"] == hits[0].headers["webhook-id"] and log["next_attempt_at"] is None
    assert log["delivered_at"] == log["attempts"][-1]["at"]


def test_redelivery_after_the_receiver_was_down(a: httpx.Client) -> None:
    secret = secret_of(a)
    late = Receiver()  # not listening yet: connections are refused
    task_id = held_and_canceled(a, late.url("/late"))
    first = wait_until(
        lambda: deliveries(a, task_id=task_id), lambda d: bool(d) and d[0]["attempt_count"] >= 1, 30, 0.05
    )
    assert first[0]["status"] == "pending" and first[0]["next_attempt_at"] is not None
    late.start()
    try:
        hit = late.wait("/late", 1)[0]
        assert hit.verify(secret)["type"] == "task.canceled"
        log = only_delivery(a, task_id)
        failed, last = log["attempts"][0], log["attempts"][-1]
        assert failed["http_status"] is None and "Connect" in failed["error"]
        assert last["http_status"] == 200 and hit.headers["webhook-id"] == log["id"]
    finally:
        late.stop()


def test_gives_up_after_the_schedule_then_redelivers_on_request(a: httpx.Client, recv: Receiver) -> None:
    recv.plan["/never"] = [500] * 4
    task_id = held_and_canceled(a, recv.url("/never"))
    log = only_delivery(a, task_id, done="failed")
    assert [t["http_status"] for t in log["attempts"]] == [500, 500, 500, 500]  # 1 + 3 retries
    assert log["next_attempt_at"] is None and log["delivered_at"] is None
    time.sleep(1.0)
    assert len(recv.at("/never")) == 4  # nothing more once failed
    r = a.post(f"/v1/webhooks/deliveries/{log['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] in ("pending", "delivered"), r.text
    again = only_delivery(a, task_id)
    assert again["attempt_count"] == 5 and again["attempts"][-1]["http_status"] == 200
    assert {h.headers["webhook-id"] for h in recv.at("/never")} == {log["id"]}


def test_the_delivery_log_is_private_and_pages(wh: Server, a: httpx.Client, recv: Receiver) -> None:
    task_id = held_and_canceled(a, recv.url("/private"))
    mine = only_delivery(a, task_id)
    with wh.client(wh.new_key("c")) as c:
        assert deliveries(c) == []
        foreign = c.get(f"/v1/webhooks/deliveries/{mine['id']}")
        missing = c.get("/v1/webhooks/deliveries/msg_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
        assert foreign.json()["error"]["type"] == "not_found_error"
        assert c.post(f"/v1/webhooks/deliveries/{mine['id']}/retry").json() == missing.json()
        assert deliveries(c, task_id=task_id) == []
    with wh.client(wh.admin_key) as admin:
        assert [d["id"] for d in deliveries(admin, task_id=task_id)] == [mine["id"]]
    assert a.get(f"/v1/webhooks/deliveries/{mine['id']}").json() == mine
    page = a.get("/v1/webhooks/deliveries", params={"limit": 1}).json()
    assert page["object"] == "list" and len(page["data"]) == 1 and page["has_more"] is True
    after = a.get("/v1/webhooks/deliveries", params={"limit": 1, "after": page["last_id"]}).json()
    assert after["data"][0]["id"] != page["data"][0]["id"]
    assert all(d["status"] == "failed" for d in deliveries(a, status="failed"))
    bad = a.get("/v1/webhooks/deliveries", params={"status": "bogus"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    anon = httpx.get(f"{wh.base_url}/v1/webhooks/deliveries")
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "authentication_error"


def test_default_url_and_secret_through_the_api_and_the_cli(wh: Server, recv: Receiver) -> None:
    key = wh.new_key("d")
    with wh.client(key) as d:
        first = secret_of(d)
        r = d.put("/v1/webhook", json={"url": recv.url("/d")})
        assert r.status_code == 200 and r.json() == {
            "object": "webhook_endpoint",
            "url": recv.url("/d"),
            "secret": first,
        }
        rotated = d.put("/v1/webhook", json={"rotate_secret": True}).json()
        assert rotated["url"] == recv.url("/d") and rotated["secret"] != first
        for body, param in (
            ({"url": "http://10.0.0.1/x"}, "url"),
            ({"url": "http://[::1]:8000/"}, "url"),
            ({"url": "ftp://example.com/"}, "url"),
            ({"url": 5}, "url"),
            ({"bogus": True}, "bogus"),
        ):
            bad = d.put("/v1/webhook", json=body)
            assert bad.status_code == 400, (body, bad.text)
            error = bad.json()["error"]
            assert error["type"] == "invalid_request_error" and param in (error["param"] or ""), error
        assert secret_of(d) == rotated["secret"]  # refused changes changed nothing
        cleared = d.delete("/v1/webhook").json()
        assert cleared["url"] is None and cleared["secret"] == rotated["secret"]
        out = wh.cli("keys", "webhook", key[:9], "--url", recv.url("/cli"), "--rotate")
        assert out.returncode == 0, out.stderr
        latest = out.stdout.strip()
        assert latest.startswith("whsec_") and latest != rotated["secret"]
        assert d.get("/v1/webhook").json() == {
            "object": "webhook_endpoint",
            "url": recv.url("/cli"),
            "secret": latest,
        }
        refused = wh.cli("keys", "webhook", key[:9], "--url", "http://169.254.169.254/")
        assert refused.returncode == 2 and "metadata" in refused.stderr
        # Deliveries are signed with the key's current secret, default URL or not.
        r = d.post("/avatar/generation", json=AVATAR, headers=HOLD)
        assert d.post(f"/avatar/task/{r.json()['data']}/cancel").status_code == 200
        hit = recv.wait("/cli", 1)[0]
        assert hit.verify(latest)["type"] == "task.canceled"
        with pytest.raises(WebhookVerificationError):
            hit.verify(rotated["secret"])
        assert wh.cli("keys", "webhook", key[:9], "--clear").returncode == 0
        assert d.get("/v1/webhook").json()["url"] is None


# -- the address guard, on a gateway with no allowlist -----------------------------------------------------

REFUSED = [
    "http://127.0.0.1:9/hook",  # loopback
    "http://10.1.2.3/hook",  # private
    "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",  # link-local cloud metadata
    "http://[fd00:ec2::254]/",  # the same over IPv6
    "http://[::ffff:127.0.0.1]:9/",  # IPv4-mapped IPv6
    "http://[::1]/",
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "ftp://example.com/hook",
    "not a url",
]


def test_literal_private_destinations_are_refused_at_submit(server: Server, api: httpx.Client) -> None:
    before = server.task_count()
    for url in REFUSED:
        r = api.post("/avatar/generation", json=AVATAR, headers={"X-Webhook-Url": url})
        assert r.status_code == 400 and r.json()["code"] == "invalid_request", (url, r.text)
        assert "X-Webhook-Url" in r.json()["message"]
        r = api.post("/pika/generate", json={**PIKA_SEED, "callbackUrl": url})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (url, r.text)
        assert "callbackUrl" in r.json()["error"]["message"]
        r = api.post("/v1/video/create", json={**SORA, "callback_url": url})
        assert r.status_code == 400 and "callback_url" in r.json()["error"]["message"], (url, r.text)
        r = api.post("/avatar/generation", json={**AVATAR, "callback_url": url})
        assert r.status_code == 400 and "callback_url" in r.json()["message"], (url, r.text)
        r = api.post("/createTask", json={**FACESWAP_VIDEOS, "callbackUrl": url})
        assert r.status_code == 200 and r.json()["code"] == 800, (url, r.text)  # that dialect's envelope
    both = api.post(
        "/avatar/generation",
        json={**AVATAR, "callback_url": "https://a.example.com/"},
        headers={"X-Webhook-Url": "https://b.example.com/"},
    )
    assert both.status_code == 400 and "disagree" in both.json()["message"]
    assert server.task_count() == before  # nothing stored


def test_a_name_resolving_to_loopback_is_refused_at_delivery(server: Server, api: httpx.Client) -> None:
    receiver = Receiver().start()
    try:
        task_id = held_and_canceled(api, f"http://localhost:{receiver.port}/sneaky")
        log = only_delivery(api, task_id, done="failed")
        assert log["attempt_count"] == 1  # refused destinations are not retried
        error = log["attempts"][0]["error"]
        assert "localhost" in error and "loopback" in error and log["attempts"][0]["http_status"] is None
        time.sleep(0.3)
        assert receiver.hits == []
    finally:
        receiver.stop()


def test_the_webhook_docs_exist() -> None:
    docs = Path(__file__).parent.parent.parent / "docs" / "webhooks.md"
    text = docs.read_text()
    for needed in ("X-Webhook-Url", "callbackUrl", "callback_url", "webhook-signature", "allowed_hosts"):
        assert needed in text
