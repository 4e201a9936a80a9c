"""Delivery: claim outbox rows, render, build, send, and record the outcome of each.

No database transaction is open while a message is on the wire: claim commits,
``mark_sending`` commits just before the hand-off, and the outcome commits after.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.config import Config
from pipeline.cycle.compose import Composing, Job, Letter
from pipeline.cycle.plan import sender_address
from pipeline.domain import Envelope, Mailer, Schedule
from pipeline.errors import (
    AmbiguousDeliveryError,
    BatchAbortedError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from pipeline.store import Delivery, Store

log = logging.getLogger("paperpost.deliver")

Clock = Callable[[], datetime]
STALE_CLAIM = timedelta(minutes=10)


@dataclass
class DeliverReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    ambiguous: int = 0
    lost_claims: int = 0  # rows another sender took over after our claim went stale
    aborted: str | None = None
    send_seconds: float = 0.0  # hand-off to reply, summed over sent messages
    delivered: dict[str, str] = field(default_factory=dict)  # email -> transport reply / path
    previews: dict[str, Path] = field(default_factory=dict)  # email -> HTML preview file


def _ids(delivery: Delivery) -> dict[str, object]:
    """Structured fields for the JSON log format: who and which outbox row."""
    return {"subscriber": delivery.email, "delivery": delivery.id}


def retry_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter: 1, 2, 4 ... minutes, capped at one hour."""
    ceiling = min(60.0, 2.0 ** max(attempts - 1, 0))
    factor = (rng or random).uniform(0.5, 1.0)
    return timedelta(minutes=ceiling * factor)


def preview_path(config: Config, email: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in email)
    return config.preview_dir / f"{safe}.html"


