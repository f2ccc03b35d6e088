"""Billing through a real server: 402/429 in every dialect's envelope, Idempotency-Key on every submit,
refunds on failure, cancel and deadline, settlement by the real output, the admin and account APIs."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import Server, start_server, wait_until

PER_TASK, PER_SECOND, PER_IMAGE, PER_SWAP = 100_000, 10_000, 60_000, 40_000
PRICES = [
    {"model": "*", "operation": "upscale", "per_image": PER_IMAGE},
    {"model": "*", "operation": "face_swap_video", "per_task": PER_SWAP},
    {"model": "*", "per_task": PER_TASK, "per_second": PER_SECOND},
]
PIKA = {
    "promptText": "a paper boat",
    "options": {
        "aspectRatio": 1.7777777777777777,
        "frameRate": 24,
        "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
        "extend": False,
    },
}
SORA = {"model": "sora-2", "prompt": "a lighthouse", "size": "small", "duration": 10}
# Every submit endpoint: (path, JSON body, how to read the task id from the answer).
SUBMITS: dict[str, tuple[str, dict[str, Any], Callable[[Any], str]]] = {
    "avatar": (
        "/avatar/generation",
        {"avatar_url": "https://example.com/f.png", "audio_url": "https://example.com/a.mp3"},
        lambda r: r["data"],
    ),
    "pika": ("/pika/generate", PIKA, lambda r: r["id"]),
    "unified": ("/v1/video/create", SORA, lambda r: r["id"]),
    "faceswap": (
        "/createTask",
        {"taskType": 6, "targetUrls": ["https://example.com/p.png"], "scale": 2},
        lambda r: r["data"]["promptId"],
    ),
    "openai": (
        "/v1/videos",
        {"model": "sora-2", "prompt": "a lighthouse", "seconds": "4"},
        lambda r: r["id"],
    ),
    "native": (
        "/v1/tasks",
        {"model": "sora-2", "operation": "text_to_video", "prompt": "a lighthouse", "seconds": 3},
        lambda r: r["id"],
    ),
}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def assert_error(dialect: str, r: httpx.Response, status: int, kind: str) -> None:
    """The dialect's own envelope for a billing error (docs/dialects.md, Errors)."""
    body = r.json()
    if dialect == "faceswap":
        assert (r.status_code, body["code"], body["data"]) == (status, status, None), r.text
        assert body["msg"]
    elif dialect == "avatar":
        assert r.status_code == status and body["code"] == kind and body["data"] is None, r.text
        assert body["message"]
    else:
        assert r.status_code == status and body["error"]["code"] == kind, r.text
        assert body["error"]["message"] and body["error"]["type"]
        assert ("param" in body["error"]) == (dialect in ("openai", "native"))


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("billing"),
        MEDIARELAY_PRICES=json.dumps(PRICES),
        MEDIARELAY_BILLING__CURRENCY="EUR",
    )
    yield srv
    srv.stop()


def new_key(server: Server, *options: str) -> str:
    out = server.cli("keys", "create", "--name", "billing", *options)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def account(server: Server, key: str) -> dict[str, Any]:
    with server.client(key) as c:
        got: dict[str, Any] = c.get("/v1/account").json()
    return got


def ledger_rows(server: Server, key_id: str) -> list[tuple[Any, ...]]:
    return server.rows(f"select kind, amount, task_id from ledger where key_id='{key_id}' order by id")


def task_rows(server: Server, key_id: str) -> int:
    return int(server.rows(f"select count(*) from tasks where key_id='{key_id}'")[0][0])


# -- errors in every dialect --------------------------------------------------------------------------


