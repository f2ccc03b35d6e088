"""The command line: `mediarelay serve`, `mediarelay keys …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mediarelay.config import Settings

app = typer.Typer(
    help="mediarelay: a self-hosted gateway for asynchronous AI media-generation tasks.", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where the database and files live.")]


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the gateway: API, status fast path and the in-process engine, on SQLite and local files."""
    import uvicorn

    from mediarelay.api.app import create_app
    from mediarelay.api.services import Services

    settings = load_settings(data_dir, host=host, port=port)
    services = Services.build(settings)
    secret = services.ensure_admin_key()
    if secret:
        err.print("[bold]Created the admin key. It is shown once; store it now:[/bold]")
        print(secret, flush=True)
    err.print(f"mediarelay listening on {settings.base_url} (data in {settings.data_dir.resolve()})")
    config = uvicorn.Config(
        create_app(services=services),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def _key_repo(data_dir: Path | None) -> Any:
    from mediarelay.store import database
    from mediarelay.store.database import Database
    from mediarelay.store.keys import KeyRepo

    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database.upgrade(settings.db_url)
    return KeyRepo(Database(settings.db_url))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    admin: Annotated[bool, typer.Option(help="Make it an admin key.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print it alone on stdout (it is not stored and cannot be shown again)."""
    _, secret = _key_repo(data_dir).create(name, is_admin=admin)
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
