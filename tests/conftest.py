"""Test harness: real `mediarelay serve` processes on 127.0.0.1, driven over HTTP.

`server` is one shared gateway for the session (fast sandbox timings); tests that need their own
(kill -9, special settings) call `start_server(tmp_path, ...)`.

`MEDIARELAY_TEST_DATABASE=postgresql` runs every server on its own throw-away PostgreSQL database (at
MEDIARELAY_TEST_PG) instead of SQLite, which also switches them to the procrastinate job queue: CI runs
the whole suite both ways.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.string import TextLoader

from mediarelay.store import database
from mediarelay.store.database import Database

BIN = Path(sys.executable).parent / "mediarelay"
PG_ADMIN = os.environ.get("MEDIARELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVER_DB = os.environ.get("MEDIARELAY_TEST_DATABASE", "sqlite")

# Submit bodies several test modules share: a small Pika request, and the Pika seed's own example.
PIKA = {
    "promptText": "a kite",
    "options": {
        "aspectRatio": 1.0,
        "frameRate": 12,
        "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
        "extend": False,
    },
}
PIKA_SEED = {
    "promptText": "moving",
    "model": "1.5",
    "options": {
        "aspectRatio": 1.7777777777777777,
        "frameRate": 24,
        "camera": {},
        "parameters": {"guidanceScale": 12, "motion": 1, "negativePrompt": ""},
        "extend": False,
    },
}
# A one-second 64×64 sandbox video (fast to make and to probe).
TINY = {"model": "tiny", "operation": "text_to_video", "prompt": "a tiny square", "width": 64, "height": 64,
        "seconds": 1, "fps": 8}  # fmt: skip
# Scaled out, every node must share the master key (docs/security.md): give every process the tests start
# one (copied with os.environ); tests of the embedded key file pass MEDIARELAY_MASTER_KEY="" to drop it.
TEST_MASTER_KEY = "dGVzdC1tYXN0ZXIta2V5LW1lZGlhcmVsYXktMDAwMDA="
os.environ.setdefault("MEDIARELAY_MASTER_KEY", TEST_MASTER_KEY)
_server_databases: list[str] = []

FAST_SANDBOX = {
    "MEDIARELAY_SANDBOX__QUEUE_SECONDS": "0.3",
    "MEDIARELAY_SANDBOX__RUN_SECONDS": "1.5",
    "MEDIARELAY_SANDBOX__JITTER": "0.2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    data_dir: Path
    port: int
    env: dict[str, str]
    admin_key: str = ""
    proc: subprocess.Popen[str] | None = None
    args: tuple[str, ...] = ()  # more `serve` options, e.g. ("--no-worker",)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=self.env,
            cwd=self.data_dir.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")
        if not self.admin_key:
            # Printed once, on the first start only.
            assert self.proc.stdout is not None
            self.admin_key = self.proc.stdout.readline().strip()
            assert self.admin_key.startswith("mr-"), self.admin_key
        # Keep reading stdout (uvicorn's access log goes there) into the log file: a full pipe would
        # block the server's event loop on its next log line.
        threading.Thread(target=_drain, args=(self.proc.stdout, self.log_path), daemon=True).start()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.data_dir.parent,
            timeout=60,
            check=False,
        )

    def new_key(self, name: str = "test") -> str:
        out = self.cli("keys", "create", "--name", name)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def rows(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Read the server's database directly, to check what was stored. `?` placeholders; JSON
        columns come back as text on both backends."""
        url = self.env.get("MEDIARELAY_DATABASE_URL")
        if url:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                for json_type in ("json", "jsonb"):
                    conn.adapters.register_loader(json_type, TextLoader)
                return conn.execute(sql.replace("?", "%s") if params else sql, params).fetchall()
        with sqlite3.connect(f"file:{self.data_dir / 'mediarelay.db'}?mode=ro", uri=True) as db:
            return db.execute(sql, params or ()).fetchall()

    def task_count(self) -> int:
        return int(self.rows("select count(*) from tasks")[0][0])

    def client(self, key: str | None, *, bearer: bool = True) -> httpx.Client:
        headers = {}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}" if bearer else key
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


class Worker:
    """A `mediarelay worker` process (scaled-out mode) next to the servers of a test."""

    def __init__(self, data: Path, env: dict[str, str], name: str) -> None:
        self.data, self.env, self.name = data, env, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = (self.data.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN), "worker", "--data-dir", str(self.data)], stdout=log, stderr=log, env=self.env
        )
        return self

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc, 20)


