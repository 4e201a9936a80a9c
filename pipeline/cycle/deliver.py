"""Delivery: claim outbox rows, render, build, send, and record the outcome of each.

No database transaction is open while a message is on the wire: claim commits,
``mark_sending`` commits just before the hand-off, and the outcome commits after.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.config import Config
from pipeline.cycle.digest import build_digest, message_headers
from pipeline.cycle.plan import sender_address
from pipeline.domain import Envelope, Mailer, Schedule
from pipeline.errors import (
    AmbiguousDeliveryError,
    BatchAbortedError,
    PaperpostError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from pipeline.mail import build_message
from pipeline.render import Renderer
from pipeline.store import Delivery, PaperCache, Store
from pipeline.web.tokens import TokenSigner

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
        renderer: Renderer,
        signer: TokenSigner,
        schedules: Mapping[str, Schedule],
        *,
        clock: Clock,
        holder: str,
        write_previews: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.mailer = mailer
        self.renderer = renderer
        self.signer = signer
        self.schedules = schedules
        self.clock = clock
        self.holder = holder
        self.write_previews = write_previews
        self.report = DeliverReport()
        self.stopping = asyncio.Event()
        self.papers: PaperCache = {}  # built once a run, reused while unchanged

    def recover(self) -> None:
        """Deal with rows a crashed sender left behind (see README: ambiguous deliveries)."""
        now = self.clock()
        reclaimed, stuck = self.store.recover_stale(now=now, older_than=STALE_CLAIM)
        if reclaimed:
            log.warning("returned %d stale claimed digests to the queue", reclaimed)
        for delivery_id in stuck:
            self._ambiguous(delivery_id, "sender stopped during the SMTP exchange", now)

    async def run(self) -> DeliverReport:
        """Claim and send batches until nothing is due, a stop is requested, or a batch aborts."""
        mail = self.config.file.mail
        self.recover()
        while not self.stopping.is_set() and self.report.aborted is None:
            ids = self.store.claim(limit=mail.batch_size, holder=self.holder, now=self.clock())
            if not ids:
                break
            await self._batch(ids, concurrency=mail.concurrency)
        return self.report

    async def _batch(self, ids: list[int], *, concurrency: int) -> None:
        # The claimed rows are ours: load them (and their papers) in one go, not per message.
        deliveries = self.store.load_deliveries(ids, papers=self.papers)
        queue = list(ids)
        abort = asyncio.Event()

        async def worker() -> None:
            while queue and not abort.is_set() and not self.stopping.is_set():
                delivery_id = queue.pop(0)
                try:
                    await self._one(deliveries[delivery_id])
                except BatchAbortedError as exc:
                    self.report.aborted = str(exc)
                    abort.set()
                    log.error("delivery batch aborted: %s", exc)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(ids)))))
        if queue:  # aborted or stopping: untouched rows go back, nothing marked
            self.store.release(queue)

    async def _one(self, delivery: Delivery) -> None:
        now = self.clock()
        delivery_id = delivery.id
        try:
            envelope = self._envelope(delivery, now=now)
        except PaperpostError as exc:
            # A hostile name or title that cannot be made safe: this recipient only.
            self.store.mark_failed(
                delivery_id, error=f"could not build the message: {exc}", now=now
            )
            self.report.failed += 1
            log.error(
                "digest %s for %s not built: %s",
                delivery.period_key,
                delivery.email,
                exc,
                extra=_ids(delivery),
            )
            return
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
                len(delivery.items),
                reply,
                extra=_ids(delivery),
            )

    def _envelope(self, delivery: Delivery, *, now: datetime) -> Envelope:
        schedule = self.schedules.get(delivery.email) or Schedule("daily", now.time(), "UTC")
        digest = build_digest(self.config, self.signer, delivery, schedule, now=now)
        rendered = self.renderer.render(digest)
        headers = message_headers(self.config, delivery, digest, rendered.subject, now=now)
        data = build_message(headers, rendered)
        if self.write_previews:
            path = preview_path(self.config, delivery.email)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered.html, encoding="utf-8")
            self.report.previews[delivery.email] = path
        return Envelope(
            sender=sender_address(self.config),
            recipient=delivery.email,
            data=data,
            message_id=delivery.message_id,
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
