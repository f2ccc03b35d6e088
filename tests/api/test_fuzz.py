"""Fuzzing every operation of /openapi.json with schemathesis, against a real server on 127.0.0.1.

Each operation runs with a valid user key, an unknown key and no key (and the admin operations also with
an admin key of their own): no answer may be a server error, and every answer's status code, content
type and body must be the ones the document declares for that operation. Bounded and derandomized so
it runs in CI in well under three minutes (docs/reliability.md, "Fuzzing").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import PIKA_SEED, Server, start_server, wait_until

pytestmark = pytest.mark.timeout(240)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12  # per operation and key kind: the whole module stays well under 3 minutes on 2 cores
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the first failing case
    suppress_health_check=list(HealthCheck),
)
MAX_WAIT = "0.5"  # status `wait` (long-poll, up to 60 s): capped so a generated `wait=60` costs little
TIMEOUT = 15.0
UNKNOWN_KEY = "mr-" + "x" * 43

# Operations that only an admin key may call: with user/unknown/no keys they are plain 401/403 checks;
# with an admin key they run last (they revoke keys, change prices and channels) on a sacrificial key.
ADMIN_PATH = "^/v1/admin/"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("fuzz"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def user_key(fuzz_server: Server) -> str:
    return fuzz_server.new_key("fuzz-user")


@pytest.fixture(scope="module")
def fuzz_admin_key(fuzz_server: Server) -> str:
    out = fuzz_server.cli("keys", "create", "--name", "fuzz-admin", "--admin")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json", timeout=TIMEOUT)


def send(case: Case, server: Server, authorization: str | None) -> None:
    """Send the case (with the given Authorization header, or none) and apply every check."""
    if case.query and "wait" in case.query:
        try:
            if float(case.query["wait"]) > float(MAX_WAIT):
                case.query["wait"] = MAX_WAIT
        except (TypeError, ValueError):
            pass  # not a number: the server must refuse it, in the dialect's envelope
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    case.headers = headers
    case.call_and_validate(base_url=server.base_url, checks=CHECKS, timeout=TIMEOUT)


def fuzz_operation(operation: APIOperation, mode: GenerationMode, server: Server, auth: str | None) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Case) -> None:
        send(case, server, auth)

    fuzz()


def fuzz_all(schema: BaseSchema, server: Server, auth: str | None, *, path_regex: str | None = None) -> None:
    """Every operation (matching `path_regex`), positive and negative cases; one report of every failure."""
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if path_regex is not None and not re.search(path_regex, operation.path):
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, server, auth)
            except Unsatisfiable:
                # Negative mode only: nothing in the operation can be made invalid (no parameters and no
                # body, or only unconstrained strings), so there is no negative case to send.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a Base…Group
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert operations > 0
    assert not failures, f"{len(failures)} failing operations:\n\n" + "\n\n".join(failures)


def test_fuzz_user_key(api_schema: BaseSchema, fuzz_server: Server, user_key: str) -> None:
    fuzz_all(api_schema, fuzz_server, f"Bearer {user_key}")


def test_fuzz_unknown_key(api_schema: BaseSchema, fuzz_server: Server) -> None:
    fuzz_all(api_schema, fuzz_server, f"Bearer {UNKNOWN_KEY}")


def test_fuzz_no_key(api_schema: BaseSchema, fuzz_server: Server) -> None:
    fuzz_all(api_schema, fuzz_server, None)


def test_fuzz_admin_key(api_schema: BaseSchema, fuzz_server: Server, fuzz_admin_key: str) -> None:
    """Last: it revokes keys, changes prices and channels (its own key may be among the revoked)."""
    fuzz_all(api_schema, fuzz_server, f"Bearer {fuzz_admin_key}", path_regex=ADMIN_PATH)


# One real task per dialect, submitted, queried until finished and cancelled through the documented
# operations: random ids never find a task, so this is what checks the 200 bodies of the status and
# cancel routes against their schemas (and the submit answers with a known-good body).
SUBMITS: list[tuple[str, dict[str, Any], str, str, Callable[[Any], str]]] = [
    (
        "/avatar/generation",
        {"avatar_url": "https://example.com/face.png", "audio_url": "https://example.com/voice.mp3"},
        "/avatar/task/{task_id}",
        "/avatar/task/{task_id}/cancel",
        lambda r: r["data"],
    ),
    (
        "/pika/generate",
        PIKA_SEED,
        "/pika/feed/{task_id}",
        "/pika/feed/{task_id}/cancel",
        lambda r: r["id"],
    ),
    (
        "/v1/video/create",
        {
            "model": "sora-2",
            "prompt": "make animate",
            "orientation": "portrait",
            "size": "small",
            "duration": 10,
        },
        "/v1/video/query",
        "/v1/video/cancel",
        lambda r: r["id"],
    ),
    (
        "/createTask",
        {"taskType": 6, "targetUrls": ["https://example.com/photo.png"], "scale": 2},
        "/getTaskInfo",
        "/cancelTask",
        lambda r: r["data"]["promptId"],
    ),
    (
        "/v1/videos",
        {"model": "sora-2", "prompt": "a cat"},
        "/v1/videos/{video_id}",
        "/v1/videos/{video_id}/cancel",
        lambda r: r["id"],
    ),
    (
        "/v1/tasks",
        {"model": "sandbox", "operation": "text_to_image", "prompt": "a cat"},
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/cancel",
        lambda r: r["id"],
    ),
]


def id_case(schema: BaseSchema, path: str, method: str, public_id: str) -> Case:
    operation = schema[path][method]
    names = [p.name for p in operation.path_parameters]
    if names:
        return operation.Case(path_parameters={names[0]: public_id})
    query_name = next(p.name for p in operation.query if p.name != "wait")
    return operation.Case(query={query_name: public_id})


@pytest.mark.parametrize(
    "submit_path, body, status_path, cancel_path, public_id", SUBMITS, ids=[s[0] for s in SUBMITS]
)
def test_task_answers_match_schema(
    api_schema: BaseSchema,
    fuzz_server: Server,
    user_key: str,
    submit_path: str,
    body: dict[str, Any],
    status_path: str,
    cancel_path: str,
    public_id: Callable[[Any], str],
) -> None:
    auth = {"Authorization": f"Bearer {user_key}", "X-Sandbox-Duration": "0.3"}
    submitted = api_schema[submit_path]["POST"].Case(body=body, media_type="application/json")
    answer = submitted.call_and_validate(base_url=fuzz_server.base_url, headers=auth, checks=CHECKS)
    assert answer.status_code == 200, answer.text
    task = public_id(answer.json())
    status = id_case(api_schema, status_path, "GET", task)
    # Every answer on the way (queued, running, finished) conforms, not only the last one.
    done = wait_until(
        lambda: status.call_and_validate(base_url=fuzz_server.base_url, headers=auth, checks=CHECKS).json(),
        lambda r: any(w in orjson_text(r) for w in FINISHED),
        timeout=60,
    )
    assert done
    cancel = id_case(api_schema, cancel_path, "POST", task)
    answer = cancel.call_and_validate(base_url=fuzz_server.base_url, headers=auth, checks=CHECKS)
    assert answer.status_code == 200, answer.text


FINISHED = (
    '"web_work_status": 200',
    '"status": "finished"',
    '"status": "completed"',
    '"state": 30',
    '"status": "succeeded"',
)


def orjson_text(value: Any) -> str:
    return json.dumps(value)  # ", " and ": " separators, as FINISHED spells them
