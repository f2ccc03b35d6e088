"""Client commands of the `mediarelay` CLI: submit, status, tasks, download, cancel.

They talk HTTP to a server (mediarelay, or an aggregator speaking one of the dialects) through
`mediarelay.client`; nothing here touches a database. `--base-url` / `--key` default to the
`MEDIARELAY_URL` / `MEDIARELAY_KEY` environment variables. Progress goes to stderr; stdout gets one
useful line (the id, the result URL or the saved file) or, with `--json`, the task as JSON.

Exit codes: 0 done, 1 the task failed or was canceled, 2 bad usage or a refused request,
3 any other error (network, server, download), 4 `--timeout` reached, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from mediarelay.client import Client, TaskResult

err = Console(stderr=True, soft_wrap=True)
# Tables on a pipe get room for whole ids (Rich would assume 80 columns and cut them).
out = Console(width=None if sys.stdout.isatty() else 200)

BaseUrl = Annotated[
    str,
    typer.Option("--base-url", envvar="MEDIARELAY_URL", help="The server's root URL.", show_envvar=True),
]
Key = Annotated[str | None, typer.Option("--key", envvar="MEDIARELAY_KEY", help="API key.", show_envvar=True)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the task as JSON on stdout.")]
DialectOpt = Annotated[
    str | None,
    typer.Option(
        "--dialect",
        "-d",
        help="The API dialect: native (default), openai, pika, unified, avatar or faceswap.",
    ),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait at most.")]
Strategy = Annotated[str, typer.Option("--strategy", help="How to wait: auto, sse, long_poll or poll.")]
DEFAULT_URL = "http://127.0.0.1:8000"

EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_TIMEOUT, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def fail(message: str, code: int) -> NoReturn:
    err.print(Text(f"error: {message}", style="red"))
    raise typer.Exit(code)


@contextmanager
def handled(task_id: Callable[[], str | None] = lambda: None) -> Iterator[None]:
    """Turn the client's exceptions into a message on stderr and an exit code."""
    from mediarelay import client as mr

    try:
        yield
    except mr.TaskFailedError as exc:
        fail(str(exc), EXIT_FAILED)
    except mr.WaitTimeoutError as exc:
        fail(f"{exc}; it goes on: mediarelay status {task_id() or ''}", EXIT_TIMEOUT)
    except mr.AuthenticationError as exc:
        fail(f"{exc} (check --key or MEDIARELAY_KEY)", EXIT_USAGE)
    except (mr.UsageError, mr.BadRequestError, mr.NotFoundError) as exc:
        fail(str(exc), EXIT_USAGE)
    except mr.MediarelayClientError as exc:
        fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        ident = task_id()
        hint = f"; the task goes on: mediarelay status {ident}" if ident else ""
        err.print(Text(f"interrupted{hint}"))
        raise typer.Exit(EXIT_INTERRUPTED) from None


def make_client(base_url: str, key: str | None, dialect: str | None, strategy: str = "auto") -> Client:
    from mediarelay.client import Client, UsageError

    try:
        return Client(base_url, key or "", dialect=dialect or "native", strategy=strategy)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)


