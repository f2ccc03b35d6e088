"""Dispatch: pick a channel, claim one of its slots, submit, and never submit a task twice.

Order of things for a task without an upstream id:
1. Candidates: enabled channels that serve the model and operation, by priority then weighted-random.
   Skipped for now: an open circuit breaker, a 429 pause, an empty rate-limit bucket, no free slot.
2. Claim (one transaction, `store/channels.py`): the channel has a free slot deployment-wide → the task
   records the channel, the credential and a "submit attempted" marker, BEFORE anything is sent.
3. Submit. Taken → upstream id, status and start time recorded. Refused for sure (nothing reached the
   upstream, or it said no) → the claim is released and the next candidate is tried; a permanent
   refusal fails the task. Outcome unknown (`SubmitUnknown`, or a crash after the claim) → see below.

Unknown outcome (docs/channels.md): on an upstream that deduplicates by idempotency key (mediarelay,
OpenAI videos) the same request is sent again to the SAME channel with the same key and credential
until it answers (at most MAX_RESUBMITS times); a task that may exist there is never sent elsewhere.
Any other upstream cannot tell whether it has the task: the task fails with `submit_unknown` (and is
refunded) rather than risk running and billing it twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from mediarelay.channels.base import Channel, Submitted, SubmitUnknown, Unsupported
from mediarelay.domain import Task, TaskError, now_ms
from mediarelay.engine.cadence import retry_backoff

if TYPE_CHECKING:
    from mediarelay.engine.lifecycle import Engine

log = logging.getLogger("mediarelay.engine")

MAX_DISPATCH_ATTEMPTS = 8  # rounds over the candidates that ended in errors
MAX_RESUBMITS = 8  # re-sends of a submit whose outcome is unknown (idempotent upstreams only)
MAX_HISTORY = 10
FIRST_POLL_MS = {"sandbox": 200}  # [MR] a relay's first poll comes after a second: nothing is done sooner
DEFAULT_FIRST_POLL_MS = 1000
DEFAULT_DEADLINE_S = 24 * 3600


def _history(task: Task, channel: str, error: TaskError) -> list[dict[str, Any]]:
    entries = list((task.upstream or {}).get("history") or [])
    entries.append({"channel": channel, "code": error.code, "message": error.message[:500], "at": now_ms()})
    return entries[-MAX_HISTORY:]


class Dispatcher:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def channels(self) -> Any:
        return self.engine.channels

    async def dispatch(self, task: Task) -> None:
        marker = (task.upstream or {}).get("submit")
        if marker and task.channel:
            await self.resubmit(task)  # an earlier submit's outcome is unknown
            return
        candidates: list[Channel] = self.channels.candidates(
            task.model, task.operation, seed=f"{task.id}:{task.attempt}"
        )
        if not candidates:
            await self.engine._fail(
                task, "no_channel", f"no channel serves model {task.model!r} ({task.operation.value})"
            )
            return
        deadline = task.created_at + int(max(c.config.deadline_seconds for c in candidates) * 1000)
        if now_ms() > deadline:
            await self.engine._fail(task, "timeout", "no channel could take the task before its deadline")
            return
        waits: list[float] = []
        last: TaskError | None = None
        unsupported: Unsupported | None = None
        for channel in candidates:
            name = channel.config.name
            health = self.channels.health_of(name)
            wait = health.submit_wait()
            if wait > 0:
                waits.append(wait)
                continue
            wait = health.bucket.take()
            if wait > 0:
                waits.append(wait)
                continue
            credential = health.credential(channel.config.credentials, channel.config.secrets)
            upstream: dict[str, Any] = {
                **{k: v for k, v in (task.upstream or {}).items() if k == "history"},
                "submit": {"channel": name, "at": now_ms(), "tries": 1},
            }
            if credential:
                upstream["credential"] = credential
            at = now_ms()
            claimed = await self.engine.commits.run(
                partial(
                    self.engine.claims.claim_in,
                    task=task,
                    channel=name,
                    limit=channel.config.max_concurrency,
                    upstream=upstream,
                    now=at,
                )
            )
            if claimed is None:
                return  # the task changed meanwhile (a cancel): nothing to do
            if claimed is False:
                waits.append(random.uniform(0.5, 1.5))  # full: look again soon
                continue
            task = replace(task, channel=name, upstream=upstream, version=task.version + 1, updated_at=at)
            await self.engine._emit(task)  # a version like any other: event streams show every one
            if not health.breaker.allow():  # half-open and another step took the probe meanwhile
                waits.append(1.0)
                released = await self._release(task, None)
                if released is None:
                    return
                task = released
                continue
            health.submits += 1
            try:
                submitted = await channel.submit(task)
            except Unsupported as exc:
                unsupported = exc
                released = await self._release(task, None)
                if released is None:
                    return
                task = released
                continue
            except SubmitUnknown as exc:
                await self._unknown(task, channel, exc)
                return
            except TaskError as exc:
                if not exc.retryable:
                    await self.engine._fail(task, exc.code, exc.message)
                    return
                last = exc
                if exc.retry_after:
                    waits.append(exc.retry_after)
                released = await self._release(task, exc)
                if released is None:
                    return
                task = released
                continue
            except Exception as exc:  # a bug or an unforeseen error after sending: treat as unknown
                log.exception("submit to %s crashed for task %s", name, task.id)
                await self._unknown(task, channel, SubmitUnknown(f"channel {name}: {type(exc).__name__}"))
                return
            await self._submitted(task, channel, submitted)
            return
        await self._none_took_it(task, last, unsupported, waits)

    async def _none_took_it(
        self, task: Task, last: TaskError | None, unsupported: Unsupported | None, waits: list[float]
    ) -> None:
        if last is None and unsupported is not None and not waits:
            await self.engine._fail(task, unsupported.code, unsupported.message)
            return
        if last is None:
            # Only waiting (full, throttled, breaker open): no attempt is used up.
            delay = min(30.0, max(0.2, min(waits) if waits else 1.0)) * random.uniform(1.0, 1.2)
            await self.engine._schedule(task, now_ms() + int(delay * 1000))
            return
        if task.attempt + 1 >= MAX_DISPATCH_ATTEMPTS:
            await self.engine._fail(task, last.code, last.message)
            return
        delay = max([retry_backoff(task.attempt), *(w for w in waits if w < 300)])
        await self.engine._write(task, attempt=task.attempt + 1, next_run_at=now_ms() + int(delay * 1000))

    async def _release(self, task: Task, error: TaskError | None) -> Task | None:
        """The submit did not take effect: free the slot and forget the marker (keep a history line)."""
        history = _history(task, task.channel or "", error) if error else (task.upstream or {}).get("history")
        return await self.engine._write(
            task, channel=None, upstream={"history": history} if history else None
        )

    async def _submitted(self, task: Task, channel: Channel, submitted: Submitted) -> None:
        name = channel.config.name
        self.channels.health_of(name)  # keep the record alive
        now = now_ms()
        first = FIRST_POLL_MS.get(channel.config.type, DEFAULT_FIRST_POLL_MS)
        for _ in range(3):
            upstream = dict(task.upstream or {})
            upstream["submit"] = {**(upstream.get("submit") or {}), "ok": now}
            if submitted.raw:
                upstream["payload"] = submitted.raw
            new = await self.engine._write(
                task,
                upstream_id=submitted.upstream_id,
                status=submitted.status,
                started_at=now,
                upstream=upstream,
                next_run_at=now + first,
                event_detail=f"dispatched to {name}",
            )
            if new is not None:
                return
            current = await asyncio.to_thread(self.engine.repo.get, task.id)
            if current is not None and current.upstream_id is not None:
                return  # recorded by someone else
            if current is None or current.status.terminal:
                break
            task = current
        # The task was canceled (or deleted) while the submit was on its way: stop the upstream's work.
        try:
            await channel.cancel(replace(task, upstream_id=submitted.upstream_id))
        except Exception:
            log.warning("could not cancel the upstream task of %s", task.id, exc_info=True)

    async def _unknown(self, task: Task, channel: Channel, exc: SubmitUnknown) -> None:
        if not channel.idempotent_submit:
            await self.engine._fail(
                task,
                "submit_unknown",
                f"{exc.message}. The upstream may or may not have the task and cannot be asked without "
                "its id, so it is not sent again (docs/channels.md)",
            )
            return
        marker = dict((task.upstream or {}).get("submit") or {})
        tries = int(marker.get("tries", 1))
        if tries >= MAX_RESUBMITS:
            await self.engine._fail(task, "submit_unknown", f"{exc.message} (after {tries} tries)")
            return
        marker["error"] = exc.message[:500]
        delay = max(exc.retry_after or 0.0, retry_backoff(tries - 1, base=1.0, cap=60.0))
        await self.engine._write(
            task,
            upstream={**(task.upstream or {}), "submit": marker},
            next_run_at=now_ms() + int(delay * 1000),
        )

    async def resubmit(self, task: Task) -> None:
        """A submit was attempted and its outcome is unknown (an ambiguous failure, or the process
        stopped while it was on its way). Only an idempotent upstream is asked again, on the same
        channel with the same credential and key."""
        channel = self.channels.get(task.channel or "")
        if channel is None:
            await self.engine._fail(
                task,
                "submit_unknown",
                f"channel {task.channel!r} was removed while a submit to it was unresolved",
            )
            return
        if not channel.idempotent_submit:
            await self._unknown(
                task, channel, SubmitUnknown(f"channel {channel.config.name}: the submit was interrupted")
            )
            return
        health = self.channels.health_of(channel.config.name)
        wait = health.submit_wait()
        if wait > 0:
            await self.engine._schedule(task, now_ms() + int(min(wait, 60) * 1000))
            return
        marker = dict((task.upstream or {}).get("submit") or {})
        marker.update(tries=int(marker.get("tries", 1)) + 1, at=now_ms())
        new = await self.engine._write(task, upstream={**(task.upstream or {}), "submit": marker})
        if new is None:
            return
        task = new
        try:
            submitted = await channel.submit(task)
        except SubmitUnknown as exc:
            await self._unknown(task, channel, exc)
            return
        except TaskError as exc:
            if not exc.retryable or isinstance(exc, Unsupported):
                await self.engine._fail(task, exc.code, exc.message)
                return
            # Refused this time, but the first try may have created it: stay on this channel.
            await self._unknown(task, channel, SubmitUnknown(exc.message))
            return
        except Exception as exc:
            log.exception("resubmit to %s crashed for task %s", channel.config.name, task.id)
            await self._unknown(
                task, channel, SubmitUnknown(f"channel {channel.config.name}: {type(exc).__name__}")
            )
            return
        await self._submitted(task, channel, submitted)