def test_insufficient_balance_is_402_in_every_dialect_and_changes_nothing(paid: Server) -> None:
    key = new_key(paid, "--balance", "0.05")  # less than any task here costs
    me = account(paid, key)
    assert (me["balance"], me["credit_limit"], me["currency"]) == (50_000, 0, "EUR")
    with paid.client(key) as api:
        for dialect, (path, body, _) in SUBMITS.items():
            r = api.post(path, json=body)
            assert_error(dialect, r, 402, "insufficient_quota")
            assert "insufficient balance" in r.text
        r = api.post(
            "/v1/videos",
            data={"prompt": "x", "model": "sora-2"},
            files={"input_reference": ("a.png", png(), "image/png")},
        )
        assert_error("openai", r, 402, "insufficient_quota")
    assert task_rows(paid, me["id"]) == 0
    assert [k for k, _, _ in ledger_rows(paid, me["id"])] == ["topup"]  # only the opening balance
    assert list(paid.data_dir.glob("files/inputs-*")) == []  # the upload was not kept either
    assert account(paid, key)["balance"] == 50_000


def test_rate_limit_is_429_with_retry_after_in_every_dialect(paid: Server) -> None:
    for dialect, (path, body, _) in SUBMITS.items():
        key = new_key(paid, "--rpm", "1")  # one submit a minute
        with paid.client(key) as api:
            first = api.post(path, json=body, headers={"X-Sandbox-Queue": "30"})
            assert first.status_code == 200, first.text
            second = api.post(path, json=body)
            assert_error(dialect, second, 429, "rate_limited")
            assert 1 <= int(second.headers["retry-after"]) <= 60
            assert api.get("/v1/account").json()["rpm"] == 1  # status and account calls are not limited


