"""The application layer: one object that owns the store, the settings and the factories
(mailer, signer, renderer), and exposes Paperpost's use cases.

The CLI, the daemon and the web backend call only this (``tests/test_layering.py`` says
so); the stage drivers in ``pipeline.cycle`` do the work. Every use case finds a reader by
id or address in the database, which is the source of truth for readers: the config's
subscribers reach it through ``sync``, bulk files through ``import_subscribers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import importlib.metadata
import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import __version__
from pipeline.config import Config, config_error
from pipeline.config.readers import read_subscribers
from pipeline.domain import Mailer, Reader
from pipeline.errors import EmbeddingError, PaperpostError
from pipeline.progress import Progress
from pipeline.schedule.periods import latest_due_period, next_due_period
from pipeline.store import (
    Delivery,
    DeliveryItem,
    OutboxEntry,
    PruneCounts,
    Run,
    SourceState,
    Store,
    SyncStats,
)
from pipeline.store.port import STATES
from pipeline.store.suppression import BounceRates

# The stage drivers are imported where a use case needs them: `paperpost status` or
# `outbox` loads the store, not the matcher, the renderer, the HTTP client or SMTP.
if TYPE_CHECKING:
    from pipeline.bounces.process import BounceReport
    from pipeline.cycle.deliver import DeliverReport, DeliverSettings
    from pipeline.cycle.health import Health
    from pipeline.cycle.plan import PlanReport, PlanSettings
    from pipeline.ingest.fetch import FetchPolicy
    from pipeline.ingest.run import SourceOutcome, SourceSpec
    from pipeline.match import Matcher
    from pipeline.render import Renderer
    from pipeline.web.readers import LinkedDigest, ManagedReader, ReaderForm
    from pipeline.web.tokens import TokenSigner

log = logging.getLogger("paperpost.app")

_IMPORT_CHUNK = 5_000  # readers per import transaction
_PLAN_BLOCK = 50_000  # readers loaded and matched at a time by App.plan

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def configured_clock(config: Config) -> Clock:
    """The clock the processes of ``config`` read: the simulated one of ``[testing]
    clock_file`` (testing only, pipeline/clock.py), else the system clock."""
    from pipeline.clock import config_clock

    return config_clock(config) or utc_now


def holder_name() -> str:
    """Who holds a claim or the scheduler lease: ``host:pid`` (dead-process recovery
    parses it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class UnknownReaderError(PaperpostError, LookupError):
    """No reader with that address in the database."""


class FitMismatchError(PaperpostError):
    """A ``plan_block`` job's refit read other inputs than its tick (papers changed since):
    the job fails and the next tick plans its readers, who are still due."""


@dataclass(frozen=True)
class PlanTick:
    """What a tick planned in blocks decided (:meth:`App.plan_tick`)."""

    now: datetime
    fit: str  # the digest of the matcher's inputs (pipeline.cycle.plan.fit_digest)
    subscriber_ids: list[int]  # the readers due, ascending


class RecipientRefusedError(PaperpostError):
    """``send-test`` to an unknown or unsubscribed address without ``force``."""


@dataclass(frozen=True)
class NextDigest:
    """A reader's next digest as it stands (:meth:`App.next_digest`): its HTML and
    subject, or ``nothing``, the reason nothing would be sent."""

    email: str
    period_key: str
    due_at: datetime
    subject: str | None = None
    html: str | None = None
    papers: int = 0
    nothing: str | None = None


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`App.prune` deleted (a dry run: would delete), per table."""

    cutoff: datetime  # rows older than this went
    dry_run: bool
    counts: PruneCounts


@dataclass
class CycleReport:
    sources: list[SourceOutcome]
    plan: PlanReport
    deliver: DeliverReport


class App:
    """Paperpost's use cases over one store and one configuration.

    ``store`` is opened on first use (and closed by :meth:`close`) unless one is given.
    ``reconfigure`` swaps the configuration (a daemon's reload) without reopening it.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        clock: Clock = utc_now,
        holder: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.holder = holder or holder_name()
        self._store = store
        self._own_store = store is None
        # plan_block's fitted matchers by fit digest (the ticks in progress), and how many
        # times this process fitted one (the runner's tests count them).
        self._fitted: dict[str, Matcher] = {}
        self._fit_lock = threading.Lock()
        self.fits = 0

    @cached_property
    def planning(self) -> PlanSettings:
        """What planning needs from the config, built once per configuration."""
        from pipeline.cycle.plan import plan_settings

        return plan_settings(self.config)

    @cached_property
    def delivering(self) -> DeliverSettings:
        """What delivery needs from the config, built once per configuration."""
        from pipeline.cycle.deliver import deliver_settings

        return deliver_settings(self.config)

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = Store.open(self.config.database_url)
            except ImportError as exc:  # the driver is an extra: say which, no traceback
                problem = database_driver_problem(self.config.database_url, missing=exc.name)
                raise PaperpostError(problem or str(exc)) from None
        return self._store

    def close(self) -> None:
        if self._store is not None and self._own_store:
            self._store.close()
            self._store = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def reconfigure(self, config: Config) -> None:
        if config.database_url != self.config.database_url:
            raise PaperpostError("database.url changed; restart to switch databases")
        self.config = config
        for built in ("planning", "delivering"):  # rebuilt from the new config when next used
            self.__dict__.pop(built, None)

    # -- factories ---------------------------------------------------------------------------
    def mailer(self) -> Mailer:
        from pipeline.mail import MaildirMailer, SmtpMailer, SmtpSettings

        mail = self.config.file.mail
        if mail.transport == "maildir":
            return MaildirMailer(self.config.maildir)
        smtp = mail.smtp
        assert smtp is not None  # the config model guarantees it for transport = "smtp"
        return SmtpMailer(
            SmtpSettings(
                host=smtp.host,
                port=smtp.port,
                security=smtp.security,
                username=smtp.username,
                password=self.config.secrets.smtp_password,
                timeout=smtp.timeout_seconds,
                data_timeout=smtp.data_timeout_seconds,
                pool_size=smtp.pool_size,
                rate_per_second=smtp.rate_per_second or None,  # 0 = unlimited
                max_per_connection=smtp.max_per_connection,
                helo_name=smtp.helo_name,
                ca_file=self.config.path.parent / smtp.ca_file if smtp.ca_file else None,
                validate_certs=smtp.validate_certs,
            )
        )

    def signer(self) -> TokenSigner:
        from pipeline.cycle.compose import make_signer

        return make_signer(self.config)

    def renderer(self) -> Renderer:
        from pipeline.cycle.compose import make_renderer

        return make_renderer(self.config)

    def _fetch_policy(self) -> FetchPolicy:
        from pipeline.ingest.fetch import FetchPolicy

        ing = self.config.file.ingest
        contact = f" ({ing.contact})" if ing.contact else ""
        return FetchPolicy(
            connect_timeout=ing.connect_timeout_seconds,
            read_timeout=ing.read_timeout_seconds,
            deadline=ing.deadline_seconds,
            max_bytes=ing.max_bytes,
            max_decoded_bytes=ing.max_decoded_bytes,
            max_concurrency=ing.concurrency,
            user_agent=f"Paperpost/{__version__} (+https://github.com/paperpost/paperpost)"
            + contact,
        )

    # -- readers -----------------------------------------------------------------------------
    def sync(self, *, now: datetime | None = None) -> SyncStats:
        """Write the config's subscribers and sources into the database (the config's one
        writer; idempotent, safe in several processes at once). Suppressions win."""
        now = now or self.clock()
        config = self.config
        stats = self.store.sync_subscribers(config.subscribers(), now=now)
        if stats.added or stats.removed or stats.updated:
            log.info(
                "subscribers synced: %d added, %d updated, %d removed, %d suppressed",
                stats.added,
                stats.updated,
                stats.removed,
                stats.suppressed,
            )
        self.store.sync_sources(
            [(s.name, s.kind, config.source_location(s)) for s in config.sources]
        )
        return stats

    def reader(self, email: str) -> Reader:
        """The reader with this address; :class:`UnknownReaderError` when there is none."""
        reader = self.store.reader_by_email(email)
        if reader is None:
            raise UnknownReaderError(
                f"no subscriber {email!r} in the database (subscribers of {self.config.path} "
                "arrive there with the next run, daemon start or reload)"
            )
        return reader

    def readers(
        self, *, statuses: Collection[str] | None = None, origin: str | None = None
    ) -> list[Reader]:
        return list(self.store.list_readers(statuses=statuses, origin=origin))

    def import_subscribers(
        self, path: Path, *, now: datetime | None = None, progress: Progress | None = None
    ) -> SyncStats:
        """Add or update readers from a CSV or JSON Lines file (validated like the config's
        ``[[subscribers]]``; every bad record is reported with its line, nothing is written
        unless the whole file is valid). The valid file is written ``_IMPORT_CHUNK``
        readers per transaction, so a progress display can follow a large one; importing
        the same file again after an interruption completes it (the upsert is
        idempotent)."""
        now = now or self.clock()
        show = progress or Progress()
        show.start("read", f"validating {path.name}")
        subscribers = read_subscribers(path)
        show.finish("read", f"{len(subscribers)} valid records")
        show.start("import", "importing readers", len(subscribers))
        totals = SyncStats(added=0, updated=0, removed=0, suppressed=0)
        for begin in range(0, len(subscribers), _IMPORT_CHUNK):
            chunk = subscribers[begin : begin + _IMPORT_CHUNK]
            stats = self.store.import_subscribers(chunk, now=now)
            totals = SyncStats(
                **{
                    f.name: getattr(totals, f.name) + getattr(stats, f.name)
                    for f in dataclasses.fields(SyncStats)
                }
            )
            show.advance("import", len(chunk))
        show.finish("import", f"{totals.added} added, {totals.updated} updated")
        return totals

    def unsubscribe(self, email: str, *, now: datetime | None = None, reason: str = "link") -> bool:
        changed = self.store.unsubscribe(email, now=now or self.clock(), reason=reason)
        if changed:
            log.info(
                "unsubscribed %s (%s)",
                email,
                reason,
                extra={"event": "unsubscribe", "subscriber": email, "reason": reason},
            )
        return changed

    def resubscribe(self, email: str, *, now: datetime | None = None) -> bool:
        return self.store.resubscribe(email.strip().lower(), now=now or self.clock())

    def record_feedback(
        self, email: str, paper_id: str, signal: str, *, now: datetime | None = None
    ) -> bool:
        recorded = self.store.record_feedback(email, paper_id, signal, now=now or self.clock())
        if recorded:
            log.info(
                "feedback %s on %s from %s",
                signal,
                paper_id,
                email,
                extra={
                    "event": "feedback",
                    "subscriber": email,
                    "paper": paper_id,
                    "signal": signal,
                },
            )
        return recorded

    # -- the reader's own pages: subscribe, confirm, manage (docs/readers.md) -----------------
    def request_signup(
        self, email: str, form: ReaderForm, *, now: datetime | None = None
    ) -> Callable[[], None] | None:
        """Validate a subscribe form (``FormError``) and record a pending self-service
        reader. Returns what mails its one confirmation link (only for a ``created`` or
        ``renewed`` sign-up; None for a known or suppressed address). The web page answers
        first and sends after, so how long the answer takes says nothing about whether the
        address was known. Blocking: call both off the event loop."""
        import secrets

        from pipeline.cycle.signup import subscriber_from_form

        now = now or self.clock()
        subscriber = subscriber_from_form(self.config, email, form)
        signup = self.store.add_pending(subscriber, nonce=secrets.token_urlsafe(24), now=now)
        if signup.nonce is None:
            log.info("sign-up for a known or suppressed address: nothing sent")
            return None
        pending = self.store.reader_by_email(subscriber.email)
        if pending is None:  # erased between the two statements: nothing to confirm
            log.warning(
                "sign-up for %s vanished before its confirmation was sent", subscriber.email
            )
            return None
        token = self.signer().reader_token(
            subscriber_id=pending.id, purpose="confirm", nonce=signup.nonce, now=now
        )
        url = f"{self.config.file.web.base_url}/confirm/{token}"

        def send() -> None:
            try:
                asyncio.run(self._send_confirmation(subscriber.email, url, now))
            except PaperpostError as exc:  # the page answered as always; the reader may retry
                log.error("could not send the confirmation to %s: %s", subscriber.email, exc)

        return send

    async def _send_confirmation(self, email: str, url: str, now: datetime) -> None:
        from pipeline.cycle.signup import confirmation_envelope

        mailer = self.mailer()
        try:
            await mailer.send(confirmation_envelope(self.config, email, url, now=now))
        finally:
            await mailer.aclose()
        log.info("confirmation link sent to %s", email)

    def confirm_signup(self, email: str, nonce: str, *, now: datetime | None = None) -> bool:
        lifetime = timedelta(hours=self.config.file.web.confirm_hours)
        return self.store.confirm_signup(email, nonce, now=now or self.clock(), lifetime=lifetime)

    def expire_signups(self, *, now: datetime | None = None) -> int:
        """Delete the sign-ups nobody confirmed in time (``[web] confirm_hours``)."""
        lifetime = timedelta(hours=self.config.file.web.confirm_hours)
        expired = self.store.expire_signups(now=now or self.clock(), lifetime=lifetime)
        if expired:
            log.info("%d unconfirmed sign-ups expired", expired)
        return expired

    def prune(
        self, *, now: datetime | None = None, dry_run: bool = False, batch_size: int | None = None
    ) -> PruneReport:
        """Delete the history older than ``[database] retention_days`` (default 400):
        ``paperpost prune``, and daily in the daemon. One implementation,
        :meth:`Store.prune` (pipeline/store/retention.py, which states the rules):

        - outbox rows ``sent``, ``skipped``, ``failed`` or ``cancelled``, created (and
          sent) before the cutoff, with their items and reserved papers; never a row still
          on its way (``pending``, ``claimed``, ``sending``, ``deferred``, ``ambiguous``),
          each reader's newest row and newest covered window (planning reads it), nor the
          row of the period each active reader's schedule has due now: no period is ever
          planned twice;
        - runs finished before the cutoff (never an unfinished one);
        - bounce events received before the cutoff.

        Papers, feedback, subscribers and suppressions are never deleted. The setting is
        checked at load to outlive every digest link (a link names its outbox row) and the
        bounce windows. ``dry_run``: count what would go, delete nothing.
        """
        now = now or self.clock()
        cutoff = now - timedelta(days=self.config.file.database.retention_days)
        # The period each active (or paused) reader's schedule has due now: planning looks
        # for its row, however old (a schedule that fires rarely).
        keep = set()
        for reader_id, schedule in self.store.active_schedules().items():
            period = latest_due_period(schedule, now)
            if period is not None:
                keep.add((reader_id, period.key))
        extra = {} if batch_size is None else {"batch_size": batch_size}
        counts = self.store.prune(cutoff=cutoff, keep=keep, dry_run=dry_run, **extra)
        log.info(
            "%s history older than %s: %d digests, %d digest items, %d reserved papers, "
            "%d runs, %d bounce events",
            "would prune" if dry_run else "pruned",
            cutoff.isoformat(timespec="seconds"),
            counts.deliveries,
            counts.delivery_items,
            counts.sent_items,
            counts.runs,
            counts.bounce_events,
            extra={
                "event": "pruned",
                "dry_run": dry_run,
                "cutoff": cutoff.isoformat(),
                **counts.as_dict(),
            },
        )
        return PruneReport(cutoff=cutoff, dry_run=dry_run, counts=counts)

    def managed_reader(self, email: str, *, now: datetime | None = None) -> ManagedReader | None:
        from pipeline.cycle.signup import managed_view

        record = self.store.reader_record(email)
        return managed_view(record, now=now or self.clock()) if record else None

    def edit_reader(self, email: str, form: ReaderForm, *, now: datetime | None = None) -> bool:
        """The manage page's preferences form (``FormError`` for bad input). A config
        reader's edits are kept as overrides that win over the file until reset."""
        from pipeline.cycle.signup import editable_values, subscriber_from_form

        record = self.store.reader_record(email)
        if record is None:
            return False
        base = record.reader.subscriber
        edited = subscriber_from_form(self.config, base.email, form, base=base)
        return self.store.edit_reader(email, editable_values(edited), now=now or self.clock())

    def reset_overrides(self, email: str, *, now: datetime | None = None) -> bool:
        """Drop the reader's own edits; the file's settings are written back at once."""
        now = now or self.clock()
        if not self.store.reset_overrides(email, now=now):
            return False
        self.sync(now=now)
        return True

    def pause(self, email: str, weeks: int, *, now: datetime | None = None) -> bool:
        """No digests for ``weeks`` weeks (0: resume now)."""
        now = now or self.clock()
        until = now + timedelta(weeks=weeks) if weeks > 0 else None
        return self.store.pause(email, until, now=now)

    def undo_feedback(self, email: str, paper_id: str, *, now: datetime | None = None) -> bool:
        return self.store.undo_feedback(email, paper_id, now=now or self.clock())

    def resubscribe_reader(self, email: str, *, now: datetime | None = None) -> bool:
        """The reader's own resubscribe (manage page); refused for a suppressed address."""
        return self.store.resubscribe_reader(email, now=now or self.clock())

    def export_reader(self, email: str) -> dict[str, object] | None:
        return self.store.export_reader(email)

    def erase_reader(self, email: str, *, now: datetime | None = None) -> bool:
        return self.store.erase_reader(email, now=now or self.clock())

    # -- the cycle ---------------------------------------------------------------------------
    async def ingest(
        self,
        *,
        now: datetime | None = None,
        sources: Collection[str] | None = None,
        progress: Progress | None = None,
        run: int | None = None,
    ) -> list[SourceOutcome]:
        """Fetch the enabled sources (``sources``: only these names), store new papers, and
        fetch the metadata of liked papers the database lacks. Each source logs its own
        ``source.fetched`` or ``source.failed`` record (pipeline.ingest.run).

        The run is recorded as started (committed) before it writes a paper, and its new
        papers are stamped with a clock reading taken after that commit
        (:meth:`start_ingest_run`); ``run`` is one started already (a runner's job, whose
        ``now`` is that stamp). Planning ends its windows before an unfinished run's
        start, so nothing this run commits late lands in a window already closed
        (docs/ingest.md, "Late commits")."""
        from pipeline.ingest.run import SourceSpec

        if run is not None and now is not None:
            run_id, stamp = run, now
        else:
            run_id, stamp = await asyncio.to_thread(self.start_ingest_run)
            now = now or stamp
        config, store = self.config, self.store
        specs = [
            SourceSpec(
                name=s.name,
                kind=s.kind,
                url=config.source_location(s),
                allow_private=s.allow_private,
            )
            for s in config.sources
            if s.enabled and (sources is None or s.name in sources)
        ]
        show = progress or Progress()
        show.start("ingest", "fetching sources", len(specs))
        # Building the HTTP client loads the CA bundle (tens of ms of CPU): off the loop.
        try:
            outcomes = await self._ingest_run(specs, now=now, show=show, stamp=stamp, run=run_id)
        except BaseException as exc:  # finish the run, so it no longer holds planning back
            error = f"the run stopped: {type(exc).__name__}"
            await asyncio.to_thread(
                store.finish_run,
                run_id,
                finished=self.clock(),
                summary={s.name: {"ok": False, "new": 0, "error": error} for s in specs},
            )
            raise
        failed = sum(1 for o in outcomes if not o.ok)
        show.finish(
            "ingest",
            f"{sum(o.new for o in outcomes)} new papers" + (f", {failed} failed" if failed else ""),
        )
        await asyncio.to_thread(
            store.finish_run,
            run_id,
            finished=self.clock(),
            summary={o.name: {"ok": o.ok, "new": o.new, "error": o.error} for o in outcomes},
        )
        return outcomes

    async def _ingest_run(
        self,
        specs: Sequence[SourceSpec],
        *,
        now: datetime,
        show: Progress,
        stamp: datetime,
        run: int,
    ) -> list[SourceOutcome]:
        """:meth:`ingest`'s fetching and saving, inside its recorded run."""
        from pipeline.ingest.fetch import Fetcher
        from pipeline.ingest.run import fetch_papers_by_id, ingest_sources

        config, store = self.config, self.store
        # Building the HTTP client loads the CA bundle (tens of ms of CPU): off the loop.
        fetcher = await asyncio.to_thread(Fetcher, self._fetch_policy())
        try:
            outcomes = await ingest_sources(
                store,
                specs,
                fetcher,
                now=now,
                failure_alert=config.file.ingest.alert_after_failures,
                on_outcome=lambda _outcome: show.advance("ingest"),
                stamp=stamp,
                run=run,
            )
            liked = await asyncio.to_thread(store.liked_paper_ids)
            missing = sorted(liked - set(await asyncio.to_thread(store.papers_by_id, liked)))
            if missing:
                try:
                    await fetch_papers_by_id(
                        store,
                        missing,
                        fetcher,
                        now=now,
                        stamp=stamp,
                        run=run,
                    )
                except Exception as exc:  # the liked papers are an improvement, never a blocker
                    log.warning("could not fetch metadata of liked papers %s: %s", missing, exc)
        finally:
            await fetcher.aclose()
        return outcomes

    def start_ingest_run(self) -> tuple[int, datetime]:
        """Record an ingest run as started (committed), then read the stamp its new papers
        carry: (run id, stamp). A plan that did not see the run read its instant before
        the commit, so before the stamp; one that sees it ends its windows before the
        run's start (the store's ingest fence). The runner's deferrer calls this and
        passes both to the job (blocking: off the loop)."""
        run_id = self.store.start_run("ingest", started=self.clock())
        return run_id, self.clock()

    def finish_ingest_run(self, run_id: int, summary: dict[str, object]) -> None:
        """Close a started run that will not run (its job was already queued)."""
        self.store.finish_run(run_id, finished=self.clock(), summary=dict(summary))

    def plan(self, *, now: datetime | None = None) -> PlanReport:
        """Write the outbox rows of every digest now due (blocking: call it off the loop).

        The readers due are found by id; the period's matcher is fitted once (on what a
        runner's ticks fit on, :func:`~pipeline.cycle.plan.fit_corpus`); then
        ``_PLAN_BLOCK`` readers at a time are loaded, matched and written, as a runner's
        ``plan_block`` jobs do, so memory holds one block's readers and matches, not
        every reader's."""
        from pipeline.cycle.plan import PlanReport, due_among, due_ids, fit_corpus, plan_due
        from pipeline.match import Matcher

        now = now or self.clock()
        with self._model_errors():
            ids = due_ids(self.store, now=now)
            report = PlanReport()
            if not ids:
                return report
            corpus = fit_corpus(self.store, self.planning, now=now)
            matcher = Matcher.fit(corpus, self.planning.match)
            for begin in range(0, len(ids), _PLAN_BLOCK):
                due = due_among(self.store, ids[begin : begin + _PLAN_BLOCK], now=now)
                report = report.add(
                    plan_due(self.store, self.planning, due, now=now, matcher=matcher)
                )
            return report

    def plan_tick(self, *, now: datetime | None = None) -> PlanTick:
        """The clock's half of a tick planned in blocks (runner = "procrastinate"): the
        readers due now, by id, and the digest of the matcher's inputs that the blocks'
        :meth:`plan_block` fits must match. Nothing is fitted or written here."""
        from pipeline.cycle.plan import due_ids, fit_corpus, fit_digest

        now = now or self.clock()
        due = due_ids(self.store, now=now)
        fit = fit_digest(fit_corpus(self.store, self.planning, now=now), self.planning)
        return PlanTick(now=now, fit=fit, subscriber_ids=due)

    def plan_block(self, *, now: datetime, subscriber_ids: Sequence[int], fit: str) -> PlanReport:
        """A runner's planning job: write the outbox rows of the readers among
        ``subscriber_ids`` still due at ``now`` (the tick's instant), with the matcher of
        the tick. The matcher is fitted once per process and tick: a process that lacks
        ``fit`` fits it from the store and refuses (:class:`FitMismatchError`) when what it
        read is not what the tick saw. Running a block twice writes nothing twice: a
        reader with a row for the period is not due any more (blocking: off the loop)."""
        from pipeline.cycle.plan import due_among, plan_due

        with self._model_errors():
            matcher = self._tick_matcher(now, fit)
            due = due_among(self.store, subscriber_ids, now=now)
            return plan_due(self.store, self.planning, due, now=now, matcher=matcher)

    def _tick_matcher(self, now: datetime, fit: str) -> Matcher:
        from pipeline.cycle.plan import fit_corpus, fit_digest
        from pipeline.match import Matcher

        with self._fit_lock:  # one fit per process even with several jobs in threads
            matcher = self._fitted.get(fit)
            if matcher is not None:
                return matcher
            began = time.monotonic()
            corpus = fit_corpus(self.store, self.planning, now=now)
            found = fit_digest(corpus, self.planning)
            if found != fit:
                raise FitMismatchError(
                    f"the papers or match settings at {now.isoformat()} changed since the "
                    f"tick (fit {fit}, found {found}): this block is left to the next tick"
                )
            matcher = Matcher.fit(corpus, self.planning.match)
            self.fits += 1
            while len(self._fitted) >= 2:  # a tick still finishing, and the newest
                del self._fitted[next(iter(self._fitted))]
            self._fitted[fit] = matcher
            log.info(
                "matcher fitted for the tick at %s on %d papers in %.1f s (fit %s)",
                now.isoformat(timespec="seconds"),
                len(corpus),
                time.monotonic() - began,
                fit,
                extra={"event": "matcher.fitted", "fit": fit, "papers": len(corpus)},
            )
            return matcher

    async def deliver(
        self,
        *,
        mailer: Mailer | None = None,
        write_previews: bool = False,
        stopping: asyncio.Event | None = None,
        progress: Progress | None = None,
        holder: str | None = None,
    ) -> DeliverReport:
        """Send what the outbox holds that is due (claims held as ``holder``, default this
        process's ``host:pid``)."""
        from pipeline.cycle.compose import make_composer
        from pipeline.cycle.deliver import Deliverer

        own_mailer = mailer is None
        mailer = mailer or self.mailer()
        composer = make_composer(self.config, self.store)
        deliverer = Deliverer(
            self.store,
            self.delivering,
            mailer,
            composer,
            clock=self.clock,
            holder=holder or self.holder,
            write_previews=write_previews,
            on_settled=(lambda _outcome: progress.advance("deliver")) if progress else None,
        )
        if stopping is not None:
            deliverer.stopping = stopping  # SIGTERM: finish the messages in hand, claim no more
        try:
            return await deliverer.run()
        finally:
            await asyncio.to_thread(composer.close)
            if own_mailer:
                await mailer.aclose()

    async def deliver_batch(
        self, *, holder: str, mailer: Mailer, stopping: asyncio.Event | None = None
    ) -> DeliverReport:
        """A runner's delivery job: :meth:`deliver` as ``holder`` (``host:pid:job-N``, so a
        re-run of the job cannot pass for it) through the worker's long-lived ``mailer``.
        The outbox claim decides who sends what: a job that runs twice sends nothing twice."""
        return await self.deliver(mailer=mailer, stopping=stopping, holder=holder)

    async def ingest_source(
        self, name: str, *, now: datetime | None = None, run: int | None = None
    ) -> SourceOutcome:
        """A runner's ingest job: fetch one enabled source by name (see :meth:`ingest`);
        ``run`` and ``now``: the run its deferrer started and its stamp."""
        outcomes = await self.ingest(now=now, sources={name}, run=run)
        if not outcomes:
            raise PaperpostError(f"no enabled source {name!r} in {self.config.path}")
        return outcomes[0]

    async def dispatch(
        self,
        *,
        mailer: Mailer | None = None,
        write_previews: bool = False,
        stopping: asyncio.Event | None = None,
        progress: Progress | None = None,
    ) -> tuple[PlanReport, DeliverReport]:
        """Plan every due digest, then send everything the outbox holds that is due."""
        now = self.clock()
        show = progress or Progress()
        # Planning is CPU and database work: off the event loop, so the daemon's web
        # endpoints keep answering while a large tick is matched.
        log.info("planning the digests due at %s", now.isoformat(timespec="seconds"))
        show.start("plan", "planning due digests")
        began = time.monotonic()
        plan = await asyncio.to_thread(self.plan, now=now)
        seconds = round(time.monotonic() - began, 3)
        papers = sum(plan.items.values())
        log.info(
            "planned %d digests (%d papers) for %d due readers in %.1f s (%d with nothing "
            "new skipped); delivering",
            plan.planned,
            papers,
            plan.due,
            seconds,
            plan.skipped_empty,
            extra={
                "event": "period.planned",
                "readers": plan.due,
                "planned": plan.planned,
                "papers": papers,
                "skipped_empty": plan.skipped_empty,
                "already_planned": plan.already_planned,
                "seconds": seconds,
            },
        )
        show.finish("plan", f"{plan.planned} planned for {plan.due} due readers")
        if progress is not None:
            pending = await asyncio.to_thread(self.store.outbox_counts)
            show.start("deliver", "sending digests", pending.get("pending", 0))
        report = await self.deliver(
            mailer=mailer, write_previews=write_previews, stopping=stopping, progress=progress
        )
        show.finish("deliver", _deliver_note(report))
        summary: dict[str, object] = {
            "planned": plan.planned,
            "sent": report.sent,
            "deferred": report.deferred,
            "failed": report.failed,
            "ambiguous": report.ambiguous,
        }
        if report.aborted:
            summary["aborted"] = report.aborted
        await asyncio.to_thread(
            self.store.record_run, "dispatch", started=now, finished=self.clock(), summary=summary
        )
        log.log(
            logging.ERROR if run_failed(report) else logging.INFO,
            "dispatch finished: %s",
            _deliver_note(report),
            extra={
                "event": "dispatch.finished",
                **summary,
                "seconds": round(time.monotonic() - began, 3),
            },
        )
        return plan, report

    async def run_once(
        self,
        *,
        mailer: Mailer | None = None,
        write_previews: bool = False,
        progress: Progress | None = None,
    ) -> CycleReport:
        """One full cycle now: sync, ingest every source, plan what is due, deliver."""
        now = self.clock()
        await asyncio.to_thread(self.sync, now=now)
        outcomes = await self.ingest(now=now, progress=progress)
        plan, delivered = await self.dispatch(
            mailer=mailer, write_previews=write_previews, progress=progress
        )
        return CycleReport(sources=outcomes, plan=plan, deliver=delivered)

    # -- looking without sending -------------------------------------------------------------
    def next_digest(self, email: str, *, now: datetime | None = None) -> NextDigest:
        """The reader's next digest as planning would make it now (their window up to
        now, the same matcher, the papers already reserved left out) and as delivery
        would render it; or why nothing would be sent (the reader is not active, or
        nothing matched and their ``on_empty`` is ``skip``). Sends and records nothing."""
        from pipeline.cycle.plan import match_inputs

        now = now or self.clock()
        reader = self.reader(email)
        subscriber = reader.subscriber
        # The next send: the period due now if planning has not reached it yet, or the
        # row already planned and waiting (sent as frozen), else the next period.
        period = latest_due_period(subscriber.schedule, now)
        rows = (
            self.store.list_deliveries(subscriber_id=reader.id, period_key=period.key, limit=1)
            if period is not None
            else []
        )
        if period is None or (rows and rows[0].status != "pending"):
            period = next_due_period(subscriber.schedule, now)
        elif rows and reader.status == "active":
            planned = self.store.load_delivery(rows[0].id)
            if planned is not None:
                return self._render_next(planned, now=now)
        if reader.status != "active":
            return NextDigest(
                subscriber.email,
                period.key,
                period.due_at,
                nothing=f"the reader is {reader.status}",
            )
        with self._model_errors():
            inputs = match_inputs(self.store, self.planning, [reader], now=now)
        [items] = inputs.matcher.match(
            [inputs.profiles[reader.id]],
            inputs.window(reader.id),
            exclude_ids=[inputs.reserved.get(reader.id, set())],
            liked=inputs.liked,
            coreaders=inputs.coreaders,
        )
        if not items and subscriber.on_empty == "skip":
            return NextDigest(
                subscriber.email,
                period.key,
                period.due_at,
                nothing="no new papers match, and the reader's on_empty is skip",
            )
        by_id = {p.id: p for p in inputs.papers}
        delivery = Delivery(
            id=0,
            subscriber_id=reader.id,
            email=subscriber.email,
            name=subscriber.name,
            period_key=period.key,
            status="preview",
            attempts=0,
            message_id="<preview@paperpost>",
            window_start=inputs.starts[reader.id],
            window_end=now,
            created_at=now,
            items=tuple(
                DeliveryItem(
                    paper=by_id[i.paper_id], score=i.score, reason=i.reason, trending=i.trending
                )
                for i in items
            ),
            schedule=subscriber.schedule,
            subscriber_version=reader.version,
        )
        return self._render_next(delivery, now=now, due_at=period.due_at)

    def _render_next(
        self, delivery: Delivery, *, now: datetime, due_at: datetime | None = None
    ) -> NextDigest:
        """Render ``delivery`` as the sender would (pipeline.cycle.compose does the same)."""
        from pipeline.cycle.digest import build_digest

        digest = build_digest(self.config, self.signer(), delivery, delivery.schedule, now=now)
        rendered = self.renderer().render(digest)
        return NextDigest(
            delivery.email,
            delivery.period_key,
            due_at or delivery.created_at,
            subject=rendered.subject,
            html=rendered.html,
            papers=len(delivery.items),
        )

    def preview_file(self, email: str) -> Path:
        """Where ``preview`` writes ``email``'s next digest: beside, never over, the
        delivered digest's preview (``run --previews``)."""
        from pipeline.cycle.deliver import preview_path

        delivered = preview_path(self.config.preview_dir, email)
        return delivered.with_name(delivered.stem + ".next.html")

    def preview(self, email: str, *, now: datetime | None = None) -> Path | None:
        """Write the reader's next digest (:meth:`next_digest`) to its own HTML file;
        None, and no file (an older one is removed), when nothing would be sent."""
        upcoming = self.next_digest(email, now=now)
        return self.write_preview(upcoming)

    def write_preview(self, upcoming: NextDigest) -> Path | None:
        path = self.preview_file(upcoming.email)
        if upcoming.html is None:
            path.unlink(missing_ok=True)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(upcoming.html, encoding="utf-8")
        return path

    def explain(self, email: str, paper_id: str, *, now: datetime | None = None) -> str:
        """Why ``paper_id`` is (or is not) in this reader's digest: the matcher's own record
        of the decision, formatted. A paper a digest already carried is explained over that
        digest's window, as it was planned; any other over the reader's next window."""
        from pipeline.cycle.plan import delivered_inputs, match_inputs
        from pipeline.match import NotInPeriod, format_decision

        now = now or self.clock()
        reader = self.reader(email)
        paper_id = paper_id.removeprefix("arXiv:").removeprefix("arxiv:")
        paper = self.store.papers_by_id([paper_id]).get(paper_id)
        if paper is None:
            raise PaperpostError(
                f"paper {paper_id!r} is not in the database (run `paperpost ingest`)"
            )
        # The digest that carried it, else the one whose window it arrived in, else the next.
        delivery_id = self.store.delivery_with_paper(reader.id, paper_id)
        if delivery_id is None and paper.first_seen is not None:
            delivery_id = self.store.delivery_covering(reader.id, paper.first_seen)
        delivery = self.store.load_delivery(delivery_id) if delivery_id is not None else None
        with self._model_errors():
            if delivery is not None:
                inputs = delivered_inputs(self.store, self.planning, reader, delivery)
            else:
                inputs = match_inputs(self.store, self.planning, [reader], now=now)
        try:
            decision = inputs.matcher.decide(
                inputs.profiles[reader.id],
                inputs.window(reader.id),
                paper_id,
                exclude_ids=inputs.reserved.get(reader.id, set()),
                liked=inputs.liked,
                coreaders=inputs.coreaders,
            )
        except NotInPeriod:
            start = inputs.starts[reader.id]
            raise PaperpostError(
                f"paper {paper_id} is not among the papers of {reader.email}'s next digest "
                f"(those first seen after {start.isoformat(timespec='minutes')}), nor in the "
                f"window of a digest of theirs"
            ) from None
        lines = [format_decision(decision)]
        if delivery is not None:
            lines.append(_as_planned(delivery, paper_id, decision.selected, reader.version))
        else:
            lines.append("not planned yet: this is the reader's next digest as it stands now")
        return "\n".join(lines)

    async def send_test(
        self, email: str, *, now: datetime | None = None, force: bool = False
    ) -> str:
        """One real test message to ``email`` (nothing recorded); the server's reply.

        An unknown or unsubscribed address is refused (:class:`RecipientRefusedError`)
        unless ``force``; forced, the send goes ahead with a logged warning."""
        from pipeline.cycle.sendtest import recipient_warning, send_test

        now = now or self.clock()
        reader = await asyncio.to_thread(self.store.reader_by_email, email)
        warning = recipient_warning(email, reader)
        if warning and not force:
            raise RecipientRefusedError(
                f"send-test: {warning}; nothing sent (add --force to send anyway)"
            )
        if warning:
            log.warning("send-test: %s; sending anyway (--force)", warning)
        recent = await asyncio.to_thread(
            self.store.papers_seen_between, now - timedelta(days=30), now
        )
        mailer = self.mailer()
        try:
            return await send_test(self.config, email, recent[-5:], mailer, now=now)
        finally:
            await mailer.aclose()

    @contextlib.contextmanager
    def _model_errors(self) -> Iterator[None]:
        """A configured embedding model that cannot be loaded is a configuration error
        naming ``match.embedding_model``: the run stops, as for any bad key."""
        try:
            yield
        except EmbeddingError as exc:
            raise config_error(self.config, ("match", "embedding_model"), str(exc)) from exc

    # -- operating ----------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Load the templates and the embedding model now; a summary line for each."""
        from pipeline.cycle.plan import check_embedding_model

        problem = database_driver_problem(self.config.database_url)
        if problem is not None:
            raise config_error(self.config, ("database", "url"), problem)
        templates = self.renderer().check()
        lines = [templates, f"match: {check_embedding_model(self.config)}"]
        if self.config.file.web.subscribe:
            from pipeline.web.subscribe import check_rate_storage

            try:
                lines.append(f"web: {check_rate_storage(self.config.file.web.rate_limit_storage)}")
            except ValueError as exc:
                raise config_error(self.config, ("web", "rate_limit_storage"), str(exc)) from exc
        return lines

    def upgrade_database(self) -> str | None:
        """Apply the migrations up to the newest; the revision the database is now at."""
        store = Store.open(self.config.database_url, auto_upgrade=True)
        try:
            return store.revision()
        finally:
            store.close()

    def outbox(
        self,
        *,
        statuses: Collection[str] | None = None,
        email: str | None = None,
        period_key: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Digests in the outbox, newest first, filtered by state, reader and period."""
        unknown = sorted(set(statuses or ()) - set(STATES))
        if unknown:
            raise PaperpostError(
                f"no outbox state {', '.join(map(repr, unknown))}; the states are "
                + ", ".join(STATES)
            )
        reader_id = self.reader(email).id if email else None
        return self.store.list_deliveries(
            statuses=statuses, subscriber_id=reader_id, period_key=period_key, limit=limit
        )

    def requeue(
        self,
        *,
        ids: Sequence[int] | None = None,
        statuses: Collection[str] = ("failed", "ambiguous"),
        email: str | None = None,
        now: datetime | None = None,
    ) -> int:
        """Put failed or ambiguous digests back in the queue (an explicit operator act: an
        ambiguous digest may then reach its reader twice). Returns how many moved."""
        reader_id = self.reader(email).id if email else None
        return self.store.requeue(
            ids=ids, statuses=statuses, subscriber_id=reader_id, now=now or self.clock()
        )

    def source_states(self) -> list[SourceState]:
        return self.store.source_states()

    def health(self, *, now: datetime | None = None) -> Health:
        """The verdict, "ok" or "degraded" with its reasons (pipeline.cycle.health): the
        last delivery run failed, a source has failed for 24 h, digests failed lately."""
        from pipeline.cycle.health import assess

        config, store = self.config, self.store
        default = config.file.ingest.interval_minutes
        return assess(
            runs=store.last_runs(20),
            sources=store.source_states(),
            intervals={
                s.name: timedelta(minutes=s.interval_minutes or default)
                for s in config.file.sources
                if s.enabled
            },
            failed=store.list_deliveries(statuses=("failed",), limit=100),
            now=now or self.clock(),
        )

    def reader_email(self, subscriber_id: int) -> str | None:
        """The address of the reader a link token names by id; None if there is none."""
        reader = self.store.readers([subscriber_id]).get(subscriber_id)
        return reader.subscriber.email if reader is not None else None

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        """What a digest token's links resolve to: the reader's address and the papers the
        outbox row carried, by position; None if the row is gone or not this reader's."""
        from pipeline.web.readers import LinkedDigest

        row = self.store.load_deliveries([delivery_id]).get(delivery_id)
        if row is None or row.subscriber_id != subscriber_id:
            return None
        return LinkedDigest(row.email, tuple((i.paper.id, i.paper.title) for i in row.items))

    def paper_title(self, paper_id: str) -> str | None:
        """The stored paper's title (feedback pages name the paper by it); None if unknown."""
        paper = self.store.papers_by_id([paper_id]).get(paper_id)
        return paper.title if paper is not None else None

    def paper_count(self) -> int:
        return self.store.count_papers()

    def outbox_counts(self) -> dict[str, int]:
        return self.store.outbox_counts()

    # -- bounces, complaints, mailed unsubscribes (docs/bounces.md) -------------------------
    def process_bounces(self, *, now: datetime | None = None) -> BounceReport:
        """Read the bounce mailbox once: record each new report, suppress what the rules
        say, mark the messages (blocking: call it off the event loop)."""
        from pipeline.bounces.process import process_mailbox
        from pipeline.bounces.settings import bounce_settings, open_mailbox

        settings = bounce_settings(self.config)
        mailbox = open_mailbox(self.config)
        try:
            report = process_mailbox(self.store, mailbox, settings, now=now or self.clock())
        finally:
            mailbox.close()
        if report.read:
            log.info(
                "bounce mailbox: %d read, %d hard, %d soft, %d complaints, %d unsubscribes, "
                "%d suppressed, %d already recorded, %d ignored, %d malformed",
                report.read,
                report.hard,
                report.soft,
                report.complaints,
                report.unsubscribes,
                len(report.suppressed),
                report.duplicates,
                report.ignored,
                report.malformed,
            )
        return report

    def bounce_rates(self, *, now: datetime | None = None) -> BounceRates:
        """Bounces and complaints against digests sent, over ``[bounces] rate_days`` (7)."""
        bounces = self.config.file.bounces
        days = bounces.rate_days if bounces is not None else 7
        return self.store.bounce_rates(now=now or self.clock(), days=days)

    def status_reasons(self) -> dict[str, str]:
        """{address: reason} of the suppressed and unsubscribed readers."""
        return self.store.status_reasons(("suppressed", "unsubscribed"))

    def last_runs(self, n: int) -> list[Run]:
        return self.store.last_runs(n)

    def next_due(
        self, *, now: datetime | None = None, limit: int = 20
    ) -> list[tuple[datetime, str]]:
        """(next due instant in UTC, address) of the active readers, soonest first."""
        now = now or self.clock()
        due = heapq.nsmallest(
            limit,
            (
                (next_due_period(schedule, now).due_at, i)
                for i, schedule in self.store.active_schedules(now=now).items()
            ),
        )
        readers = self.store.readers([i for _, i in due])  # only those shown
        return [(at, readers[i].email) for at, i in due if i in readers]


# The module each database URL's driver lives in (SQLAlchemy's defaults for bare URLs).
_DRIVERS = {"sqlite": "sqlite3", "pysqlite": "sqlite3"}


def _default_postgresql_driver() -> str:
    """SQLAlchemy 2.1 made psycopg (3) the default for ``postgresql://``; 2.0 psycopg2.
    Read from the installed version, without importing SQLAlchemy here."""
    try:
        major, minor = (int(p) for p in importlib.metadata.version("sqlalchemy").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return "psycopg2"
    return "psycopg" if (major, minor) >= (2, 1) else "psycopg2"


def database_driver_problem(url: str, *, missing: str | None = None) -> str | None:
    """Why ``url``'s database driver cannot be loaded (None: it can). PostgreSQL needs
    the ``postgres`` extra; without it SQLAlchemy fails deep inside with an ImportError.
    ``missing``: the module an ImportError named, when there was one."""
    scheme = url.split(":", 1)[0]
    backend, _, driver = scheme.partition("+")
    if backend == "postgresql" and not driver:
        driver = _default_postgresql_driver()
    module = missing or _DRIVERS.get(driver or backend, driver or backend)
    if missing is None:
        try:
            if importlib.util.find_spec(module) is not None:
                return None
        except (ImportError, ValueError):
            pass
    if backend != "postgresql":
        hint = f"install the {module} module"
    elif module.split(".")[0] == "psycopg":
        hint = "pip install 'paperpost[postgres]' (README: Using PostgreSQL)"
    else:  # the extra installs psycopg (3), which SQLAlchemy uses only when named
        hint = "write the URL as postgresql+psycopg://… and pip install 'paperpost[postgres]'"
    return (
        f"database.url is a {scheme}:// URL, but its driver (Python module {module!r}) "
        f"is not installed: {hint}"
    )


def run_failed(report: DeliverReport) -> bool:
    """Whether a delivery run failed as a whole: it aborted, or it tried digests and
    delivered none of them (every one failed or was deferred). A run with nothing due
    did not fail. (``paperpost run --once`` exits 1 then; ``/healthz`` is degraded.)"""
    from pipeline.cycle.health import run_failed as summary_failed

    return summary_failed(
        {
            "sent": report.sent,
            "failed": report.failed,
            "deferred": report.deferred,
            "ambiguous": report.ambiguous,
            "aborted": report.aborted,
        }
    )


def _deliver_note(report: DeliverReport) -> str:
    parts = [f"{report.sent} sent"]
    parts += [
        f"{n} {what}"
        for n, what in (
            (report.failed, "failed"),
            (report.deferred, "deferred"),
            (report.ambiguous, "ambiguous"),
        )
        if n
    ]
    if report.aborted:
        parts.append(f"aborted: {report.aborted}")
    return ", ".join(parts)


def _as_planned(delivery: Delivery, paper_id: str, selected: bool, version: int) -> str:
    """How the record compares with what the digest actually carried."""
    ranks = [i for i, item in enumerate(delivery.items, 1) if item.paper.id == paper_id]
    where = f"the digest of {delivery.period_key} (outbox row {delivery.id}, {delivery.status})"
    if ranks:
        line = f"sent in {where} at rank {ranks[0]}; it will not be sent again"
    else:
        line = f"considered for {where}, which did not carry it"
    if bool(ranks) != selected or version != delivery.subscriber_version:
        line += (
            f"\nnote: the record above uses the reader's settings and feedback as they are "
            f"now (version {version}); the digest was planned under version "
            f"{delivery.subscriber_version}"
            + ("" if bool(ranks) == selected else ", and the outcome differs now")
        )
    return line


async def run_once(
    config: Config,
    *,
    clock: Clock = utc_now,
    mailer: Mailer | None = None,
    store: Store | None = None,
    write_previews: bool = False,
) -> CycleReport:
    """One full cycle for ``config`` (a convenience over :meth:`App.run_once`)."""
    with App(config, store=store, clock=clock) as app:
        return await app.run_once(mailer=mailer, write_previews=write_previews)


__all__ = [
    "App",
    "CycleReport",
    "FitMismatchError",
    "NextDigest",
    "PlanTick",
    "RecipientRefusedError",
    "UnknownReaderError",
    "holder_name",
    "run_failed",
    "run_once",
    "utc_now",
]