def kill_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL a child that still runs: no shutdown code runs."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float) -> None:
    """SIGTERM a child that still runs; SIGKILL it if it has not stopped after `timeout` seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_process(proc)


def _drain(stream: Any, log_path: Path) -> None:
    with log_path.open("a") as log:
        for line in stream:
            log.write(line)
            log.flush()


def start_server(tmp: Path, *, data_name: str = "data", port: int | None = None, **env: str) -> Server:
    data = tmp / data_name
    data.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **FAST_SANDBOX, **env}
    full_env.pop("MEDIARELAY_CONFIG", None)
    if SERVER_DB == "postgresql" and "MEDIARELAY_DATABASE_URL" not in env:
        full_env["MEDIARELAY_DATABASE_URL"] = server_database()
    return Server(data_dir=data, port=port or free_port(), env=full_env).start()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def user_key(server: Server) -> str:
    return server.new_key("user")


@pytest.fixture(scope="session")
def other_key(server: Server) -> str:
    return server.new_key("other")


@pytest.fixture
def api(server: Server, user_key: str) -> Iterator[httpx.Client]:
    with server.client(user_key) as c:
        yield c


def wait_until(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60, every: float = 0.2
) -> Any:
    """Call `fetch` until `done(result)`; returns the last result or fails with it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(every)
    raise AssertionError(f"not done after {timeout}s: {last!r}")


def server_database() -> str:
    """A new PostgreSQL database for one server (dropped when the session ends)."""
    name = f"mr_srv_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _server_databases.append(name)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session", autouse=True)
def _drop_server_databases() -> Iterator[None]:
    yield
    if _server_databases:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in _server_databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextmanager
def pg_database(prefix: str = "mr_test") -> Iterator[str]:
    """A throw-away PostgreSQL database for one test; yields its SQLAlchemy URL, drops it afterwards."""
    if not pg_available():
        pytest.skip("no PostgreSQL server reachable at MEDIARELAY_TEST_PG")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The store on both backends, migrated to head: every store-level test runs on each."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'store.db'}"
        else:
            url = stack.enter_context(pg_database())
        database.upgrade(url)
        store = Database(url)
        try:
            yield store
        finally:
            store.dispose()


def assert_books_balance(server: Server, *, expect_refunds: bool = True) -> None:
    """Every key's books from the database alone: balance = sum of its ledger, balance + used = money in,
    one charge per task that does work, refunds only for failed/canceled tasks, settlements only for
    succeeded ones, and each task's open/settled/refunded state matching its status."""
    for key_id, balance, used, limit in server.rows(
        "select key_id, balance, used, credit_limit from accounts"
    ):
        (total,) = server.rows(f"select coalesce(sum(amount), 0) from ledger where key_id='{key_id}'")[0]
        (money_in,) = server.rows(
            f"select coalesce(sum(amount), 0) from ledger where key_id='{key_id}' and kind in ('topup','adjust')"
        )[0]
        (spent,) = server.rows(f"select coalesce(sum(amount), 0) from task_charges where key_id='{key_id}'")[
            0
        ]
        assert total == balance and balance + used == money_in and used == spent, key_id
        assert limit is None or balance >= -limit
    workers = {
        t: s
        for t, s in server.rows(
            "select id, status from tasks where id not in (select parent_id from tasks where parent_id is not null)"
        )
    }
    charged = dict(server.rows("select task_id, count(*) from ledger where kind='charge' group by task_id"))
    assert charged == dict.fromkeys(workers, 1)  # every task that does work charged exactly once
    state = {"succeeded": "settled", "failed": "refunded", "canceled": "refunded"}
    charges = dict(server.rows("select task_id, state from task_charges"))
    assert charges == {t: state[s] for t, s in workers.items()}
    for kind, statuses in [("refund", {"failed", "canceled"}), ("settle", {"succeeded"})]:
        for task_id, count in server.rows(
            f"select task_id, count(*) from ledger where kind='{kind}' group by task_id"
        ):
            assert workers[task_id] in statuses and count == 1, (kind, task_id)
    refunded = server.rows(
        "select c.estimate, l.amount from task_charges c join ledger l on l.task_id=c.task_id and l.kind='refund'"
    )
    assert refunded or not expect_refunds
    assert all(estimate == amount for estimate, amount in refunded)  # refunds return it all