def test_concurrency_and_daily_caps_are_429_with_retry_after(paid: Server) -> None:
    key = new_key(paid, "--max-concurrent", "2")
    with paid.client(key) as api:
        held = [api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Queue": "60"}) for _ in range(2)]
        assert all(r.status_code == 200 for r in held)
        over = api.post("/v1/video/create", json=SORA)
        assert_error("unified", over, 429, "rate_limited")
        assert "active tasks" in over.json()["error"]["message"] and over.headers["retry-after"]
        api.post(f"/v1/video/cancel?id={held[0].json()['id']}")
        assert api.post("/v1/video/create", json=SORA).status_code == 200  # a slot came free

    key = new_key(paid, "--daily-cap", "0.5")  # two sora tasks (0.2 each) fit, a third does not
    with paid.client(key) as api:
        assert [api.post("/v1/video/create", json=SORA).status_code for _ in range(2)] == [200, 200]
        over = api.post(
            "/createTask",
            json={"taskType": 7, "faceUrl": "https://e.x/f.png", "targetUrls": ["https://e.x/1.mp4"] * 3},
        )
        assert_error("faceswap", over, 429, "rate_limited")  # a batch of 3 counts 3 children
        assert 0 < int(over.headers["retry-after"]) <= 86_400  # until midnight UTC
        assert account(paid, key)["spent_today"] == 400_000


def test_the_sandbox_stays_free_without_prices(server: Server) -> None:
    key = server.new_key("prepaid-zero")
    out = server.cli("keys", "limits", key[:9], "--credit-limit", "0")  # no credit at all
    assert out.returncode == 0, out.stderr
    with server.client(key) as api:
        assert api.post("/v1/video/create", json=SORA).status_code == 200
        me = api.get("/v1/account").json()
    assert (me["balance"], me["used"], me["credit_limit"]) == (0, 0, 0)


# -- idempotency ------------------------------------------------------------------------------------


def test_idempotent_submits_return_the_original_task_and_charge_once(paid: Server) -> None:
    key = new_key(paid, "--balance", "10")
    me = account(paid, key)
    with paid.client(key) as api:
        for dialect, (path, body, id_of) in SUBMITS.items():
            headers = {"Idempotency-Key": f"order-{dialect}", "X-Sandbox-Queue": "30"}
            first = api.post(path, json=body, headers=headers)
            again = api.post(
                path,
                content=json.dumps(body, indent=2).encode(),
                headers={**headers, "Content-Type": "application/json"},
            )
            assert first.status_code == again.status_code == 200, again.text
            assert id_of(again.json()) == id_of(first.json())
            assert (
                again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
            )
            # Same key, another request (a header that changes what the task does counts too).
            other = api.post(path, json=body, headers={**headers, "X-Sandbox-Queue": "31"})
            if dialect == "faceswap":  # its documented envelope: HTTP 200, parameter error 800
                assert (other.status_code, other.json()["code"]) == (200, 800)
            else:  # avatar has no conflict word: invalid_request (docs/dialects.md)
                assert_error(dialect, other, 409, "invalid_request" if dialect == "avatar" else "conflict")
            assert "different request" in other.text
        other_body = api.post(
            "/v1/video/create", json={**SORA, "prompt": "x"}, headers={"Idempotency-Key": "order-unified"}
        )
        assert other_body.status_code == 409 and "different request" in other_body.json()["error"]["message"]
        # The same key on another endpoint is another request too.
        assert (
            api.post("/pika/generate", json=PIKA, headers={"Idempotency-Key": "order-unified"}).status_code
            == 409
        )
        bad = api.post("/v1/video/create", json=SORA, headers={"Idempotency-Key": "x" * 300})
        assert_error("unified", bad, 400, "invalid_request")
    assert task_rows(paid, me["id"]) == len(SUBMITS)
    charges = [k for k, _, _ in ledger_rows(paid, me["id"]) if k == "charge"]
    assert len(charges) == len(SUBMITS)


def test_idempotent_uploads_remixes_and_racing_retries(paid: Server) -> None:
    key = new_key(paid, "--balance", "10")
    me = account(paid, key)
    with paid.client(key) as api:
        form = {"prompt": "from a frame", "model": "sora-2"}
        h = {"Idempotency-Key": "upload-1"}
        uploads = len(list(paid.data_dir.glob("files/inputs-*")))
        first = api.post(
            "/v1/videos", data=form, files={"input_reference": ("a.png", png(), "image/png")}, headers=h
        )
        again = api.post(
            "/v1/videos", data=form, files={"input_reference": ("a.png", png(), "image/png")}, headers=h
        )
        assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
        other = png()[:-12] + b"\x00" * 12  # another file under the same key
        clash = api.post(
            "/v1/videos", data=form, files={"input_reference": ("a.png", other, "image/png")}, headers=h
        )
        assert clash.status_code == 409, clash.text
        assert len(list(paid.data_dir.glob("files/inputs-*"))) == uploads + 1  # replays stored no upload

        video = first.json()["id"]
        wait_until(lambda: api.get(f"/v1/videos/{video}").json()["status"], lambda s: s == "completed")
        remix_h = {"Idempotency-Key": "remix-1", "X-Sandbox-Queue": "30"}
        url = f"/v1/videos/{video}/remix"
        r1, r2 = (api.post(url, json={"prompt": "again"}, headers=remix_h) for _ in range(2))
        assert r1.status_code == 200 and r1.json()["id"] == r2.json()["id"]

    # Five clients retry one submit at the same moment: one task, one charge.
    results: list[httpx.Response] = []
    barrier = threading.Barrier(5)

    def go() -> None:
        with paid.client(key) as c:
            barrier.wait()
            results.append(
                c.post(
                    "/v1/video/create",
                    json=SORA,
                    headers={"Idempotency-Key": "race", "X-Sandbox-Queue": "30"},
                )
            )

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in results} == {200} and len({r.json()["id"] for r in results}) == 1
    assert (
        task_rows(paid, me["id"]) == 3 and sum(k == "charge" for k, _, _ in ledger_rows(paid, me["id"])) == 3
    )


# -- refunds and settlement -------------------------------------------------------------------------


def estimate(seconds: float) -> int:
    return PER_TASK + PER_SECOND * math.ceil(seconds)


