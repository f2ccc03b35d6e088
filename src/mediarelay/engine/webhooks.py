"""Webhook delivery: a background loop that POSTs due outbox events, signed per Standard Webhooks.

Each attempt is signed afresh (`webhook-timestamp` is the attempt's time, so receivers can refuse stale
replays) over the same body and the same `webhook-id`: at-least-once, and receivers deduplicate by id.
A 2xx answer delivers the event; anything else, a refused connection or a timeout, retries on the
schedule (with jitter), then fails it. A destination the address policy refuses fails it at once.
The loop is driven by `next_attempt_at`, like the task driver, so a restart carries on where it was;
scaled out on PostgreSQL, procrastinate jobs call `deliver_task` instead (engine/jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from mediarelay import logs
from mediarelay.domain import now_ms
from mediarelay.netguard import Blocked, NetGuard, Unresolvable
from mediarelay.store.webhooks import DELIVERED, FAILED, PENDING, Outcome, WebhookEvent, WebhookRepo

log = logging.getLogger("mediarelay.webhooks")

IDLE_WAIT = 1.0  # also picks up events written by other processes within a second
MAX_RESPONSE_READ = 4096  # bytes of a receiver's answer read at most
MAX_RESPONSE_KEPT = 1024  # characters of it kept in the delivery log
JITTER = 0.1  # ±10 % on each retry delay; the default schedule still spans more than 24 h

Renderer = Callable[[WebhookEvent], Awaitable[str | None]]


def sign(secret: str, event_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` via the reference implementation."""
    return Webhook(secret).sign(event_id, datetime.fromtimestamp(timestamp, UTC), body)


def retry_delay(attempt: int, schedule: Sequence[float]) -> float | None:
    """Seconds before the attempt after `attempt` (1-based), or None when the schedule is used up."""
    if attempt > len(schedule):
        return None
    return max(0.0, schedule[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER))


class WebhookDispatcher:
    def __init__(
        self,
        repo: WebhookRepo,
        guard: NetGuard,
        render: Renderer,
        *,
        schedule: Sequence[float],
        timeout: float = 10.0,
        concurrency: int = 16,
    ) -> None:
        self.repo = repo
        self.guard = guard
        self.render = render
        self.schedule = tuple(schedule)
        self.timeout = timeout
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._loop(), name="mediarelay-webhooks")

    async def stop(self) -> None:
        """Stop sending; attempts cut short are not recorded and run again when their lease ends."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for job in list(self._inflight):
            job.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self.guard.aclose()

    @property
    def lease_ms(self) -> int:
        """How long a claimed event stays invisible to other scans: longer than any attempt can take."""
        return int((self.timeout + 30) * 1000)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                free = self.concurrency - len(self._inflight)
                if free > 0:
                    now = now_ms()
                    for event in await asyncio.to_thread(self.repo.claim_due, now, free, now + self.lease_ms):
                        job = asyncio.create_task(self._deliver(event), name=f"webhook-{event.id}")
                        self._inflight.add(job)
                        job.add_done_callback(self._done)
                next_at = await asyncio.to_thread(self.repo.next_due_at)
            except Exception:
                log.exception("webhook scan failed")
                next_at = None
            wait = IDLE_WAIT if next_at is None else min(IDLE_WAIT, max(0.0, (next_at - now_ms()) / 1000))
            if len(self._inflight) >= self.concurrency:
                wait = IDLE_WAIT  # full: a finishing delivery wakes us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def deliver_task(self, task_id: str) -> int | None:
        """Scaled-out mode's delivery job: the task's due event (if another process holds its lease,
        nothing), then when the task's next event is due. The loop above does not run there."""
        now = now_ms()
        for event in await asyncio.to_thread(
            self.repo.claim_due, now, 1, now + self.lease_ms, task_id=task_id
        ):
            await self._deliver(event)
        return await asyncio.to_thread(self.repo.next_due_at, task_id)

    def _done(self, job: asyncio.Task[None]) -> None:
        self._inflight.discard(job)
        self._wake.set()

    async def _deliver(self, event: WebhookEvent) -> None:
        token = logs.task_id.set(event.task_id)  # log lines of this delivery name its task
        try:
            await self._deliver_in_context(event)
        finally:
            logs.task_id.reset(token)

    async def _deliver_in_context(self, event: WebhookEvent) -> None:
        try:
            outcome = await self._attempt(event)
            await asyncio.to_thread(self.repo.record, event, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease ends and the event is tried again
            log.exception("webhook delivery crashed for %s", event.id)

    async def _attempt(self, event: WebhookEvent) -> Outcome:
        attempt = event.attempts + 1
        started = time.monotonic()
        at = now_ms()

        def finish(
            ok: bool,
            *,
            permanent: bool = False,
            status: int | None = None,
            error: str | None = None,
            body: str | None = None,
        ) -> Outcome:
            delay = None if ok or permanent else retry_delay(attempt, self.schedule)
            state = DELIVERED if ok else (PENDING if delay is not None else FAILED)
            if not ok:
                log.info(
                    "webhook %s attempt %d to %s failed: %s", event.id, attempt, event.url, error or status
                )
            return Outcome(
                attempt=attempt,
                at=at,
                duration_ms=int((time.monotonic() - started) * 1000),
                state=state,
                next_attempt_at=now_ms() + int(delay * 1000) if delay is not None else None,
                http_status=status,
                error=error,
                response=body,
            )

        body = event.payload
        if body is None:
            try:
                rendered = await self.render(event)
            except Exception as exc:  # a bug, not the receiver's fault: retried on the schedule
                log.exception("could not render webhook %s", event.id)
                return finish(False, error=f"could not render the event: {type(exc).__name__}")
            if rendered is None:
                return finish(False, permanent=True, error="the task no longer exists")
            body = await asyncio.to_thread(self.repo.set_payload, event.seq, rendered)
        _, secret = await asyncio.to_thread(self.repo.key_settings, event.key_id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, event.id, timestamp, body),
        }
        try:
            async with asyncio.timeout(self.timeout):
                async with self.guard.stream(
                    "POST", event.url, content=body.encode(), headers=headers
                ) as resp:
                    answer = await _read_prefix(resp)
        except Blocked as exc:
            return finish(False, permanent=True, error=str(exc))
        except Unresolvable as exc:
            return finish(False, error=str(exc))
        except TimeoutError:
            return finish(False, error=f"timed out after {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return finish(False, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        text = answer.decode("utf-8", "replace")[:MAX_RESPONSE_KEPT]
        return finish(200 <= resp.status_code < 300, status=resp.status_code, body=text)


async def _read_prefix(resp: httpx.Response) -> bytes:
    """The first bytes of an answer; the rest is not read (a receiver cannot make us download much)."""
    got = bytearray()
    async for chunk in resp.aiter_raw():
        got.extend(chunk)
        if len(got) >= MAX_RESPONSE_READ:
            break
    return bytes(got[:MAX_RESPONSE_READ])
