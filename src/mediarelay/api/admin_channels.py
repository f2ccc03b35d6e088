"""The channels admin API (admin keys only; others get 403): list channels with their health, in-flight
tasks and limits; create, replace, change, enable/disable and delete definitions (kept in the database,
applied on every node within seconds); reset a breaker; re-read mediarelay.toml. docs/channels.md.
Errors use the OpenAI-style envelope.
(No `from __future__ import annotations` here: FastAPI must see the real body model types.)
"""

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from mediarelay.api.errors import refuse_nul
from mediarelay.api.services import Services
from mediarelay.channels.base import ChannelConfig
from mediarelay.channels.health import secret_of
from mediarelay.channels.manager import ChannelManager, Effective
from mediarelay.config import SECRET_LABEL, ChannelSettings
from mediarelay.dialects.common import validation_error
from mediarelay.domain import ErrorKind, MediarelayError, invalid, not_found
from mediarelay.store.keys import ApiKey

router = APIRouter(prefix="/v1/admin/channels", tags=["Admin: channels"], dependencies=[Depends(refuse_nul)])


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def _admin(request: Request) -> Services:
    svc = _svc(request)
    key: ApiKey = await svc.auth.require(request.headers.get("authorization"))
    if not key.is_admin:
        raise MediarelayError(ErrorKind.FORBIDDEN, "this endpoint needs an admin key")
    return svc


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def channel_json(svc: Services, found: Effective, busy: dict[str, int]) -> dict[str, Any]:
    cfg = found.config
    channel = svc.channels.get(cfg.name)
    settings = ChannelSettings.from_config(cfg).model_dump(mode="json")
    settings.pop("name")
    return {
        "object": "channel",
        "name": cfg.name,
        "type": cfg.type,
        "source": found.source,
        "overrides_file": found.overrides_file,
        "enabled": cfg.enabled,
        "config": settings,
        "credentials": [
            {"ref": ref, "set": secret_of(ref, cfg.secrets) is not None} for ref in cfg.credentials
        ],
        "capabilities": {
            "operations": sorted(op.value for op in channel.operations) if channel else [],
            "idempotent_submit": bool(channel.idempotent_submit) if channel else False,
        },
        "in_flight": busy.get(cfg.name, 0),
        "health": svc.channels.health_of(cfg.name).snapshot(),
    }


async def _view(svc: Services, name: str) -> dict[str, Any]:
    found = svc.channel_manager.effective.get(name)
    if found is None:
        raise not_found(f"no channel {name!r}")
    return channel_json(svc, found, await asyncio.to_thread(svc.channel_manager.repo.busy))


def _parse(data: Any, name: str) -> ChannelConfig:
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    if "name" in data and data["name"] != name:
        raise invalid("name: a channel is renamed by creating the new one and deleting the old", "name")
    try:
        return ChannelSettings.model_validate({**data, "name": name}).to_config()
    except ValidationError as exc:
        raise validation_error(exc) from None


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None


SecretChanges = dict[str, str | None]


def _secrets(data: Any) -> SecretChanges:
    """Pop the write-only `secrets` ({label: value, or null to remove}) from a body. Errors name the
    label at most, never a value."""
    if not isinstance(data, dict):
        return {}
    raw = data.pop("secrets", None)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid("secrets: must be an object of label -> secret", "secrets")
    out: SecretChanges = {}
    for label, value in raw.items():
        if not isinstance(label, str) or not SECRET_LABEL.match(label):
            raise invalid("secrets: labels are letters, digits, '.', '_', '-' (at most 64)", "secrets")
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 8192):
            raise invalid(f"secrets.{label}: must be a non-empty string (at most 8192 characters)", "secrets")
        out[label] = value.strip() if isinstance(value, str) else None
    return out


async def _store(svc: Services, cfg: ChannelConfig, changes: SecretChanges | None = None) -> None:
    """Check that the whole set still builds with this definition, then persist and apply it (stored
    secrets are kept unless `changes` replaces or removes them: ChannelManager.store)."""
    manager: ChannelManager = svc.channel_manager

    def apply() -> None:
        try:
            manager.store(cfg, changes)
        except ValueError as exc:
            raise invalid(str(exc)) from None

    await asyncio.to_thread(apply)


@router.get("", summary="Every channel with its source, health, in-flight tasks and limits")
async def list_channels(request: Request) -> Response:
    svc = await _admin(request)
    manager = svc.channel_manager
    busy = await asyncio.to_thread(manager.repo.busy)
    return _json(
        {
            "object": "list",
            "data": [channel_json(svc, found, busy) for _, found in sorted(manager.effective.items())],
            "reloaded_at": manager.reloaded_at,
            "config_error": manager.last_error,
        }
    )