def test_failed_and_canceled_tasks_are_refunded_and_used_goes_back(paid: Server) -> None:
    key = new_key(paid, "--balance", "1")
    me = account(paid, key)
    with paid.client(key) as api:
        failing = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Fail": "boom"}).json()["id"]
        waiting = api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Queue": "60"}).json()["id"]
        mid = api.get("/v1/account").json()
        assert mid["balance"] == 1_000_000 - estimate(10) - estimate(5) and mid["active_tasks"] == 2
        canceled = api.post(f"/pika/feed/{waiting}/cancel").json()
        assert canceled["videos"][0]["error"] == "canceled"
        assert api.get("/v1/account").json()["balance"] == 1_000_000 - estimate(10)  # refunded at once
        wait_until(lambda: api.get(f"/v1/video/query?id={failing}").json()["status"], lambda s: s == "failed")
        after = api.get("/v1/account").json()
    assert (after["balance"], after["used"], after["active_tasks"], after["spent_today"]) == (
        1_000_000,
        0,
        0,
        0,
    )
    kinds = [(k, a) for k, a, _ in ledger_rows(paid, me["id"])]
    assert sorted(kinds[1:]) == sorted(
        [
            ("charge", -estimate(10)),
            ("charge", -estimate(5)),
            ("refund", estimate(10)),
            ("refund", estimate(5)),
        ]
    )
    with paid.client(key) as api:
        usage = api.get("/v1/account/usage", params={"group_by": "model"}).json()
    assert {r["group"]: (r["tasks"], r["refunded_tasks"], r["spend"]) for r in usage["data"]} == {
        "sora-2": (1, 1, 0),
        "pika-1.5": (1, 1, 0),
    }
    assert usage["total"]["charged"] == usage["total"]["refunded"] == estimate(10) + estimate(5)


def test_deadline_failures_are_refunded(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path, MEDIARELAY_PRICES=json.dumps(PRICES), MEDIARELAY_SANDBOX__DEADLINE_SECONDS="1"
    )
    try:
        key = new_key(srv, "--balance", "1")
        with srv.client(key) as api:
            task = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Queue": "30"}).json()["id"]
            assert api.get("/v1/account").json()["balance"] == 1_000_000 - estimate(10)
            state = wait_until(
                lambda: api.get(f"/v1/video/query?id={task}").json(),
                lambda s: s["status"] == "failed",
                timeout=30,
            )
            assert "deadline" in state["detail"]["pending_info"]["failure_reason"]
            me = api.get("/v1/account").json()
        assert (me["balance"], me["used"]) == (1_000_000, 0)
        assert [k for k, _, _ in ledger_rows(srv, me["id"])] == ["topup", "charge", "refund"]
    finally:
        srv.stop()


