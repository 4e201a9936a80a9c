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
import heapq
import logging
import os
import socket
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
from pipeline.schedule.periods import next_due_period
from pipeline.store import Delivery, DeliveryItem, OutboxEntry, Run, SourceState, Store, SyncStats
from pipeline.store.port import STATES

# The stage drivers are imported where a use case needs them: `paperpost status` or
# `outbox` loads the store, not the matcher, the renderer, the HTTP client or SMTP.
if TYPE_CHECKING:
    from pipeline.cycle.deliver import DeliverReport, DeliverSettings
    from pipeline.cycle.plan import PlanReport, PlanSettings
    from pipeline.ingest.fetch import FetchPolicy
    from pipeline.ingest.run import SourceOutcome
    from pipeline.render import Renderer
    from pipeline.web.tokens import TokenSigner

log = logging.getLogger("paperpost.app")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def holder_name() -> str:
    """Who holds a claim or the scheduler lease: ``host:pid`` (dead-process recovery
    parses it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class UnknownReaderError(PaperpostError, LookupError):
    """No reader with that address in the database."""


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
            self._store = Store.open(self.config.database_url)
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

    def import_subscribers(self, path: Path, *, now: datetime | None = None) -> SyncStats:
        """Add or update readers from a CSV or JSON Lines file (validated like the config's
        ``[[subscribers]]``; every bad record is reported with its line, nothing is written
        unless the whole file is valid)."""
        subscribers = read_subscribers(path)
        return self.store.import_subscribers(subscribers, now=now or self.clock())

    def unsubscribe(self, email: str, *, now: datetime | None = None, reason: str = "link") -> bool:
        return self.store.unsubscribe(email, now=now or self.clock(), reason=reason)

    def resubscribe(self, email: str, *, now: datetime | None = None) -> bool:
        return self.store.resubscribe(email.strip().lower(), now=now or self.clock())

    def record_feedback(
        self, email: str, paper_id: str, signal: str, *, now: datetime | None = None
    ) -> bool:
        return self.store.record_feedback(email, paper_id, signal, now=now or self.clock())

    # -- the cycle ---------------------------------------------------------------------------
    async def ingest(
        self, *, now: datetime | None = None, sources: Collection[str] | None = None
    ) -> list[SourceOutcome]:
        """Fetch the enabled sources (``sources``: only these names), store new papers, and
        fetch the metadata of liked papers the database lacks."""
        from pipeline.ingest.fetch import Fetcher
        from pipeline.ingest.run import SourceSpec, fetch_papers_by_id, ingest_sources

        now = now or self.clock()
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
        # Building the HTTP client loads the CA bundle (tens of ms of CPU): off the loop.
        fetcher = await asyncio.to_thread(Fetcher, self._fetch_policy())
        try:
            outcomes = await ingest_sources(
                store,
                specs,
                fetcher,
                now=now,
                failure_alert=config.file.ingest.alert_after_failures,
            )
            liked = await asyncio.to_thread(store.liked_paper_ids)
            missing = sorted(liked - set(await asyncio.to_thread(store.papers_by_id, liked)))
            if missing:
                try:
                    await fetch_papers_by_id(store, missing, fetcher, now=now)
                except Exception as exc:  # the liked papers are an improvement, never a blocker
                    log.warning("could not fetch metadata of liked papers %s: %s", missing, exc)
        finally:
            await fetcher.aclose()
        for o in outcomes:
            if o.ok:
                log.info(
                    "source %s: %d entries, %d new, %d updated",
                    o.name,
                    o.entries,
                    o.new,
                    o.updated,
                    extra={"source": o.name},
                )
            else:
                log.error("source %s failed: %s", o.name, o.error, extra={"source": o.name})
        await asyncio.to_thread(
            store.record_run,
            "ingest",
            started=now,
            finished=self.clock(),
            summary={o.name: {"ok": o.ok, "new": o.new, "error": o.error} for o in outcomes},
        )
        return outcomes

    def plan(self, *, now: datetime | None = None) -> PlanReport:
        """Write the outbox rows of every digest now due (blocking: call it off the loop)."""
        from pipeline.cycle.plan import due_subscribers, plan_due

        now = now or self.clock()
        with self._model_errors():
            due = due_subscribers(self.store, now=now)
            return plan_due(self.store, self.planning, due, now=now)

    async def deliver(
        self,
        *,
        mailer: Mailer | None = None,
        write_previews: bool = False,
        stopping: asyncio.Event | None = None,
    ) -> DeliverReport:
        """Send what the outbox holds that is due."""
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
            holder=self.holder,
            write_previews=write_previews,
        )
        if stopping is not None:
            deliverer.stopping = stopping  # SIGTERM: finish the messages in hand, claim no more
        try:
            return await deliverer.run()
        finally:
            await asyncio.to_thread(composer.close)  # joins worker processes, if any
            if own_mailer:
                await mailer.aclose()

    async def dispatch(
        self,
        *,
        mailer: Mailer | None = None,
        write_previews: bool = False,
        stopping: asyncio.Event | None = None,
    ) -> tuple[PlanReport, DeliverReport]:
        """Plan every due digest, then send everything the outbox holds that is due."""
        now = self.clock()
        # Planning is CPU and database work: off the event loop, so the daemon's web
        # endpoints keep answering while a large tick is matched.
        log.info("planning the digests due at %s", now.isoformat(timespec="seconds"))
        began = time.monotonic()
        plan = await asyncio.to_thread(self.plan, now=now)
        log.info(
            "planned %d digests for %d due readers in %.1f s; delivering",
            plan.planned,
            plan.due,
            time.monotonic() - began,
        )
        report = await self.deliver(mailer=mailer, write_previews=write_previews, stopping=stopping)
        await asyncio.to_thread(
            self.store.record_run,
            "dispatch",
            started=now,
            finished=self.clock(),
            summary={
                "planned": plan.planned,
                "sent": report.sent,
                "deferred": report.deferred,
                "failed": report.failed,
                "ambiguous": report.ambiguous,
            },
        )
        return plan, report

    async def run_once(
        self, *, mailer: Mailer | None = None, write_previews: bool = False
    ) -> CycleReport:
        """One full cycle now: sync, ingest every source, plan what is due, deliver."""
        now = self.clock()
        await asyncio.to_thread(self.sync, now=now)
        outcomes = await self.ingest(now=now)
        plan, delivered = await self.dispatch(mailer=mailer, write_previews=write_previews)
        return CycleReport(sources=outcomes, plan=plan, deliver=delivered)

    # -- looking without sending -------------------------------------------------------------
    def preview(self, email: str, *, now: datetime | None = None) -> Path:
        """Render the reader's next digest to an HTML file without sending or recording."""
        from pipeline.cycle.deliver import preview_path
        from pipeline.cycle.digest import build_digest
        from pipeline.cycle.plan import match_inputs

        now = now or self.clock()
        reader = self.reader(email)
        with self._model_errors():
            inputs = match_inputs(self.store, self.planning, [reader], now=now)
        [items] = inputs.matcher.match(
            [inputs.profiles[reader.id]],
            inputs.window(reader.id),
            exclude_ids=[inputs.reserved.get(reader.id, set())],
            liked=inputs.liked,
        )
        by_id = {p.id: p for p in inputs.papers}
        subscriber = reader.subscriber
        delivery = Delivery(
            id=0,
            subscriber_id=reader.id,
            email=subscriber.email,
            name=subscriber.name,
            period_key=next_due_period(subscriber.schedule, now).key,
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
        digest = build_digest(self.config, self.signer(), delivery, subscriber.schedule, now=now)
        rendered = self.renderer().render(digest)
        path = preview_path(self.config.preview_dir, subscriber.email)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered.html, encoding="utf-8")
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

    async def send_test(self, email: str, *, now: datetime | None = None) -> str:
        """One real test message to ``email`` (nothing recorded); the server's reply."""
        from pipeline.cycle.sendtest import send_test

        now = now or self.clock()
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

        self.renderer().check()
        return [f"match: {check_embedding_model(self.config)}"]

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

    def paper_count(self) -> int:
        return self.store.count_papers()

    def outbox_counts(self) -> dict[str, int]:
        return self.store.outbox_counts()

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
                for i, schedule in self.store.active_schedules().items()
            ),
        )
        readers = self.store.readers([i for _, i in due])  # only those shown
        return [(at, readers[i].email) for at, i in due if i in readers]


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


__all__ = ["App", "CycleReport", "UnknownReaderError", "holder_name", "run_once", "utc_now"]
