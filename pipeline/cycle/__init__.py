"""The one place that composes the stages: ingest -> plan (schedule + match) -> deliver.

The CLI and the daemon call these functions; the stage modules never import each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline import __version__
from pipeline.config import Config
from pipeline.cycle.compose import make_composer, make_renderer, make_signer
from pipeline.cycle.deliver import Deliverer, DeliverReport, preview_path
from pipeline.cycle.digest import build_digest
from pipeline.cycle.plan import (
    PlanReport,
    due_subscribers,
    fit_matcher,
    plan_due,
    profile_with_feedback,
    window_start,
)
from pipeline.domain import Mailer
from pipeline.ingest.fetch import Fetcher, FetchPolicy
from pipeline.ingest.run import SourceOutcome, SourceSpec, fetch_papers_by_id, ingest_sources
from pipeline.mail import MaildirMailer, SmtpMailer, SmtpSettings
from pipeline.schedule.periods import next_due_period
from pipeline.store import Delivery, DeliveryItem, Store

log = logging.getLogger("paperpost.cycle")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CycleReport:
    sources: list[SourceOutcome] = field(default_factory=list)
    plan: PlanReport = field(default_factory=PlanReport)
    deliver: DeliverReport = field(default_factory=DeliverReport)


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_store(config: Config) -> Store:
    return Store.open(config.database_url)


def make_mailer(config: Config) -> Mailer:
    mail = config.file.mail
    if mail.transport == "maildir":
        return MaildirMailer(config.maildir)
    smtp = mail.smtp
    assert smtp is not None  # the config model guarantees it for transport = "smtp"
    return SmtpMailer(
        SmtpSettings(
            host=smtp.host,
            port=smtp.port,
            security=smtp.security,
            username=smtp.username,
            password=config.secrets.smtp_password,
            timeout=smtp.timeout_seconds,
            data_timeout=smtp.data_timeout_seconds,
            pool_size=smtp.pool_size,
            rate_per_second=smtp.rate_per_second or None,  # 0 = unlimited
            max_per_connection=smtp.max_per_connection,
            helo_name=smtp.helo_name,
            ca_file=config.path.parent / smtp.ca_file if smtp.ca_file else None,
            validate_certs=smtp.validate_certs,
        )
    )


def fetch_policy(config: Config) -> FetchPolicy:
    ing = config.file.ingest
    contact = f" ({ing.contact})" if ing.contact else ""
    return FetchPolicy(
        connect_timeout=ing.connect_timeout_seconds,
        read_timeout=ing.read_timeout_seconds,
        deadline=ing.deadline_seconds,
        max_bytes=ing.max_bytes,
        max_decoded_bytes=ing.max_decoded_bytes,
        max_concurrency=ing.concurrency,
        user_agent=f"Paperpost/{__version__} (+https://github.com/paperpost/paperpost){contact}",
    )


def source_specs(config: Config) -> list[SourceSpec]:
    return [
        SourceSpec(
            name=s.name,
            kind=s.kind,
            url=config.source_location(s),
            allow_private=s.allow_private,
        )
        for s in config.sources
        if s.enabled
    ]


def sync(store: Store, config: Config, *, now: datetime) -> None:
    """Make the database's subscribers and sources match the config (suppressions win)."""
    stats = store.sync_subscribers(config.subscribers(), now=now)
    if stats.added or stats.removed or stats.updated:
        log.info(
            "subscribers synced: %d added, %d updated, %d removed, %d suppressed",
            stats.added,
            stats.updated,
            stats.removed,
            stats.suppressed,
        )
    store.sync_sources([(s.name, s.kind, config.source_location(s)) for s in config.sources])


async def ingest(store: Store, config: Config, *, now: datetime) -> list[SourceOutcome]:
    fetcher = Fetcher(fetch_policy(config))
    try:
        outcomes = await ingest_sources(
            store,
            source_specs(config),
            fetcher,
            now=now,
            failure_alert=config.file.ingest.alert_after_failures,
        )
        liked = {pid for sub in config.subscribers() for pid in sub.profile.like}
        missing = sorted(liked - set(store.papers_by_id(liked)))
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
    store.record_run(
        "ingest",
        started=now,
        finished=utc_now(),
        summary={o.name: {"ok": o.ok, "new": o.new, "error": o.error} for o in outcomes},
    )
    return outcomes