def test_settlement_charges_the_real_output_never_more_than_the_estimate(paid: Server) -> None:
    key = new_key(paid, "--balance", "5")
    me = account(paid, key)
    with paid.client(key) as api:
        short = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Output-Seconds": "4"}).json()[
            "id"
        ]
        long = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Output-Seconds": "12"}).json()[
            "id"
        ]
        batch = api.post(
            "/createTask",
            json={
                "taskType": 7,
                "faceUrl": "https://e.x/f.png",
                "targetUrls": ["https://e.x/1.mp4", "https://e.x/2.mp4?sandbox-fail"],
            },
        ).json()["data"]["promptId"]
        for url, done in [
            (f"/v1/video/query?id={short}", lambda s: s["status"] == "completed"),
            (f"/v1/video/query?id={long}", lambda s: s["status"] == "completed"),
            (
                f"/getTaskInfo?promptId={batch}",
                lambda s: (
                    s["data"]["state"] == 2 and all(t["state"] in (2, 30) for t in s["data"]["taskList"])
                ),
            ),
        ]:
            wait_until(lambda u=url: api.get(u).json(), done, timeout=60)
        me = api.get("/v1/account").json()
    short_id = paid.rows(f"select id from tasks where public_id='{short}'")[0][0]
    (duration,) = paid.rows(f"select duration from assets where task_id='{short_id}' and role='video'")[0]
    real = PER_TASK + math.ceil(PER_SECOND * round(duration * 1000) / 1000)
    assert 3.5 < duration < 4.5 and real < estimate(10)
    charges = dict(paid.rows(f"select task_id, amount from task_charges where key_id='{me['id']}'"))
    assert charges[short_id] == real  # settled down to the real 4 s
    settle = paid.rows(f"select amount from ledger where task_id='{short_id}' and kind='settle'")
    assert settle == [(estimate(10) - real,)]
    long_id = paid.rows(f"select id from tasks where public_id='{long}'")[0][0]
    assert charges[long_id] == estimate(10)  # 12 s delivered, 10 s estimated: the estimate is the ceiling
    assert paid.rows(f"select count(*) from ledger where task_id='{long_id}' and kind='settle'") == [(0,)]
    # A batch is charged per child: the good child pays, the failed one is refunded, the parent owns nothing.
    kids = paid.rows(
        f"select t.status, c.state, c.amount from tasks t join task_charges c on c.task_id=t.id where t.parent_id is not null and t.key_id='{me['id']}' order by t.seq"
    )
    assert kids == [("succeeded", "settled", PER_SWAP), ("failed", "refunded", 0)]
    assert me["used"] == real + estimate(10) + PER_SWAP and me["balance"] == 5_000_000 - me["used"]


# -- admin and account APIs -------------------------------------------------------------------------


