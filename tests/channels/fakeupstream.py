"""A fault-injecting upstream on 127.0.0.1 that speaks every relay dialect, for tests and benchmarks.

It serves what the four channel types talk to — avatar (`/avatar/generation`, `/avatar/task/{id}`), Pika
(`/pika/generate`, `/pika/feed/{id}`), unified video (`/v1/video/create`, `/v1/video/query`), OpenAI
videos (`/v1/videos`, `/v1/videos/{id}`, `…/content`) and mediarelay's native API (`/v1/tasks`, with
the `id` batch filter) — with the documented shapes, plus result files under `/files/`.

It is a raw HTTP/1.1 server (asyncio + h11, one request per connection) so that it can do what a real
server would not do on purpose: reset a connection before or after acting on a request, hang past the
client's timeout, cut a body short, send malformed JSON, stall a download, expire a result URL.

What happens to a task is chosen by a marker anywhere in its submit body: `mk-<scenario>-<n>`
(`SCENARIOS`). The fake counts creations per marker (a task created twice is a double submit), honours
`Idempotency-Key`, and checks that every request about a task carries the credential that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import orjson

MARKER = re.compile(rb"mk-([a-z0-9_]+)-(\d+)")
SCENARIOS = (
    "ok",
    "submit_500",
    "submit_429",
    "submit_reset_before",
    "submit_reset_after",
    "submit_timeout_after",
    "submit_malformed",
    "submit_400",
    "poll_flaky",
    "unknown_status",
    "upstream_fails",
    "stuck",
    "expired_once",
    "expired_forever",
    "slow_body",
    "truncated_body",
    "wrong_content",
)
POLL_FAULTS = ("500", "429", "reset", "hang", "malformed", "truncated")
HANG_SECONDS = 2.5  # longer than the clients' timeouts in the tests


class Reset(Exception):
    """Abort the connection with a TCP reset."""


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    # Faults applied while sending:
    hang: float = 0.0  # sleep this long first, then close without answering
    announce: int | None = None  # a Content-Length larger than the body: the body is cut short
    trickle: float = 0.0  # seconds between chunks of the body
    reset_after_act: bool = False  # act, then reset instead of answering


def jsonr(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status=status, body=orjson.dumps(data), headers=headers or [])


@dataclass
class FakeTask:
    id: str
    api: str  # avatar | pika | unified | openai | native
    marker: str
    scenario: str
    token: str
    created: float
    duration: float
    video: bool
    canceled: bool = False
    polls: int = 0
    fetches: int = 0
    file_gen: int = 0
    done_at: float | None = None  # when the upstream finished (for freshness measurements)
    seen_done_at: float | None = None  # the first poll that reported it finished


class FakeUpstream:
    def __init__(
        self,
        *,
        png: bytes,
        mp4: bytes,
        durations: tuple[float, float] = (0.3, 1.2),
        queue_seconds: float = 0.2,
        latency: float = 0.0,
        seed: int = 7,
        lognormal: tuple[float, float, float] | None = None,
        progress: bool = True,
    ) -> None:
        """`lognormal` = (median, p95, cap) seconds draws run times from a log-normal distribution (capped)
        instead of uniformly from `durations`; `progress=False` reports no progress while running (as
        vendors that only say "processing" do)."""
        self.files = {"png": png, "mp4": mp4}
        self.lognormal = lognormal
        self.progress = progress
        self.sha = {k: hashlib.sha256(v).hexdigest() for k, v in self.files.items()}
        self.durations = durations
        self.queue_seconds = queue_seconds
        self.latency = latency
        self.rng = random.Random(seed)
        self.tasks: dict[str, FakeTask] = {}
        self.by_idem: dict[tuple[str, str], str] = {}
        self.created: Counter[str] = Counter()  # marker -> tasks created
        self.attempts: Counter[str] = Counter()  # marker -> submit requests seen
        self.attempt_times: dict[str, list[float]] = defaultdict(list)
        self.requests: Counter[str] = Counter()  # task id -> requests about it (polls, files, cancels)
        self.poll_requests = 0
        self.batch_requests = 0
        self.http_requests = 0  # every request but /__stats
        self.wrong_credential: list[tuple[str, str]] = []
        self.tokens_used: Counter[str] = Counter()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.lock = threading.Lock()

    # -- running ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=2048)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        with contextlib.suppress(RuntimeError):
            loop.run_forever()

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)

    # -- HTTP -----------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and request is None:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body.extend(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if request is None:
                return
            if self.latency:
                await asyncio.sleep(self.latency)
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            try:
                reply = await self.handle(request.method.decode(), request.target.decode(), headers, bytes(body))
            except Reset:
                _reset(writer)
                return
            await self._send(conn, writer, reply)
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.hang:
            await asyncio.sleep(reply.hang)
            return
        if reply.reset_after_act:
            _reset(writer)
            return
        length = reply.announce if reply.announce is not None else len(reply.body)
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(length)),
            ("connection", "close"),
            *reply.headers,
        ]
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        step = max(1, len(reply.body) // 4) if reply.trickle else max(1, len(reply.body))
        for i in range(0, len(reply.body), step):
            writer.write(conn.send(h11.Data(data=reply.body[i : i + step])))
            await writer.drain()
            if reply.trickle:
                await asyncio.sleep(reply.trickle)
        if reply.announce is None:
            writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    # -- routing --------------------------------------------------------------------------------------

    async def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if path.startswith("/files/"):
            return self.file(path, token, via_api=False)
        if path == "/__stats":  # for a benchmark running the fake in another process
            return jsonr(self.stats())
        with self.lock:
            self.http_requests += 1
        if not token:
            return jsonr({"error": {"message": "missing key"}}, 401)
        if method == "POST" and path in ("/avatar/generation", "/pika/generate", "/v1/video/create", "/v1/videos", "/v1/tasks"):
            api = {"/avatar/generation": "avatar", "/pika/generate": "pika", "/v1/video/create": "unified",
                   "/v1/videos": "openai", "/v1/tasks": "native"}[path]
            return await self.submit(api, token, headers, body)
        if method == "GET" and path == "/v1/tasks" and "id" in query:
            return self.batch(query["id"], token)
        if method == "GET" and path == "/v1/video/query":
            return await self.poll("unified", (query.get("id") or [""])[0], token)
        if path.endswith("/cancel") and method == "POST":
            return self.cancel(path.rsplit("/", 2)[-2] if "?" not in target else (query.get("id") or [""])[0], token)
        if method == "DELETE" and path.startswith("/v1/videos/"):
            return self.cancel(path.rsplit("/", 1)[-1], token)
        for prefix, api in (("/avatar/task/", "avatar"), ("/pika/feed/", "pika"), ("/v1/tasks/", "native")):
            if method == "GET" and path.startswith(prefix):
                return await self.poll(api, path[len(prefix):], token)
        if method == "GET" and path.startswith("/v1/videos/"):
            rest = path[len("/v1/videos/"):]
            if rest.endswith("/content"):
                return self.file_of(rest.removesuffix("/content"), token)
            return await self.poll("openai", rest, token)
        return jsonr({"error": {"message": f"no route {method} {path}"}}, 404)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "tasks": {
                    t.marker: {"id": t.id, "created": t.created, "duration": t.duration, "requests": self.requests[t.id]}
                    for t in self.tasks.values()
                },
                "attempts": dict(self.attempts),
                "batch_requests": self.batch_requests,
                "http_requests": self.http_requests,
                "poll_requests": self.poll_requests,
                "wrong_credential": len(self.wrong_credential),
            }

    # -- submit ---------------------------------------------------------------------------------------

    async def submit(self, api: str, token: str, headers: dict[str, str], body: bytes) -> Reply:
        found = MARKER.search(body)
        scenario, marker = (found.group(1).decode(), found.group(0).decode()) if found else ("ok", f"anon-{uuid.uuid4().hex}")
        with self.lock:
            self.attempts[marker] += 1
            attempt = self.attempts[marker]
            self.attempt_times[marker].append(time.time())
        first = attempt == 1
        if scenario == "submit_400":
            return jsonr({"error": {"message": "prompt refused by the fake", "type": "invalid_request_error"}}, 400)
        if first and scenario == "submit_500":
            return jsonr({"error": {"message": "internal trouble"}}, 500)
        if first and scenario == "submit_429":
            return jsonr({"error": {"message": "slow down"}}, 429, [("retry-after", "1")])
        if first and scenario == "submit_reset_before":
            raise Reset
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return jsonr({"error": {"message": "bad json"}}, 400)
        idem = headers.get("idempotency-key")
        task = self._existing(token, idem)
        if task is None:
            task = self._create(api, token, marker, scenario, body)
            if idem:
                self.by_idem[(token, idem)] = task.id
        answer = self.render_submit(task)
        if first and scenario == "submit_reset_after":
            return Reply(reset_after_act=True)
        if first and scenario == "submit_timeout_after":
            return Reply(hang=HANG_SECONDS)
        if first and scenario == "submit_malformed":
            return Reply(body=answer.body[: len(answer.body) // 2])
        return answer

    def _existing(self, token: str, idem: str | None) -> FakeTask | None:
        if not idem:
            return None
        task_id = self.by_idem.get((token, idem))
        return self.tasks.get(task_id) if task_id else None

    def _create(self, api: str, token: str, marker: str, scenario: str, body: bytes) -> FakeTask:
        ids = {
            "avatar": uuid.uuid4().hex,
            "pika": str(uuid.uuid4()),
            "unified": f"sora-2:task_{uuid.uuid4().hex[:26]}",
            "openai": f"video_{uuid.uuid4().hex}",
            "native": uuid.uuid4().hex[:26].upper(),
        }
        video = not (b'"text_to_image"' in body or b"enhance" in body or (api == "pika" and b"aspectRatio" not in body))
        with self.lock:
            task = FakeTask(
                id=ids[api], api=api, marker=marker, scenario=scenario, token=token, created=time.time(),
                duration=self._duration(), video=video,
            )
            self.tasks[task.id] = task
            self.created[marker] += 1
            self.tokens_used[token] += 1
        return task

    def _duration(self) -> float:
        if self.lognormal is None:
            return self.rng.uniform(*self.durations)
        median, p95, cap = self.lognormal
        sigma = math.log(p95 / median) / 1.6448536  # z of the 95th percentile
        return min(cap, median * math.exp(sigma * self.rng.gauss(0.0, 1.0)))

    # -- state ----------------------------------------------------------------------------------------

    def state(self, task: FakeTask) -> tuple[str, int]:
        """(queued | running | done | failed | canceled, progress)."""
        if task.canceled:
            return "canceled", 0
        elapsed = time.time() - task.created
        if elapsed < min(self.queue_seconds, task.duration / 2):
            return "queued", 0
        if task.scenario == "stuck" or elapsed < task.duration:
            return "running", min(99, int(100 * elapsed / max(task.duration, 0.001))) if self.progress else 0
        if task.done_at is None:
            task.done_at = task.created + task.duration
        return ("failed", 100) if task.scenario == "upstream_fails" else ("done", 100)

    def file_url(self, task: FakeTask) -> str:
        ext = "mp4" if task.video else "png"
        return f"{self.base_url}/files/{task.id}-{task.file_gen}/result.{ext}"

    # -- poll -----------------------------------------------------------------------------------------

    async def poll(self, api: str, task_id: str, token: str) -> Reply:
        task = self.tasks.get(task_id)
        with self.lock:
            self.poll_requests += 1
        if task is None or task.api != api:
            return jsonr({"error": {"message": "no such task"}}, 404)
        self._check(task, token)
        task.polls += 1
        if task.scenario == "poll_flaky" and task.polls <= len(POLL_FAULTS):
            fault = POLL_FAULTS[task.polls - 1]
            if fault == "500":
                return jsonr({"error": {"message": "poll trouble"}}, 500)
            if fault == "429":
                return jsonr({"error": {"message": "slow down"}}, 429, [("retry-after", "0.3")])
            if fault == "reset":
                raise Reset
            if fault == "hang":
                return Reply(hang=HANG_SECONDS)
            good = self.render(task)
            if fault == "malformed":
                return Reply(body=b"{not json at all")
            return Reply(body=good.body[: len(good.body) // 3])  # truncated JSON, complete HTTP
        if task.scenario == "unknown_status" and task.polls <= 4:
            return self.render(task, weird=("weird", "", "IN_QUEUE", None)[task.polls - 1])
        return self.render(task)

    def batch(self, ids: list[str], token: str) -> Reply:
        with self.lock:
            self.batch_requests += 1
        found = []
        for task_id in ids:
            task = self.tasks.get(task_id)
            if task is None or task.api != "native":
                continue
            self._check(task, token)
            task.polls += 1
            found.append(orjson.loads(self.render(task).body))
        return jsonr({"object": "list", "data": found, "has_more": False})

    def _check(self, task: FakeTask, token: str) -> None:
        with self.lock:
            self.requests[task.id] += 1
            if token != task.token:
                self.wrong_credential.append((task.id, token))

    def render_submit(self, task: FakeTask) -> Reply:
        if task.api == "avatar":
            return jsonr({"code": "success", "message": "", "data": task.id})
        if task.api == "pika":
            return jsonr({"id": task.id})
        if task.api == "unified":
            return jsonr({"id": task.id, "status": "pending", "status_update_time": int(task.created * 1000)})
        return self.render(task)

    def render(self, task: FakeTask, weird: str | bool | None = False) -> Reply:
        state, progress = self.state(task)
        if state in ("done", "failed") and task.seen_done_at is None and weird is False:
            task.seen_done_at = time.time()
        url = self.file_url(task) if state == "done" else ""
        unknown = weird is not False
        if task.api == "avatar":
            code = {"queued": 0, "running": 1, "done": 200, "failed": -1, "canceled": -1}[state]
            view: dict[str, Any] = {
                "id": task.id[:24], "animate_id": task.id, "web_work_status": 7 if unknown else code,
                "work_video_path": "" if unknown else url, "no_wm_work_video_path": "", "create_time": 0,
            }
            if state == "failed":
                view["message"] = "the fake says no"
            return jsonr(view)
        if task.api == "pika":
            word = {"queued": "queued", "running": "pending", "done": "finished", "failed": "error", "canceled": "error"}[state]
            item = {"id": task.id, "status": weird if unknown else word, "progress": progress,
                    "resultUrl": "" if unknown else url, "error": "the fake says no" if state == "failed" else ""}
            return jsonr({"id": task.id, "promptText": "x", "videos": [item]})
        if task.api == "unified":
            word = {"queued": "pending", "running": "processing", "done": "completed", "failed": "failed", "canceled": "failed"}[state]
            return jsonr({
                "id": task.id, "status": weird if unknown else word, "video_url": None if unknown else (url or None),
                "status_update_time": int(time.time() * 1000),
                "detail": {"id": task.id, "status": word, "progress": progress,
                           "failure_reason": "the fake says no" if state == "failed" else None},
            })
        if task.api == "openai":
            word = {"queued": "queued", "running": "in_progress", "done": "completed", "failed": "failed", "canceled": "failed"}[state]
            return jsonr({
                "id": task.id, "object": "video", "model": "sora-2", "status": weird if unknown else word,
                "progress": progress, "created_at": int(task.created), "seconds": "4", "size": "720x1280",
                "error": {"code": "failed", "message": "the fake says no"} if state == "failed" else None,
            })
        word = {"queued": "queued", "running": "running", "done": "succeeded", "failed": "failed", "canceled": "canceled"}[state]
        ext = "mp4" if task.video else "png"
        outputs = []
        if state == "done" and not unknown:
            outputs = [{"role": "video" if task.video else "image", "index": 0, "url": url,
                        "mime": "video/mp4" if task.video else "image/png", "bytes": len(self.files[ext]),
                        "sha256": self.sha[ext]}]
        return jsonr({
            "id": task.id, "object": "task", "status": weird if unknown else word, "progress": progress,
            "outputs": outputs, "error": {"code": "failed", "message": "the fake says no"} if state == "failed" else None,
        })

    # -- files ----------------------------------------------------------------------------------------

    def file(self, path: str, token: str, *, via_api: bool) -> Reply:
        name = path.split("/")[2]
        task_id, _, gen = name.rpartition("-")
        task = self.tasks.get(task_id)
        if task is None:
            return jsonr({"error": {"message": "no such file"}}, 404)
        if via_api:
            self._check(task, token)
        else:
            with self.lock:
                self.requests[task.id] += 1
        return self._serve(task, current=gen == str(task.file_gen))

    def file_of(self, task_id: str, token: str) -> Reply:
        task = self.tasks.get(task_id)
        if task is None:
            return jsonr({"error": {"message": "no such video"}}, 404)
        self._check(task, token)
        if self.state(task)[0] != "done":
            return jsonr({"error": {"message": "not ready"}}, 404)
        return self._serve(task, current=True)

    def _serve(self, task: FakeTask, *, current: bool) -> Reply:
        task.fetches += 1
        if task.scenario == "expired_forever" or not current:
            return jsonr({"error": {"message": "expired"}}, 404)
        if task.scenario == "expired_once" and task.file_gen == 0:
            task.file_gen += 1  # the next poll hands out a fresh URL
            return jsonr({"error": {"message": "expired"}}, 403)
        data = self.files["mp4" if task.video else "png"]
        ctype = "video/mp4" if task.video else "image/png"
        if task.scenario == "slow_body":
            return Reply(body=data, content_type="application/octet-stream", trickle=0.15)
        if task.scenario == "truncated_body" and task.fetches == 1:
            return Reply(body=data[: len(data) // 2], content_type=ctype, announce=len(data))
        if task.scenario == "wrong_content" and task.fetches == 1:
            return Reply(body=b"<html><body>gateway error</body></html>", content_type=ctype)
        return Reply(body=data, content_type="application/octet-stream")

    def cancel(self, task_id: str, token: str) -> Reply:
        task = self.tasks.get(task_id)
        if task is None:
            return jsonr({"error": {"message": "no such task"}}, 404)
        self._check(task, token)
        task.canceled = True
        return self.render(task)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main() -> None:
    """Run the fake alone (benchmarks): prints its port, serves until killed; stats at GET /__stats."""
    import argparse
    import tempfile
    from pathlib import Path

    from mediarelay import media

    parser = argparse.ArgumentParser()
    parser.add_argument("--min", type=float, default=0.3)
    parser.add_argument("--max", type=float, default=1.2)
    parser.add_argument("--queue", type=float, default=0.2)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--lognormal", default="", help="median,p95,cap seconds: log-normal run times")
    parser.add_argument("--no-progress", action="store_true", help="report 0 %% while running")
    args = parser.parse_args()
    lognormal = tuple(float(x) for x in args.lognormal.split(",")) if args.lognormal else None
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        asyncio.run(media.make_video(tmp / "r.mp4", width=64, height=64, seconds=1, fps=8, text="b", audio=False))
        asyncio.run(media.make_image(tmp / "r.png", width=32, height=32, text="b"))
        fake = FakeUpstream(
            png=(tmp / "r.png").read_bytes(), mp4=(tmp / "r.mp4").read_bytes(),
            durations=(args.min, args.max), queue_seconds=args.queue, latency=args.latency,
            lognormal=lognormal, progress=not args.no_progress,  # type: ignore[arg-type]
        ).start()
    print(fake.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