async def dispatch(
    store: Store,
    config: Config,
    *,
    clock: Clock = utc_now,
    mailer: Mailer | None = None,
    write_previews: bool = False,
    holder: str | None = None,
    stopping: asyncio.Event | None = None,
) -> tuple[PlanReport, DeliverReport]:
    """Plan every due digest, then send everything the outbox holds that is due."""
    now = clock()
    subscribers = config.subscribers()

    def plan_now() -> PlanReport:
        return plan_due(store, config, due_subscribers(store, subscribers, now=now), now=now)

    # Planning is CPU and database work: off the event loop, so the daemon's web endpoints
    # keep answering while a large tick is matched.
    plan = await asyncio.to_thread(plan_now)
    own_mailer = mailer is None
    mailer = mailer or make_mailer(config)
    composer = make_composer(config, store)
    deliverer = Deliverer(
        store,
        config,
        mailer,
        composer,
        {s.email: s.schedule for s in subscribers},
        clock=clock,
        holder=holder or holder_name(),
        write_previews=write_previews,
    )
    if stopping is not None:
        deliverer.stopping = stopping  # SIGTERM: finish the messages in hand, claim no more
    try:
        report = await deliverer.run()
    finally:
        await asyncio.to_thread(composer.close)  # joins worker processes, if any
        if own_mailer:
            await mailer.aclose()
    store.record_run(
        "dispatch",
        started=now,
        finished=clock(),
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
    config: Config,
    *,
    clock: Clock = utc_now,
    mailer: Mailer | None = None,
    store: Store | None = None,
    write_previews: bool = False,
) -> CycleReport:
    """One full cycle now: sync, ingest every source, plan what is due, deliver."""
    own_store = store is None
    store = store or open_store(config)
    try:
        now = clock()
        sync(store, config, now=now)
        outcomes = await ingest(store, config, now=now)
        plan, delivered = await dispatch(
            store, config, clock=clock, mailer=mailer, write_previews=write_previews
        )
        return CycleReport(sources=outcomes, plan=plan, deliver=delivered)
    finally:
        if own_store:
            store.close()


def preview(config: Config, store: Store, email: str, *, now: datetime) -> Path:
    """Render the subscriber's next digest without sending or recording anything."""

    subscriber = next((s for s in config.subscribers() if s.email == email.strip().lower()), None)
    if subscriber is None:
        subscriber = next((s for s in config.subscribers() if s.email == email.strip()), None)
    if subscriber is None:
        raise KeyError(email)
    sync(store, config, now=now)
    state = store.subscriber_state(subscriber.email)
    assert state is not None
    start = window_start(config, store.last_window_ends([state.id]).get(state.id), now=now)
    papers = store.papers_seen_between(start, now)
    liked_ids, disliked_ids = store.feedback([state.id])[state.id]
    profile = profile_with_feedback(subscriber.profile, liked_ids, disliked_ids)
    liked = store.papers_by_id([*profile.like, *profile.dislike])
    reserved = store.reserved_papers([state.id], [p.id for p in papers]).get(state.id, set())
    matcher = fit_matcher(store, config, now=now, fallback=papers)
    [items] = matcher.match([profile], papers, exclude_ids=[reserved], liked=liked)
    by_id = {p.id: p for p in papers}
    delivery = Delivery(
        id=0,
        subscriber_id=state.id,
        email=subscriber.email,
        name=subscriber.name,
        period_key=next_due_period(subscriber.schedule, now).key,
        status="preview",
        attempts=0,
        message_id="<preview@paperpost>",
        window_start=start,
        window_end=now,
        created_at=now,
        items=tuple(
            DeliveryItem(
                paper=by_id[i.paper_id], score=i.score, reason=i.reason, trending=i.trending
            )
            for i in items
        ),
    )
    digest = build_digest(config, make_signer(config), delivery, subscriber.schedule, now=now)
    rendered = make_renderer(config).render(digest)
    path = preview_path(config, subscriber.email)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered.html, encoding="utf-8")
    return path


__all__ = ["CycleReport", "dispatch", "ingest", "preview", "run_once", "sync", "utc_now"]
