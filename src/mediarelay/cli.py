"""The command line: `mediarelay serve`, `mediarelay keys …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mediarelay import doctor, logs
from mediarelay.billing import cli as billing_cli
from mediarelay.client import cli as client_cli
from mediarelay.config import Settings

app = typer.Typer(
    help="mediarelay: a self-hosted gateway for asynchronous AI media-generation tasks.", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
billing_cli.register(app, keys_app)  # keys topup|adjust|limits|account|ledger, usage
client_cli.register(app)  # submit, status, tasks, download, cancel (HTTP clients of a server)
doctor.register(app)  # doctor: settings, database, storage, ffmpeg, channels

err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where the database and files live.")]


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def say(settings: Settings, message: str, *, error: bool = False) -> None:
    """A startup line for people: on the console as text, or as a JSON log line when the logs are JSON
    (so every line the process writes parses)."""
    if settings.log_format == "json":
        import logging

        logging.getLogger("mediarelay").log(logging.ERROR if error else logging.INFO, message)
    else:
        err.print(message, markup=False, highlight=False, style="red" if error else None)


def build_services(settings: Settings) -> Any:
    """Services.build, with a master-key problem reported as one clear line and exit status 2 (no
    traceback, nothing secret: docs/security.md)."""
    from mediarelay.api.services import Services
    from mediarelay.secrets import MasterKeyError

    logs.configure(settings.log_format)
    try:
        return Services.build(settings)
    except MasterKeyError as exc:
        say(settings, f"mediarelay: cannot start: {exc}", error=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    data_dir: DataDir = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Also run background steps here (scaled out on PostgreSQL: --no-worker for API-only nodes).",
        ),
    ] = True,
    server: Annotated[
        str | None,
        typer.Option(help="HTTP server: granian or uvicorn [default: granian, or MEDIARELAY_SERVER]."),
    ] = None,
) -> None:
    """Run the gateway: API, status fast path and the engine (embedded: SQLite and local files)."""
    from mediarelay.api import serving
    from mediarelay.api.app import create_apps

    settings = load_settings(data_dir, host=host, port=port, server=server)
    services = build_services(settings)
    if not worker and not settings.uses_jobs:
        say(settings, "--no-worker needs the job queue (a PostgreSQL database_url); refusing.", error=True)
        raise typer.Exit(2)
    services.run_worker = worker
    secret = services.ensure_admin_key()
    if secret:
        say(settings, "Created the admin key. It is shown once (on stdout); store it now.")
        print(secret, flush=True)
    say(settings, f"mediarelay listening on {settings.base_url} (data in {settings.data_dir.resolve()})")
    serving.run(create_apps(services=services), settings, drain=services.views.drain)


@app.command()
def worker(
    data_dir: DataDir = None,
    concurrency: Annotated[int | None, typer.Option(help="Steps at once [default: workers setting].")] = None,
) -> None:
    """Run background steps (dispatch, poll, finalize, webhooks) as procrastinate jobs: scaled-out mode,
    any number of these next to any number of `serve --no-worker` API nodes, all on one PostgreSQL."""
    import asyncio
    import signal

    settings = load_settings(data_dir, workers=concurrency)
    if not settings.uses_jobs:
        err.print("[red]mediarelay worker needs PostgreSQL: set MEDIARELAY_DATABASE_URL.[/red]")
        raise typer.Exit(2)
    services = build_services(settings)
    services.run_api = False

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await services.start()
        say(settings, f"mediarelay worker running {settings.workers} steps at once")
        try:
            await stop.wait()
        finally:
            await services.stop()

    asyncio.run(run())


db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Bring the database to the newest schema (every node also does this when it starts)."""
    from mediarelay.store import database

    settings = load_settings(data_dir)
    database.upgrade(settings.db_url)
    err.print("database is up to date")


def _key_repo(data_dir: Path | None) -> Any:
    from mediarelay.store import database
    from mediarelay.store.database import Database
    from mediarelay.store.keys import KeyRepo

    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database.upgrade(settings.db_url)
    return KeyRepo(Database(settings.db_url))


def _webhook_url(url: str, data_dir: Path | None, option: str) -> str:
    """A default webhook URL checked like the API checks it (form; literal private addresses refused)."""
    from mediarelay.dialects.common import check_url
    from mediarelay.netguard import Blocked, NetGuard

    hooks = load_settings(data_dir).webhooks
    try:
        url = check_url(url)
        NetGuard(allow_private=hooks.allow_private, allowed_hosts=hooks.allowed_hosts).check_url(url)
    except (ValueError, Blocked) as exc:
        err.print(f"{option}: {exc}")
        raise typer.Exit(2) from None
    return url


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    admin: Annotated[bool, typer.Option(help="Make it an admin key.")] = False,
    webhook_url: Annotated[
        str | None, typer.Option("--webhook-url", help="The key's default webhook URL (docs/webhooks.md).")
    ] = None,
    balance: Annotated[
        str | None, typer.Option(help="Opening balance in currency units; makes the key prepaid.")
    ] = None,
    credit_limit: Annotated[
        str | None, typer.Option("--credit-limit", help="How far below 0 it may go (0 with a balance).")
    ] = None,
    daily_cap: Annotated[str | None, typer.Option("--daily-cap", help="Spend per UTC day.")] = None,
    max_concurrent: Annotated[
        str | None, typer.Option("--max-concurrent", help="Active tasks at once.")
    ] = None,
    rpm: Annotated[str | None, typer.Option(help="Submits a minute.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print it alone on stdout (it is not stored and cannot be shown again).
    Without billing options it has unlimited credit (docs/billing.md)."""
    url = _webhook_url(webhook_url, data_dir, "--webhook-url") if webhook_url is not None else None
    secret = billing_cli.create_key(
        data_dir,
        name,
        admin=admin,
        webhook_url=url,
        balance=balance,
        credit_limit=credit_limit,
        daily_cap=daily_cap,
        max_concurrent=max_concurrent,
        rpm=rpm,
    )
    print(secret)


@keys_app.command("webhook")
def keys_webhook(
    ident: Annotated[str, typer.Argument(help="The key's id or printed prefix.")],
    url: Annotated[str | None, typer.Option(help="Set the key's default webhook URL.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the default webhook URL.")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace the signing secret.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Show or change a key's webhook settings; prints the signing secret alone on stdout."""
    from mediarelay.store.webhooks import WebhookRepo

    if url is not None and clear:
        err.print("give --url or --clear, not both")
        raise typer.Exit(2)
    checked = _webhook_url(url, data_dir, "--url") if url is not None else None
    repo = WebhookRepo(_key_repo(data_dir).db)
    key_id = repo.find_key(ident)
    if key_id is None:
        err.print(f"no key {ident!r}")
        raise typer.Exit(1)
    current, secret = repo.set_key_settings(
        key_id, url=checked, keep_url=checked is None and not clear, rotate=rotate
    )
    err.print(f"default webhook URL: {current or '(none)'}")
    print(secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (their prefixes only)."""
    table = Table("id", "prefix", "name", "admin", "created", "revoked")
    for key in _key_repo(data_dir).list():
        table.add_row(
            key.id,
            key.prefix + "…",
            key.name,
            "yes" if key.is_admin else "",
            str(key.created_at),
            str(key.revoked_at or ""),
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="The key's id or printed prefix.")], data_dir: DataDir = None
) -> None:
    """Revoke a key; requests with it fail within seconds."""
    if not _key_repo(data_dir).revoke(ident):
        err.print(f"no active key {ident!r}")
        raise typer.Exit(1)
    err.print(f"revoked {ident}")