@router.post("", summary="Create a channel (409 if the name is taken)", status_code=201)
async def create_channel(request: Request) -> Response:
    svc = await _admin(request)
    data = await _body(request)
    changes = _secrets(data)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise invalid("name: required", "name")
    cfg = _parse(data, name)
    if name in svc.channel_manager.effective:
        raise MediarelayError(ErrorKind.CONFLICT, f"channel {name!r} exists: change it with PUT or PATCH")
    await _store(svc, cfg, changes)
    return _json(await _view(svc, name), 201)


@router.post("/reload", summary="Read mediarelay.toml again now (it is also watched)")
async def reload_channels(request: Request) -> Response:
    svc = await _admin(request)
    await asyncio.to_thread(svc.channel_manager.reload_file)
    if svc.channel_manager.last_error:
        raise invalid(f"not reloaded: {svc.channel_manager.last_error}")
    return await list_channels(request)


@router.get("/{name}", summary="One channel")
async def get_channel(request: Request, name: str) -> Response:
    svc = await _admin(request)
    return _json(await _view(svc, name))


@router.put("/{name}", summary="Create or replace a channel's definition (overrides mediarelay.toml's)")
async def put_channel(request: Request, name: str) -> Response:
    svc = await _admin(request)
    data = await _body(request)
    changes = _secrets(data)
    cfg = _parse(data, name)
    existed = name in svc.channel_manager.effective
    await _store(svc, cfg, changes)
    return _json(await _view(svc, name), 200 if existed else 201)


@router.patch("/{name}", summary="Change some fields of a channel (the rest is kept)")
async def patch_channel(request: Request, name: str) -> Response:
    svc = await _admin(request)
    found = svc.channel_manager.effective.get(name)
    if found is None:
        raise not_found(f"no channel {name!r}")
    data = await _body(request)
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    changes = _secrets(data)
    current = ChannelSettings.from_config(found.config).model_dump(mode="json")
    await _store(svc, _parse({**current, **data}, name), changes)
    return _json(await _view(svc, name))


async def _set_enabled(request: Request, name: str, enabled: bool) -> Response:
    svc = await _admin(request)
    found = svc.channel_manager.effective.get(name)
    if found is None:
        raise not_found(f"no channel {name!r}")
    current = ChannelSettings.from_config(found.config).model_dump(mode="json")
    await _store(svc, _parse({**current, "enabled": enabled}, name))
    return _json(await _view(svc, name))


@router.post("/{name}/disable", summary="Stop sending new tasks to a channel (tasks on it carry on)")
async def disable_channel(request: Request, name: str) -> Response:
    return await _set_enabled(request, name, False)


@router.post("/{name}/enable", summary="Send new tasks to a channel again")
async def enable_channel(request: Request, name: str) -> Response:
    return await _set_enabled(request, name, True)


@router.post(
    "/{name}/reset", summary="Close the channel's circuit breaker and forget its backoff (this node)"
)
async def reset_channel(request: Request, name: str) -> Response:
    svc = await _admin(request)
    if name not in svc.channel_manager.effective:
        raise not_found(f"no channel {name!r}")
    health = svc.channels.health_of(name)
    health.breaker.reset()
    health.backoff_until = 0.0
    health.errors_in_a_row = 0
    return _json(await _view(svc, name))


@router.delete("/{name}", summary="Delete a channel defined through the API")
async def delete_channel(
    request: Request, name: str, force: bool = Query(False, description="even with tasks still on it")
) -> Response:
    """A channel of mediarelay.toml cannot be deleted here (disable it, or edit the file); deleting an
    API definition that overrides one brings the file's definition back. Tasks still running on a
    deleted channel fail (`channel_gone`), so that needs `force=true`."""
    svc = await _admin(request)
    manager = svc.channel_manager
    found = manager.effective.get(name)
    if found is None:
        raise not_found(f"no channel {name!r}")
    if found.source != "admin":
        raise MediarelayError(
            ErrorKind.CONFLICT, f"channel {name!r} is defined in the configuration file: disable it instead"
        )
    busy = (await asyncio.to_thread(manager.repo.busy)).get(name, 0)
    if busy and not found.overrides_file and not force:
        raise MediarelayError(
            ErrorKind.CONFLICT,
            f"channel {name!r} still has {busy} task(s) in flight: disable it and wait, or pass force=true",
        )

    def remove() -> None:
        manager.repo.remove(name)
        manager.rebuild()

    await asyncio.to_thread(remove)
    return _json({"object": "channel.deleted", "name": name, "deleted": True})