def parse_params(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; a VALUE that reads as JSON (numbers, true, lists…) is taken as such."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    return params


def parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected 'Name: value', got {item!r}", param_hint="--header")
        headers[name.strip()] = value.strip()
    return headers


def parse_body(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--body") from None
    if not isinstance(body, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--body")
    return body


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def show(result: TaskResult) -> None:
    """A task as a small table on stdout."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("id", result.id)
    table.add_row("dialect", result.dialect)
    table.add_row("status", result.status)
    table.add_row("progress", "" if result.progress is None else f"{result.progress}%")
    if result.error:
        table.add_row(
            "error", f"{result.error.message}" + (f" ({result.error.code})" if result.error.code else "")
        )
    for o in result.outputs:
        table.add_row(f"{o.role}[{o.index}]", o.url)
    if result.children:
        table.add_row("children", ", ".join(result.children))
    out.print(table)


def follow(client: Client, task: TaskResult, timeout: float) -> TaskResult:
    from mediarelay.client.progress import TaskBar

    with TaskBar(err, task.id) as bar:
        return client.wait(task, timeout=timeout, progress=bar.update)


def fetch(client: Client, task: TaskResult | str, dest: Path, **kw: Any) -> Path:
    from mediarelay.client.progress import DownloadBar

    with DownloadBar(err, str(dest)) as bar:
        return client.download(task, dest, progress=bar.update, **kw)


# -- the commands ---------------------------------------------------------------------------------------


def submit(
    model: Annotated[
        str | None,
        typer.Argument(help="Model / routing name: sora-2, pika-1.5, grok-video-3, upscale, faceswap…"),
    ] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="What to make.")] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", "-i", help="An input image URL (repeat for more).")
    ] = None,
    audio: Annotated[str | None, typer.Option("--audio", "-a", help="An input audio URL (avatars).")] = None,
    dialect: DialectOpt = None,
    operation: Annotated[
        str | None, typer.Option("--operation", help="Native API: the operation (default: from the inputs).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-P", help="Another request field, KEY=VALUE (VALUE may be JSON)."),
    ] = None,
    body: Annotated[
        str | None, typer.Option("--body", help="The dialect's whole request body: JSON, or @file.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="An extra request header, 'Name: value'.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the result, with a progress bar.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Download the result to FILE (implies --wait).")
    ] = None,
    timeout: Timeout = 1800.0,
    strategy: Strategy = "auto",
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Submit a task (default: the native API, POST /v1/tasks); optionally wait and download it."""
    fields = parse_params(param or [])
    if operation:
        fields["operation"] = operation
    client = make_client(base_url, key, dialect, strategy)
    task: TaskResult | None = None
    with client, handled(lambda: task.id if task else None):
        if body is not None:
            task = client.submit(body=parse_body(body), headers=parse_headers(header or []), **fields)
        else:
            task = client.submit(
                model, prompt=prompt, image=image, audio=audio, headers=parse_headers(header or []), **fields
            )
        err.print(Text(f"submitted {task.id} ({task.dialect})"))
        saved: Path | None = None
        if wait or output is not None:
            task = follow(client, task, timeout)
            if output is not None:
                saved = fetch(client, task, output)
        if json_out:
            print_json({**task.to_json(), **({"file": str(saved)} if saved else {})})
        elif saved is not None:
            print(saved)
        elif wait:
            print(task.url or task.id)
        else:
            print(task.id)


def status(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id (in its dialect's format).")],
    dialect: DialectOpt = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until it finishes.")] = False,
    timeout: Timeout = 1800.0,
    strategy: Strategy = "auto",
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a task (any dialect's id works with the native API of mediarelay)."""
    client = make_client(base_url, key, dialect, strategy)
    with client, handled(lambda: task_id):
        result = client.get(task_id)
        if wait and not result.done:
            result = follow(client, result, timeout)
        if json_out:
            print_json(result.to_json())
        else:
            show(result)
        if result.status in ("failed", "canceled") and wait:
            raise typer.Exit(EXIT_FAILED)


def tasks(
    status_filter: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="Only these: queued, running, succeeded, failed, canceled."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many.")] = 20,
    after: Annotated[str | None, typer.Option("--after", help="Continue after this task id.")] = None,
    dialect: Annotated[
        str | None, typer.Option("--dialect", "-d", help="Only tasks of this dialect.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only tasks of this model.")] = None,
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List your tasks of every dialect, newest first (mediarelay's GET /v1/tasks)."""
    client = make_client(base_url, key, None)
    with client, handled():
        page = client.tasks(limit=limit, after=after, status=status_filter, dialect=dialect, model=model)
    if json_out:
        print_json(
            {"data": [t.to_json() for t in page.data], "has_more": page.has_more, "last_id": page.last_id}
        )
        return
    table = Table("id", "dialect", "public id", "model", "status", "progress", "error")
    for t in page.data:
        raw = t.raw if isinstance(t.raw, dict) else {}
        table.add_row(
            t.id,
            str(raw.get("dialect", "")),
            str(raw.get("public_id") or ""),
            str(raw.get("model") or ""),
            t.status,
            "" if t.progress is None else f"{t.progress}%",
            t.error.message if t.error else "",
        )
    out.print(table)
    if page.has_more:
        err.print(Text(f"more: mediarelay tasks --after {page.last_id}"))


def download(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="A finished task's id, or a file URL.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save it.")],
    dialect: DialectOpt = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="video, image, poster, thumbnail or spritesheet (default: the result)."),
    ] = None,
    index: Annotated[int, typer.Option("--index", help="Which result of a multi-result task.")] = 0,
    verify: Annotated[
        bool, typer.Option(help="Check size and SHA-256 when the server publishes them.")
    ] = True,
    base_url: BaseUrl = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Download a task's result (resumes a partial download left by an earlier attempt)."""
    client = make_client(base_url, key, dialect)
    with client, handled():
        print(fetch(client, task_id, output, role=role, index=index, verify=verify))


def cancel(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    dialect: DialectOpt = None,
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Cancel a task that has not finished (a finished one is shown unchanged)."""
    client = make_client(base_url, key, dialect)
    with client, handled():
        result = client.cancel(task_id)
    if json_out:
        print_json(result.to_json())
    else:
        show(result)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `mediarelay` CLI (one call in cli.py)."""
    for command in (submit, status, tasks, download, cancel):
        app.command(command.__name__)(command)