def test_admin_api_manages_keys_money_and_reports(paid: Server) -> None:
    user = new_key(paid)
    with paid.client(user) as api:
        denied = api.get("/v1/admin/keys")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        assert api.post("/v1/admin/keys", json={"name": "x"}).status_code == 403
    with paid.client(paid.admin_key) as op:
        made = op.post(
            "/v1/admin/keys", json={"name": "shop", "balance": 2_000_000, "rpm": 30, "max_concurrent": 4}
        )
        assert made.status_code == 201, made.text
        shop = made.json()
        assert shop["secret"].startswith("mr-") and (shop["balance"], shop["credit_limit"], shop["rpm"]) == (
            2_000_000,
            0,
            30,
        )
        assert op.post("/v1/admin/keys", json={"name": "x", "balance": -1}).status_code == 400
        assert op.post("/v1/admin/keys", json={"name": "x", "bogus": 1}).status_code == 400
        listed = {k["id"]: k for k in op.get("/v1/admin/keys").json()["data"]}
        assert listed[shop["id"]]["balance"] == 2_000_000 and "secret" not in listed[shop["id"]]
        assert op.get(f"/v1/admin/keys/{shop['prefix']}").json()["id"] == shop["id"]
        assert op.get("/v1/admin/keys/nope").status_code == 404

        patched = op.patch(
            f"/v1/admin/keys/{shop['id']}", json={"daily_cap": 900_000, "rpm": None, "name": "shop2"}
        ).json()
        assert (patched["daily_cap"], patched["rpm"], patched["name"], patched["max_concurrent"]) == (
            900_000,
            None,
            "shop2",
            4,
        )

        h = {"Idempotency-Key": "invoice-7"}
        top = op.post(
            f"/v1/admin/keys/{shop['id']}/topups", json={"amount": 500_000, "note": "invoice 7"}, headers=h
        )
        again = op.post(
            f"/v1/admin/keys/{shop['id']}/topups", json={"amount": 500_000, "note": "invoice 7"}, headers=h
        )
        assert top.status_code == again.status_code == 200 and top.json()["id"] == again.json()["id"]
        assert again.headers["idempotent-replayed"] == "true" and top.json()["balance_after"] == 2_500_000
        clash = op.post(f"/v1/admin/keys/{shop['id']}/topups", json={"amount": 1}, headers=h)
        assert clash.status_code == 409
        assert op.post(f"/v1/admin/keys/{shop['id']}/topups", json={"amount": 0}).status_code == 400
        assert (
            op.post(f"/v1/admin/keys/{shop['id']}/adjustments", json={"amount": -3_000_000}).status_code
            == 409
        )
        fix = op.post(
            f"/v1/admin/keys/{shop['id']}/adjustments", json={"amount": -100_000, "note": "goodwill reversal"}
        )
        assert fix.status_code == 200 and fix.json()["balance_after"] == 2_400_000

    with paid.client(shop["secret"]) as api:
        # 12 s delivered for 10 s asked: the estimate is charged, nothing settles.
        task = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Output-Seconds": "12"}).json()[
            "id"
        ]
        wait_until(lambda: api.get(f"/v1/video/query?id={task}").json()["status"], lambda s: s == "completed")
        mine = api.get("/v1/account").json()
        assert (
            mine["object"] == "account"
            and mine["used"] == estimate(10)
            and mine["balance"] == 2_400_000 - estimate(10)
        )
        page1 = api.get("/v1/account/ledger", params={"limit": 2}).json()
        page2 = api.get("/v1/account/ledger", params={"limit": 2, "after": page1["last_id"]}).json()
        kinds = [e["kind"] for e in page1["data"] + page2["data"]]
        assert kinds == ["charge", "adjust", "topup", "topup"] and page1["has_more"] and not page2["has_more"]
        assert page1["data"][0]["public_id"] == task and page1["data"][0]["amount"] == -estimate(10)
        assert api.get("/v1/account/usage", params={"from": "nonsense"}).status_code == 400

    with paid.client(paid.admin_key) as op:
        for group_by, group in [("model", "sora-2"), ("channel", "sandbox")]:
            report = op.get("/v1/admin/usage", params={"key_id": shop["id"], "group_by": group_by}).json()
            assert [(r["group"], r["tasks"], r["spend"]) for r in report["data"]] == [
                (group, 1, estimate(10))
            ]
        by_day = op.get(
            "/v1/admin/usage", params={"key_id": shop["prefix"], "group_by": "day", "from": "2000-01-01"}
        ).json()
        assert len(by_day["data"]) == 1 and by_day["data"][0]["group"].count("-") == 2
        assert (
            op.get("/v1/admin/usage", params={"key_id": shop["id"], "to": "2000-01-01"}).json()["data"] == []
        )
        everyone = op.get("/v1/admin/usage", params={"group_by": "key"}).json()
        assert shop["id"] in {r["group"] for r in everyone["data"]}
        ledger_page = op.get(f"/v1/admin/keys/{shop['id']}/ledger").json()
        assert [e["kind"] for e in ledger_page["data"]] == kinds
        revoked = op.delete(f"/v1/admin/keys/{shop['id']}").json()
        assert revoked["revoked_at"] and revoked["balance"] == mine["balance"]  # the money stays on the books
    with paid.client(shop["secret"]) as api:
        wait_until(lambda: api.get("/v1/account").status_code, lambda s: s == 401, timeout=10)


