"""The admin pages over plain HTTP: what they show, their filters and live partials, and every action
they take (retry, cancel, keys and money, channel edits, webhook redelivery) checked in the database."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from html import unescape

import pytest
from webui import CHANNEL_B, TEXT_TO_VIDEO, Admin, submit, task

from conftest import Server, start_server, wait_until
from mediarelay.web.charts import nice_max
from mediarelay.web.dashboard import percentile
from mediarelay.web.session import CSRF_FIELD


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("web-pages"),
        MEDIARELAY_CHANNELS=json.dumps([CHANNEL_B]),
        MEDIARELAY_WEBHOOKS__ALLOW_PRIVATE="true",
        MEDIARELAY_WEBHOOKS__RETRY_SCHEDULE="[0.2]",
        MEDIARELAY_WEBHOOKS__TIMEOUT_SECONDS="2",
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(srv: Server) -> Iterator[Admin]:
    a = Admin(srv, srv.admin_key)
    yield a
    a.close()


@pytest.fixture(scope="module")
def finished(srv: Server) -> dict[str, dict[str, object]]:
    """Three finished tasks: one succeeded on the sandbox, one failed, one on sandbox-b."""
    key = srv.admin_key
    ok = submit(srv, key)
    bad = submit(srv, key, {**TEXT_TO_VIDEO, "prompt": "will <script>alert(1)</script> fail"}, **{"X-Sandbox-Fail": "boom"})
    on_b = submit(srv, key, {**TEXT_TO_VIDEO, "model": "b-model"})
    done = {}
    for name, t in (("ok", ok), ("bad", bad), ("b", on_b)):
        done[name] = wait_until(
            lambda t=t: task(srv, key, t["id"]), lambda v: v["status"] in ("succeeded", "failed"), timeout=60
        )
    assert [done[n]["status"] for n in ("ok", "bad", "b")] == ["succeeded", "failed", "succeeded"]
    assert done["b"]["channel"] == "sandbox-b" and done["ok"]["channel"] == "sandbox"
    return done


def ids_in(html: str) -> set[str]:
    return set(re.findall(r'href="/admin/tasks/([0-9A-Z]{26})"', html))


def test_task_list_filters(admin: Admin, finished: dict[str, dict[str, object]], srv: Server) -> None:
    ok, bad, b = (str(finished[n]["id"]) for n in ("ok", "bad", "b"))
    everything = admin.get("/admin/tasks").text
    assert {ok, bad, b} <= ids_in(everything)
    assert ids_in(admin.get("/admin/tasks?status=failed").text) == {bad}
    assert ids_in(admin.get("/admin/tasks?status=failed&status=succeeded").text) >= {ok, bad, b}
    assert ids_in(admin.get("/admin/tasks?channel=sandbox-b").text) == {b}
    assert ids_in(admin.get("/admin/tasks?model=b-model").text) == {b}
    assert ids_in(admin.get("/admin/tasks?dialect=pika").text) == set()
    key_id = srv.rows(f"select key_id from tasks where id = '{ok}'")[0][0]
    assert {ok, bad, b} <= ids_in(admin.get(f"/admin/tasks?key={key_id}").text)
    assert ids_in(admin.get("/admin/tasks?from=2999-01-01T00:00").text) == set()
    assert ids_in(admin.get("/admin/tasks?to=2000-01-01T00:00").text) == set()
    r = admin.get("/admin/tasks?from=yesterday")
    assert "is not a date and time" in r.text and ok in ids_in(r.text)


def test_id_search(admin: Admin, finished: dict[str, dict[str, object]]) -> None:
    t = finished["ok"]
    for ident in (t["id"], t["public_id"], str(t["id"]).lower()):
        r = admin.get("/admin/tasks", params={"q": ident})
        assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{t['id']}"
    r = admin.get("/admin/tasks", params={"q": "no-such-task"})
    assert r.status_code == 200 and "No task has the id" in r.text


def test_live_list_skips_unchanged_rows(admin: Admin, finished: dict[str, dict[str, object]]) -> None:
    page = admin.get("/admin/tasks?status=failed").text
    poll = re.search(r'hx-get="(/admin/tasks/rows\?[^"]+)"', page)
    assert poll, page
    url = poll.group(1).replace("&amp;", "&")
    assert admin.get(url, headers={"HX-Request": "true"}).status_code == 204
    fresh = admin.get(re.sub(r"sig=\w+", "sig=old", url), headers={"HX-Request": "true"})
    assert fresh.status_code == 200 and fresh.text.lstrip().startswith("<tbody")
    assert ids_in(fresh.text) == {str(finished["bad"]["id"])}
    # An older page is not live.
    assert "hx-get" not in admin.get("/admin/tasks?before=1").text.split("<tbody", 1)[1].split(">", 1)[0]


def test_task_page(admin: Admin, finished: dict[str, dict[str, object]]) -> None:
    t = finished["ok"]
    html = admin.get(f"/admin/tasks/{t['public_id']}").text  # by public id too
    assert f'<video controls preload="metadata" playsinline src="/files/{t["id"]}/' in html
    assert 'poster="/files/' in html
    for part in ("Timeline", "Raw upstream payload", "Inputs", "a lighthouse at dusk", "class=\"t-running\"", "class=\"t-succeeded\""):
        assert part in html, part
    assert 'hx-trigger="every 1s"' not in html  # finished: not polling
    assert "Cancel task" not in html and "Retry as new task" not in html


def test_task_page_escapes_what_clients_sent(admin: Admin, finished: dict[str, dict[str, object]]) -> None:
    html = admin.get(f"/admin/tasks/{finished['bad']['id']}").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "boom" in html and "Retry as new task" in html


def test_live_task_partial(admin: Admin, srv: Server) -> None:
    t = submit(srv, srv.admin_key, **{"X-Sandbox-Duration": "60"})
    html = admin.get(f"/admin/tasks/{t['id']}").text
    poll = re.search(r'hx-get="(/admin/tasks/\w+/live\?v=[^"]+)" hx-trigger="every 1s"', html)
    assert poll, html
    url = unescape(poll.group(1))
    assert 'role="status" aria-live="polite"' in html  # the live region that stays on the page
    wait_until(lambda: task(srv, srv.admin_key, t["id"]), lambda v: v["status"] == "running")
    changed = admin.get(url)  # the version moved on: new content, with the new version to poll with
    assert changed.status_code == 200 and "running" in changed.text
    assert '<span id="task-announcer" hx-swap-oob="innerHTML">Task running.</span>' in changed.text
    newer = re.search(r'hx-get="(/admin/tasks/\w+/live\?v=[^"]+)"', changed.text)
    assert newer and unescape(newer.group(1)) != url
    newer_url = unescape(newer.group(1))
    same = admin.get(newer_url)
    assert same.status_code in (200, 204)  # 204 unless it progressed in between
    assert "task-announcer" not in same.text  # progress alone is not announced
    # Cancel from the page.
    r = admin.post(f"/admin/tasks/{t['id']}/cancel")
    assert r.status_code == 303
    assert task(srv, srv.admin_key, t["id"])["status"] == "canceled"
    final = admin.get(newer_url)
    assert final.status_code == 200 and "Task canceled." in final.text and "every 1s" not in final.text
    r = admin.post(f"/admin/tasks/{t['id']}/cancel")  # again: nothing to do, said so
    assert "already canceled" in admin.get(r.headers["location"]).text


def test_retry_makes_a_linked_task_for_the_same_key(admin: Admin, srv: Server, finished: dict[str, dict[str, object]]) -> None:
    old = finished["bad"]
    before = srv.task_count()
    r = admin.post(f"/admin/tasks/{old['id']}/retry")
    assert r.status_code == 303
    new_id = r.headers["location"].rsplit("/", 1)[1]
    assert new_id != old["id"] and srv.task_count() == before + 1
    row = srv.rows(f"select key_id, params, public_id, model from tasks where id = '{new_id}'")[0]
    params = json.loads(row[1])
    assert params["retry_of"] == old["id"] and params["sandbox"] == {"fail": "boom"}  # header controls kept
    assert row[0] == srv.rows(f"select key_id from tasks where id = '{old['id']}'")[0][0]
    assert row[2] != old["public_id"] and row[3] == old["model"]
    page = admin.get(f"/admin/tasks/{new_id}").text
    assert f"Retry of <a href=\"/admin/tasks/{old['id']}\"" in page and "Retried as a new task" in page
    assert new_id in admin.get(f"/admin/tasks/{old['id']}").text  # "Retried as: …"
    # A second click opens the first retry instead of making another task.
    again = admin.post(f"/admin/tasks/{old['id']}/retry")
    assert again.headers["location"] == f"/admin/tasks/{new_id}" and srv.task_count() == before + 1
    assert "already been retried" in admin.get(again.headers["location"]).text
    # A running task is not retried; a batch item is retried with its batch.
    running = submit(srv, srv.admin_key, **{"X-Sandbox-Duration": "60"})
    r = admin.post(f"/admin/tasks/{running['id']}/retry")
    assert "still running" in admin.get(r.headers["location"]).text
    admin.post(f"/admin/tasks/{running['id']}/cancel")


def test_unknown_things_are_404_pages(admin: Admin) -> None:
    for path in ("/admin/tasks/01ZZZZZZZZZZZZZZZZZZZZZZZZ", "/admin/keys/nope", "/admin/channels/nope/edit",
                 "/admin/no/such/page"):
        r = admin.get(path)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "Not found" in r.text
    r = admin.post("/admin/tasks/nope/cancel")
    assert r.status_code == 404


def test_create_key_shows_its_secret_once(admin: Admin, srv: Server) -> None:
    keys_before = srv.rows("select count(*) from api_keys")[0][0]
    r = admin.post("/admin/keys", {"name": "", "balance": "-3", "credit_limit": "-1", "rpm": "lots", "webhook_url": "ftp://x"})
    assert r.status_code == 400
    for says in ("Give the key a name", "Zero or a positive amount", "A whole number from 1", "webhook URL"):
        assert says in r.text, says
    assert 'aria-invalid="true"' in r.text
    assert srv.rows("select count(*) from api_keys")[0][0] == keys_before
    r = admin.post("/admin/keys", {"name": "reseller", "balance": "5", "daily_cap": "2.5", "rpm": "100"})
    assert r.status_code == 303
    page = admin.get(r.headers["location"]).text
    secret = re.search(r'id="new-secret" type="text" readonly value="(mr-[^"]+)"', page)
    assert secret, page
    assert "5.00" in page and "2.50" in page
    assert "new-secret" not in admin.get(r.headers["location"]).text  # once
    key_id = r.headers["location"].rsplit("/", 1)[1]
    credit, cap, rpm = srv.rows(f"select credit_limit, daily_cap, rpm from accounts where key_id = '{key_id}'")[0]
    assert (credit, cap, rpm) == (0, 2_500_000, 100)  # with a balance and no credit limit: prepaid
    with srv.client(secret.group(1)) as c:
        assert c.get("/v1/tasks").status_code == 200
    # Top up and limits.
    admin.post(f"/admin/keys/{key_id}/topup", {"amount": "2.5", "note": "thanks"})
    page = admin.get(f"/admin/keys/{key_id}").text
    assert "7.50" in page and "thanks" in page and "topup" in page
    bad = admin.post(f"/admin/keys/{key_id}/topup", {"amount": "0"})
    assert "Not topped up" in admin.get(bad.headers["location"]).text
    admin.post(f"/admin/keys/{key_id}/limits", {"credit_limit": "", "daily_cap": "", "max_concurrent": "3", "rpm": ""})
    assert srv.rows(f"select credit_limit, daily_cap, max_concurrent, rpm from accounts where key_id = '{key_id}'")[0] == (
        None, None, 3, None)
    # Revoke.
    r = admin.post(f"/admin/keys/{key_id}/revoke")
    assert "revoked" in admin.get(r.headers["location"]).text
    with srv.client(secret.group(1)) as c:
        assert c.get("/v1/tasks").status_code == 401  # at once on this node


def test_channel_edit(admin: Admin, srv: Server) -> None:
    form = admin.get("/admin/channels/sandbox-b/edit").text
    assert 'value="b-*"' in form and 'value="10"' in form
    r = admin.post("/admin/channels/sandbox-b/edit", {"models": " ", "operations": "*", "priority": "high",
                                                       "weight": "1", "max_concurrency": "0", "deadline_seconds": "60"})
    assert r.status_code == 400
    for says in ("Give at least one pattern", "A whole number from -1000000", "A whole number from 1"):
        assert says in r.text, says
    assert srv.rows("select count(*) from channels")[0][0] == 0
    r = admin.post("/admin/channels/sandbox-b/edit", {"models": "b-*, bb-*", "operations": "*", "priority": "20",
                                                       "weight": "2", "max_concurrency": "5", "deadline_seconds": "600",
                                                       "enabled": "on"})
    assert r.status_code == 303
    with srv.client(srv.admin_key) as c:
        ch = c.get("/v1/admin/channels/sandbox-b").json()
    assert ch["config"]["models"] == ["b-*", "bb-*"] and ch["config"]["priority"] == 20
    assert ch["config"]["max_concurrency"] == 5 and ch["enabled"] is True and ch["source"] == "admin"
    page = admin.get("/admin/channels").text
    assert "0 / 5" in page and "stored" in page


def test_dashboard(admin: Admin, finished: dict[str, dict[str, object]]) -> None:
    for rng in ("1h", "24h", "7d", "30d"):
        html = admin.get(f"/admin?range={rng}").text
        assert html.count('<svg class="chart"') == 5  # status, channel, success, duration, spend
        assert 'role="img"' in html and "<desc id=" in html and "Data table" in html
    html = admin.get("/admin?range=1h").text
    assert re.search(r"<th scope=\"col\" class=\"num\">sandbox-b</th>", html)
    assert "Success rate" in html and "p95" in html
    live = admin.get("/admin/dashboard/live?range=1h", headers={"HX-Request": "true"})
    assert live.status_code == 200 and "<html" not in live.text and "chart-status" in live.text
    sig = re.search(r"sig=(\w+)", live.text)
    assert sig
    # Nothing changed: nothing to swap (unless the minute turned in between).
    again = admin.get(f"/admin/dashboard/live?range=1h&sig={sig.group(1)}", headers={"HX-Request": "true"})
    assert again.status_code in (204, 200) and (again.status_code == 204 or "chart-status" in again.text)


def test_webhook_log_and_redelivery(admin: Admin, srv: Server) -> None:
    r = admin.post("/admin/keys", {"name": "hooked", "webhook_url": f"http://127.0.0.1:{closed_port()}/hook"})
    key_id = r.headers["location"].rsplit("/", 1)[1]
    secret = re.search(r'value="(mr-[^"]+)"', admin.get(r.headers["location"]).text)
    assert secret
    t = submit(srv, secret.group(1))
    wait_until(
        lambda: srv.rows(f"select state from webhook_events where task_id = '{t['id']}'"),
        lambda rows: len(rows) >= 2 and all(s == "failed" for (s,) in rows),
        timeout=60,
    )
    html = admin.get(f"/admin/webhooks?key={key_id}").text
    assert "task.succeeded" in html and "failed" in html and "Send again" in html
    event_id = re.search(r"(msg_[0-9A-Z]+)", html)
    assert event_id
    r = admin.post(f"/admin/webhooks/{event_id.group(1)}/retry", {"back": f"/admin/keys/{key_id}"})
    assert r.headers["location"] == f"/admin/keys/{key_id}"
    assert "Delivery queued again" in admin.get(r.headers["location"]).text
    # Key page: the default URL can be changed, and is checked like the API checks it.
    admin.post(f"/admin/keys/{key_id}/webhook", {"webhook_url": "http://169.254.169.254/latest"})
    assert srv.rows(f"select webhook_url from api_keys where id = '{key_id}'")[0][0].startswith("http://127.0.0.1")
    admin.post(f"/admin/keys/{key_id}/webhook", {"webhook_url": ""})
    assert srv.rows(f"select webhook_url from api_keys where id = '{key_id}'")[0][0] is None


def test_csrf_field_name_matches_the_forms(admin: Admin) -> None:
    assert f'name="{CSRF_FIELD}"' in admin.get("/admin/keys").text


def test_chart_helpers() -> None:
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 7, 11, 240, 1001)] == [1, 0.5, 1, 5, 10, 20, 250, 2000]
    assert percentile([], 0.5) is None
    assert percentile([5, 1, 3], 0.5) == 3 and percentile(list(range(1, 101)), 0.95) == 95