class Deliverer:
    """Sends what the outbox holds. One instance per batch run."""

    def __init__(
        self,
        store: Store,
        config: Config,
        mailer: Mailer,
        composer: Composing,
        schedules: Mapping[str, Schedule],
        *,
        clock: Clock,
        holder: str,
        write_previews: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.mailer = mailer
        self.composer = composer
        self.schedules = schedules
        self.clock = clock
        self.holder = holder
        self.write_previews = write_previews
        self.report = DeliverReport()
        self.stopping = asyncio.Event()
        self._abort = asyncio.Event()
        self._held: dict[int, Delivery] = {}  # claimed, not yet taken by a sending task

    def recover(self) -> None:
        """Deal with rows a crashed sender left behind (see README: ambiguous deliveries)."""
        now = self.clock()
        reclaimed, stuck = self.store.recover_stale(now=now, older_than=STALE_CLAIM)
        if reclaimed:
            log.warning("returned %d stale claimed digests to the queue", reclaimed)
        for delivery_id in stuck:
            self._ambiguous(delivery_id, "sender stopped during the SMTP exchange", now)

    async def run(self) -> DeliverReport:
        """Claim, compose and send until nothing is due, a stop is requested, or the run
        aborts (the server refused our login, a compose worker died).

        Three stages, each a little ahead of the next: rows are claimed a batch at a time as
        composing needs them; composing (here, or in worker processes) runs a few letters
        ahead of the ``concurrency`` sending tasks. Whatever is claimed but not handed to a
        sending task when the run stops or aborts goes back to the queue untouched.
        """
        self.recover()
        concurrency = self.config.file.mail.concurrency
        letters = self.composer.letters(
            self._claimed(), clock=self.clock, keep_html=self.write_previews
        )
        queue: asyncio.Queue[Letter | None] = asyncio.Queue()
        room = asyncio.Semaphore(2 * concurrency)  # each composed letter holds a message

        async def compose() -> None:
            try:
                async for letter in letters:
                    await room.acquire()
                    queue.put_nowait(letter)
            except Exception as exc:  # a worker died, or a bug: stop, give the rows back
                self._aborted(f"composing digests failed: {exc!r}")
                log.exception("delivery aborted: composing digests failed")
            finally:
                for _ in range(concurrency):  # also when cancelled: never blocks
                    queue.put_nowait(None)

        async def send() -> None:
            while (letter := await queue.get()) is not None:
                room.release()
                if self._abort.is_set() or self.stopping.is_set():
                    return
                delivery = self._held.pop(letter.delivery_id)
                try:
                    await self._one(delivery, letter)
                except BatchAbortedError as exc:
                    self._aborted(str(exc))
                    log.error("delivery batch aborted: %s", exc)

        composing = asyncio.create_task(compose())
        try:
            await asyncio.gather(*(send() for _ in range(concurrency)))
        finally:
            composing.cancel()
            await asyncio.gather(composing, return_exceptions=True)
            await letters.aclose()
        if self._held:  # aborted or stopping: untouched rows go back, nothing marked
            self.store.release(list(self._held))
            self._held.clear()
        return self.report

    def _aborted(self, reason: str) -> None:
        if self.report.aborted is None:
            self.report.aborted = reason
        self._abort.set()

    async def _claimed(self) -> AsyncIterator[Job]:
        """Jobs for the rows this sender claims, batch after batch, as composing asks."""
        batch_size = self.config.file.mail.batch_size
        while not self.stopping.is_set() and not self._abort.is_set():
            ids = self.store.claim(limit=batch_size, holder=self.holder, now=self.clock())
            if not ids:
                return
            # The rows and their readers; the composer reads the papers it needs. A row
            # that vanished between claim and load has nothing to send or release.
            heads = self.store.load_deliveries(ids, items=False)
            held = [heads[i] for i in ids if i in heads]
            self._held.update((delivery.id, delivery) for delivery in held)  # all, at once
            for delivery in held:
                yield self._job(delivery)

    def _job(self, delivery: Delivery) -> Job:
        schedule = self.schedules.get(delivery.email)
        return delivery.id, schedule or Schedule("daily", self.clock().time(), "UTC")

    async def _one(self, delivery: Delivery, letter: Letter) -> None:
        delivery_id = delivery.id
        if letter.data is None:
            self.store.mark_failed(delivery_id, error=letter.error or "not built", now=self.clock())
            self.report.failed += 1
            log.error(
                "digest %s for %s not built: %s",
                delivery.period_key,
                delivery.email,
                letter.error,
                extra=_ids(delivery),
            )
            return
        if letter.html is not None:
            path = preview_path(self.config, delivery.email)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(letter.html, encoding="utf-8")
            self.report.previews[delivery.email] = path
        envelope = Envelope(
            sender=sender_address(self.config),
            recipient=delivery.email,
            data=letter.data,
            message_id=delivery.message_id,
        )
        if not self.store.mark_sending(delivery_id, holder=self.holder, now=self.clock()):
            # Our claim went stale and the row went back to the queue (recover_stale in
            # another sender): whoever holds it now sends it, not us.
            self.report.lost_claims += 1
            log.warning(
                "digest %s for %s: no longer claimed by this sender, not sent",
                delivery.period_key,
                delivery.email,
                extra=_ids(delivery),
            )
            return
        began = time.monotonic()
        try:
            reply = await self.mailer.send(envelope)
        except BatchAbortedError:
            self.store.release([delivery_id])
            raise
        except TransientDeliveryError as exc:
            self._defer(delivery, str(exc))
        except PermanentDeliveryError as exc:
            self.store.mark_failed(delivery_id, error=str(exc), now=self.clock())
            self.report.failed += 1
            log.error(
                "digest for %s failed permanently: %s", delivery.email, exc, extra=_ids(delivery)
            )
        except AmbiguousDeliveryError as exc:
            self._ambiguous(delivery_id, str(exc), self.clock())
        else:
            self.report.send_seconds += time.monotonic() - began
            self.store.mark_sent(delivery_id, reply=reply, now=self.clock())
            self.report.sent += 1
            self.report.delivered[delivery.email] = reply
            log.info(
                "sent digest %s to %s (%d papers): %s",
                delivery.period_key,
                delivery.email,
                letter.papers,
                reply,
                extra=_ids(delivery),
            )

    def _defer(self, delivery: Delivery, error: str) -> None:
        now = self.clock()
        max_age = timedelta(hours=self.config.file.mail.retry_max_age_hours)
        if now - delivery.created_at >= max_age:
            self.store.mark_failed(delivery.id, error=f"gave up after {max_age}: {error}", now=now)
            self.report.failed += 1
            log.error(
                "digest for %s failed: still deferred after %s: %s",
                delivery.email,
                max_age,
                error,
                extra=_ids(delivery),
            )
            return
        retry_at = now + retry_delay(delivery.attempts + 1)
        self.store.mark_deferred(delivery.id, error=error, retry_at=retry_at, now=now)
        self.report.deferred += 1
        log.warning(
            "digest for %s deferred until %s: %s",
            delivery.email,
            retry_at.isoformat(timespec="seconds"),
            error,
            extra=_ids(delivery),
        )

    def _ambiguous(self, delivery_id: int, error: str, now: datetime) -> None:
        """The server may have accepted the message. Policy from [mail] ambiguous_policy."""
        self.report.ambiguous += 1
        if self.config.file.mail.ambiguous_policy == "at-least-once":
            self.store.mark_deferred(
                delivery_id, error=f"ambiguous, resending: {error}", retry_at=now, now=now
            )
            log.warning(
                "digest %d: delivery ambiguous (%s); resending with the same Message-ID",
                delivery_id,
                error,
            )
        else:
            self.store.mark_ambiguous(delivery_id, error=error, now=now)
            log.warning(
                "digest %d: delivery ambiguous (%s); not resent (at-most-once)", delivery_id, error
            )
