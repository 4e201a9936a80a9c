"""Delivery: claim outbox rows, render, build, send, and record the outcome of each.

No database transaction is open while a message is on the wire: claim commits,
``mark_sending`` commits when the transport calls back just before it writes the bytes
that end with DATA's final "." (the ``commit`` of ``Mailer.send``), and the outcome
commits after. Until then the row stays ``claimed``: a sender that dies or stops while
connecting or waiting for the server leaves nothing ambiguous. Every store call runs on
a thread (:func:`_db`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar

from pipeline.config import Config
from pipeline.cycle.compose import Composing, Job, Letter
from pipeline.cycle.plan import sender_address
from pipeline.domain import Envelope, Mailer
from pipeline.errors import (
    AmbiguousDeliveryError,
    BatchAbortedError,
    ClaimLostError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from pipeline.store import Delivery, Store

log = logging.getLogger("paperpost.deliver")

Clock = Callable[[], datetime]
_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _db(call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """A store call on a thread: the event loop (the other sending tasks, the daemon's
    web server) never waits for the database."""
    return await asyncio.to_thread(call, *args, **kwargs)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this host (this process always does). A
    zombie, dead but not yet reaped by its parent, counts as dead; a process of another
    user as alive. A pid reused by an unrelated process also looks alive: its claims wait
    for the stale-claim limit."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or no pid can be that large
        return False
    except OSError:  # PermissionError: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc (not Linux), or it exited a moment ago: assume alive
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] != "Z"


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


def preview_path(preview_dir: Path, email: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in email)
    return preview_dir / f"{safe}.html"


@dataclass(frozen=True, slots=True)
class DeliverSettings:
    """What delivery needs from the configuration, built once (:func:`deliver_settings`)."""

    sender: str  # the envelope sender (the bare address of [mail] from)
    concurrency: int  # messages in flight at once
    batch_size: int  # rows claimed at a time
    retry_max_age: timedelta  # a deferred digest older than this fails
    stale_claim: timedelta  # a claim older than this is returned by recovery
    at_least_once: bool  # [mail] ambiguous_policy
    preview_dir: Path
    # [bounces] VERP: the envelope sender of outbox row N (docs/bounces.md); else ``sender``
    return_path: Callable[[int], str] | None = None


def deliver_settings(config: Config) -> DeliverSettings:
    from pipeline.bounces.settings import verp_signer

    mail = config.file.mail
    verp = verp_signer(config)
    return DeliverSettings(
        sender=sender_address(config),
        concurrency=mail.concurrency,
        batch_size=mail.batch_size,
        retry_max_age=timedelta(hours=mail.retry_max_age_hours),
        stale_claim=timedelta(minutes=mail.stale_claim_minutes),
        at_least_once=mail.ambiguous_policy == "at-least-once",
        preview_dir=config.preview_dir,
        return_path=verp.address if verp is not None else None,
    )


class Deliverer:
    """Sends what the outbox holds. One instance per batch run."""

    def __init__(
        self,
        store: Store,
        settings: DeliverSettings,
        mailer: Mailer,
        composer: Composing,
        *,
        clock: Clock,
        holder: str,
        write_previews: bool = False,
        on_settled: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.mailer = mailer
        self.composer = composer
        self.clock = clock
        self.holder = holder
        self.write_previews = write_previews
        self.report = DeliverReport()
        self.stopping = asyncio.Event()
        self._abort = asyncio.Event()
        # Rows this run claimed and has not yet committed (``sending``) or settled: the
        # run gives back what is left when it ends, however it ends. None: not yet loaded.
        self._held: dict[int, Delivery | None] = {}
        # Outcomes since the last ``batch.sent`` record (one INFO line per batch_size
        # settled digests); ``on_settled`` is told of each (a progress display).
        self.on_settled = on_settled
        self._batch: Counter[str] = Counter()
        self._batches = 0

    def _settled(self, outcome: str) -> None:
        """One digest reached ``outcome`` (sent, failed, deferred, ambiguous, lost)."""
        if self.on_settled is not None:
            self.on_settled(outcome)
        self._batch[outcome] += 1
        if self._batch.total() >= self.settings.batch_size:
            self._log_batch()

    def _log_batch(self) -> None:
        if not self._batch:
            return
        self._batches += 1
        counts = {k: self._batch[k] for k in ("sent", "failed", "deferred", "ambiguous")}
        self._batch.clear()
        log.info(
            "batch %d: %d sent, %d failed, %d deferred, %d ambiguous",
            self._batches,
            *counts.values(),
            extra={"event": "batch.sent", "batch": self._batches, **counts},
        )

    async def recover(self) -> None:
        """Deal with rows a stopped sender left behind (see README: delivery guarantees):
        at once for processes of this host that are gone, after ``[mail]
        stale_claim_minutes`` for any other. Their ``claimed`` rows go back to the queue;
        their ``sending`` rows follow the ambiguous-delivery policy."""
        now = self.clock()
        host = socket.gethostname()
        dead, dead_stuck = await _db(
            self.store.recover_dead, host=host, alive=process_alive, now=now
        )
        if dead:
            log.warning(
                "returned %d digests claimed by stopped processes on %s to the queue", dead, host
            )
        stale_after = self.settings.stale_claim
        stale, stale_stuck = await _db(self.store.recover_stale, now=now, older_than=stale_after)
        if stale:
            log.warning("returned %d stale claimed digests to the queue", stale)
        for delivery_id in dict.fromkeys([*dead_stuck, *stale_stuck]):
            await self._ambiguous(delivery_id, "sender stopped during the SMTP exchange", now)

    async def run(self) -> DeliverReport:
        """Claim, compose and send until nothing is due, a stop is requested, or the run
        aborts (the server refused our login, a compose worker died).

        Three stages, each a little ahead of the next: rows are claimed a batch at a time as
        composing needs them; composing (here, or in worker processes) runs a few letters
        ahead of the ``concurrency`` sending tasks. Whatever is still only claimed when the
        run ends, stops, aborts or is cancelled (not yet committed by the transport just
        before DATA's final ".") goes back to the queue untouched.
        """
        await self.recover()
        concurrency = self.settings.concurrency
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
                delivery = self._held[letter.delivery_id]
                assert delivery is not None  # loaded before its job was composed
                try:
                    await self._one(delivery, letter)
                except BatchAbortedError as exc:
                    self._aborted(str(exc))
                    log.error("delivery batch aborted: %s", exc)

        composing = asyncio.create_task(compose())
        senders = [asyncio.create_task(send()) for _ in range(concurrency)]
        try:
            await asyncio.gather(*senders)
        finally:
            try:
                for task in (*senders, composing):
                    task.cancel()  # only those still running: a failed or cancelled run
                await asyncio.gather(*senders, composing, return_exceptions=True)
                await letters.aclose()
            finally:
                await self._give_back()  # also when cancelled (SIGTERM's grace ran out)
                self._log_batch()
        return self.report

    async def _give_back(self) -> None:
        """Return every row this run still holds ``claimed`` to the queue, untouched. The
        store call is shielded: a cancellation while it runs does not stop it."""
        ids, self._held = list(self._held), {}
        if not ids:
            return
        released = await asyncio.shield(
            asyncio.ensure_future(_db(self.store.release, ids, holder=self.holder))
        )
        if released:
            log.info("gave %d claimed digests back to the queue", released)

    def _aborted(self, reason: str) -> None:
        if self.report.aborted is None:
            self.report.aborted = reason
        self._abort.set()

    async def _claimed(self) -> AsyncIterator[Job]:
        """Jobs for the rows this sender claims, batch after batch, as composing asks."""
        batch_size = self.settings.batch_size
        while not self.stopping.is_set() and not self._abort.is_set():
            ids = await _db(
                self.store.claim, limit=batch_size, holder=self.holder, now=self.clock()
            )
            if not ids:
                return
            self._held.update(dict.fromkeys(ids))  # all, at once: given back if we stop
            # The rows and their readers; the composer reads the papers it needs. A row
            # that vanished between claim and load has nothing to send or release.
            heads = await _db(self.store.load_deliveries, ids, items=False)
            held = [heads[i] for i in ids if i in heads]
            for delivery_id in ids:
                if delivery_id not in heads:
                    del self._held[delivery_id]
            self._held.update((delivery.id, delivery) for delivery in held)
            for delivery in held:
                yield self._job(delivery)

    def _job(self, delivery: Delivery) -> Job:
        # The reader's schedule as the database holds it now (the period label, footer).
        return delivery.id, delivery.schedule

    async def _one(self, delivery: Delivery, letter: Letter) -> None:
        delivery_id = delivery.id
        if letter.data is None:
            await self._fail(delivery, letter.error or "not built", what="not built")
            return
        if letter.html is not None:
            path = preview_path(self.settings.preview_dir, delivery.email)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(letter.html, encoding="utf-8")
            self.report.previews[delivery.email] = path
        envelope = Envelope(
            sender=(
                self.settings.return_path(delivery.id)
                if self.settings.return_path is not None
                else self.settings.sender
            ),
            recipient=delivery.email,
            data=letter.data,
            message_id=delivery.message_id,
        )
        committed = False

        async def commit() -> bool:
            """The transport is about to write the bytes that end with the final ".": from
            here on the server may have the message, so the row is ``sending`` and no
            longer ours to give back. False: our claim was taken over; do not send."""
            nonlocal committed
            now = self.clock()
            if not await _db(self.store.mark_sending, delivery_id, holder=self.holder, now=now):
                return False
            committed = True
            self._held.pop(delivery_id, None)
            return True

        began = time.monotonic()
        try:
            reply = await self.mailer.send(envelope, commit=commit)
        except ClaimLostError:
            self._lost(delivery)
        except BatchAbortedError as exc:
            if committed:
                # Nothing of this message was accepted (the Mailer contract), but the row
                # is "sending" and cannot be given back: due again at once instead.
                now = self.clock()
                await _db(
                    self.store.mark_deferred,
                    delivery_id,
                    error=f"batch aborted: {exc}",
                    retry_at=now,
                    now=now,
                    holder=self.holder,
                )
            raise  # uncommitted, it is still claimed: the run gives it back with the rest
        except TransientDeliveryError as exc:
            await self._defer(delivery, str(exc))
        except PermanentDeliveryError as exc:
            await self._fail(delivery, str(exc), what="failed permanently")
        except AmbiguousDeliveryError as exc:
            await self._ambiguous(delivery_id, str(exc), self.clock(), holder=self.holder)
        else:
            self.report.send_seconds += time.monotonic() - began
            if not committed:  # a transport that ignores ``commit``: record it late
                log.error("the transport did not call commit for digest %d", delivery_id)
                if not await commit():
                    self._lost(delivery)
                    return
            await _db(self.store.mark_sent, delivery_id, reply=reply, now=self.clock())
            self.report.sent += 1
            self.report.delivered[delivery.email] = reply
            self._settled("sent")
            log.debug(  # one line per digest: -v only (the batch line is INFO)
                "sent digest %s to %s (%d papers): %s",
                delivery.period_key,
                delivery.email,
                letter.papers,
                reply,
                extra=_ids(delivery),
            )

    def _lost(self, delivery: Delivery) -> None:
        """Our claim went stale and the row went back to the queue (the recovery of another
        sender): whoever holds it now sends it, not us."""
        self._held.pop(delivery.id, None)
        self.report.lost_claims += 1
        self._settled("lost")
        log.warning(
            "digest %s for %s: no longer claimed by this sender, not sent",
            delivery.period_key,
            delivery.email,
            extra=_ids(delivery),
        )

    async def _fail(self, delivery: Delivery, error: str, *, what: str) -> None:
        now = self.clock()
        if not await _db(
            self.store.mark_failed, delivery.id, error=error, now=now, holder=self.holder
        ):
            self._lost(delivery)
            return
        self._held.pop(delivery.id, None)
        self.report.failed += 1
        self._settled("failed")
        log.error(
            "digest %s for %s %s: %s",
            delivery.period_key,
            delivery.email,
            what,
            error,
            extra=_ids(delivery),
        )

    async def _defer(self, delivery: Delivery, error: str) -> None:
        now = self.clock()
        max_age = self.settings.retry_max_age
        if now - delivery.created_at >= max_age:
            await self._fail(
                delivery, f"gave up after {max_age}: {error}", what="failed: still deferred"
            )
            return
        retry_at = now + retry_delay(delivery.attempts + 1)
        if not await _db(
            self.store.mark_deferred,
            delivery.id,
            error=error,
            retry_at=retry_at,
            now=now,
            holder=self.holder,
        ):
            self._lost(delivery)
            return
        self._held.pop(delivery.id, None)
        self.report.deferred += 1
        self._settled("deferred")
        log.warning(
            "digest for %s deferred until %s: %s",
            delivery.email,
            retry_at.isoformat(timespec="seconds"),
            error,
            extra=_ids(delivery),
        )

    async def _ambiguous(
        self, delivery_id: int, error: str, now: datetime, *, holder: str | None = None
    ) -> None:
        """The server may have accepted the message. Policy from [mail] ambiguous_policy.
        ``holder``: only if the row is still that sender's (None: a stopped sender's row)."""
        if self.settings.at_least_once:
            if await _db(
                self.store.mark_deferred,
                delivery_id,
                error=f"ambiguous, resending: {error}",
                retry_at=now,
                now=now,
                holder=holder,
            ):
                self.report.ambiguous += 1
                self._settled("ambiguous")
                log.warning(
                    "digest %d: delivery ambiguous (%s); resending with the same Message-ID",
                    delivery_id,
                    error,
                )
        elif await _db(self.store.mark_ambiguous, delivery_id, error=error, now=now):
            self.report.ambiguous += 1
            self._settled("ambiguous")
            log.warning(
                "digest %d: delivery ambiguous (%s); not resent (at-most-once)", delivery_id, error
            )