def test_the_price_table_is_managed_by_the_api_and_survives_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path, MEDIARELAY_PRICES=json.dumps(PRICES))
    try:
        key = new_key(srv, "--balance", "1")
        with srv.client(srv.admin_key) as op:
            base = op.get("/v1/admin/prices").json()
            assert base["source"] == "config" and base["prices"][2]["per_task"] == PER_TASK
            new = {"prices": [{"model": "sora-2*", "per_task": 250_000}], "default": {"per_task": 1}}
            put = op.put("/v1/admin/prices", json=new).json()
            assert (
                put["source"] == "api"
                and put["prices"][0]["per_task"] == 250_000
                and put["default"]["per_task"] == 1
            )
            assert (
                op.put("/v1/admin/prices", json={"prices": [{"model": "*", "per_task": -5}]}).status_code
                == 400
            )
        with srv.client(key) as api:
            assert (
                api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Queue": "60"}).status_code == 200
            )
            assert api.get("/v1/account").json()["balance"] == 750_000
        srv.stop()
        srv.start()
        with srv.client(srv.admin_key) as op:
            assert op.get("/v1/admin/prices").json()["source"] == "api"
            assert op.delete("/v1/admin/prices").json()["source"] == "config"
        with srv.client(key) as api:
            assert api.post("/pika/generate", json=PIKA, headers={"X-Sandbox-Queue": "60"}).status_code == 200
            assert api.get("/v1/account").json()["balance"] == 750_000 - estimate(5)
    finally:
        srv.stop()


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_creates_limited_keys_tops_up_and_prints_usage(paid: Server) -> None:
    out = paid.cli(
        "keys", "create", "--name", "cli-shop", "--balance", "1.5", "--rpm", "20", "--max-concurrent", "3"
    )
    assert out.returncode == 0 and out.stdout.count("\n") == 1 and out.stdout.startswith("mr-"), out.stderr
    key = out.stdout.strip()
    me = account(paid, key)
    assert (me["balance"], me["credit_limit"], me["rpm"], me["max_concurrent"]) == (1_500_000, 0, 20, 3)
    top = paid.cli("keys", "topup", key[:9], "2.25", "--note", "bank transfer", "--reference", "tx-1")
    assert top.returncode == 0 and top.stdout.strip() == "balance 3.750000", top.stderr
    again = paid.cli("keys", "topup", key[:9], "2.25", "--reference", "tx-1")
    assert again.returncode == 0 and again.stdout.strip() == "balance 3.750000" and "already" in again.stderr
    assert paid.cli("keys", "topup", key[:9], "-1").returncode == 2
    assert paid.cli("keys", "topup", "nobody", "1").returncode == 1
    assert paid.cli("keys", "adjust", key[:9], "-0.75").stdout.strip() == "balance 3.000000"
    limits = paid.cli("keys", "limits", key[:9], "--daily-cap", "2", "--rpm", "none")
    assert limits.returncode == 0 and "2.000000" in limits.stdout
    assert account(paid, key)["rpm"] is None
    with paid.client(key) as api:
        task = api.post("/v1/video/create", json=SORA, headers={"X-Sandbox-Output-Seconds": "12"}).json()[
            "id"
        ]
        wait_until(lambda: api.get(f"/v1/video/query?id={task}").json()["status"], lambda s: s == "completed")
    usage = paid.cli("usage", "--key", key[:9], "--by", "model")
    assert usage.returncode == 0 and "sora-2" in usage.stdout and "0.200000" in usage.stdout, usage.stdout
    assert "sandbox" in paid.cli("usage", "--key", key[:9], "--by", "channel").stdout
    assert paid.cli("usage", "--by", "week").returncode == 2
    listed = paid.cli("keys", "ledger", key[:9])
    assert listed.returncode == 0 and "bank transfer" in listed.stdout and "charge" in listed.stdout
    assert "2.800000" in paid.cli("keys", "account", key[:9]).stdout


def test_openapi_documents_idempotency_and_the_billing_endpoints(paid: Server) -> None:
    doc = httpx.get(f"{paid.base_url}/openapi.json").json()
    paths = doc["paths"]
    for path in [p for p, _, _ in SUBMITS.values()] + ["/v1/videos/{video_id}/remix"]:
        names = [p["name"] for p in paths[path]["post"].get("parameters", []) if p["in"] == "header"]
        assert names.count("Idempotency-Key") == 1, path
    for path, method in [
        ("/v1/account", "get"),
        ("/v1/account/usage", "get"),
        ("/v1/account/ledger", "get"),
        ("/v1/admin/keys", "post"),
        ("/v1/admin/keys/{key_id}", "patch"),
        ("/v1/admin/keys/{key_id}/topups", "post"),
        ("/v1/admin/keys/{key_id}/ledger", "get"),
        ("/v1/admin/usage", "get"),
        ("/v1/admin/prices", "put"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing"
