"""Planning: which subscribers are due, what goes into each digest, outbox rows written.

This is where the stages meet: schedule (periods) -> match -> store. Each due
(subscriber, period) gets its outbox row and frozen items in one transaction before
anything is sent, so a retry, a second daemon or a restart finds the row and sends
the same digest once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pipeline.config import Config, config_error
from pipeline.domain import MatchItem, Paper, Period, Profile, Reader
from pipeline.errors import EmbeddingError
from pipeline.mail import make_message_id
from pipeline.match import Matcher, MatchResult, MatchSettings
from pipeline.schedule.periods import latest_due_period
from pipeline.store import Delivery, PlannedDelivery, Store

log = logging.getLogger("paperpost.plan")


@dataclass(frozen=True)
class Due:
    reader: Reader
    period: Period

    @property
    def subscriber_id(self) -> int:
        return self.reader.id


@dataclass
class PlanReport:
    due: int = 0
    planned: int = 0
    skipped_empty: int = 0
    already_planned: int = 0
    items: dict[str, int] = field(default_factory=dict)  # email -> papers planned

    def add(self, other: PlanReport) -> PlanReport:
        """Both reports together (the blocks of one tick)."""
        return PlanReport(
            due=self.due + other.due,
            planned=self.planned + other.planned,
            skipped_empty=self.skipped_empty + other.skipped_empty,
            already_planned=self.already_planned + other.already_planned,
            items={**self.items, **other.items},
        )


def sender_address(config: Config) -> str:
    """The bare address of ``[mail] from`` (the envelope sender)."""
    return config.file.mail.from_.rsplit("<", 1)[-1].rstrip(">").strip()


def message_domain(config: Config) -> str:
    """The operator's domain: right side of the From address (Message-ID, List-Id)."""
    return sender_address(config).rsplit("@", 1)[-1]


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """What planning needs from the configuration, built once (:func:`plan_settings`)."""

    first_digest_days: int  # how far back a reader's first digest looks
    max_window_days: int  # the longest window one digest covers (after an outage)
    corpus_days: int  # the stored papers the text model is fitted on
    match: MatchSettings
    message_domain: str  # the right side of Message-IDs


def plan_settings(config: Config) -> PlanSettings:
    sched = config.file.schedule
    return PlanSettings(
        first_digest_days=sched.first_digest_days,
        max_window_days=sched.max_window_days,
        corpus_days=config.file.match.window_days,
        match=match_settings(config),
        message_domain=message_domain(config),
    )


def window_start(settings: PlanSettings, last_end: datetime | None, *, now: datetime) -> datetime:
    """Where a subscriber's next digest starts: the end of their last covered window (or
    ``first_digest_days`` back for a first digest), never more than ``max_window_days``."""
    start = last_end or now - timedelta(days=settings.first_digest_days)
    return max(start, now - timedelta(days=settings.max_window_days))


def fit_matcher(
    store: Store, settings: PlanSettings, *, now: datetime, fallback: Sequence[Paper]
) -> Matcher:
    """The similarity model fitted on the rolling window of stored papers.

    Raises ``EmbeddingError`` when a configured embedding model cannot be loaded (the
    application layer reports it as a configuration error naming the key).
    """
    corpus = store.papers_seen_between(now - timedelta(days=settings.corpus_days), now)
    return Matcher.fit(corpus or list(fallback), settings.match)


def fit_corpus(store: Store, settings: PlanSettings, *, now: datetime) -> list[Paper]:
    """What the period's matcher is fitted on when planning is split into blocks: the
    rolling window of stored papers, else (an empty window) every paper any reader's
    window can hold, so that each block's worker fits the same matcher (never on its
    own block's papers)."""
    corpus = store.papers_seen_between(now - timedelta(days=settings.corpus_days), now)
    if corpus:
        return corpus
    return store.papers_seen_between(now - timedelta(days=settings.max_window_days), now)


def fit_digest(corpus: Sequence[Paper], settings: PlanSettings) -> str:
    """A digest of everything :meth:`Matcher.fit` reads: the match settings and each
    paper's id, version, title and abstract, in the store's order. The daemon puts it in
    the ``plan_block`` jobs of a tick; a worker that fits the matcher again checks that
    its fit read the same inputs (pipeline/runner, docs/scaling.md)."""
    digest = hashlib.sha256(repr(settings.match).encode())
    for paper in corpus:
        digest.update(f"\x1e{paper.id}\x1f{paper.version}\x1f{paper.title}\x1f".encode())
        digest.update(paper.abstract.encode())
    return digest.hexdigest()[:32]


def due_among(store: Store, subscriber_ids: Collection[int], *, now: datetime) -> list[Due]:
    """The readers among ``subscriber_ids`` still due at ``now``: active, with a due
    period that has no outbox row yet (a block planned twice plans nothing twice)."""
    readers = store.readers(subscriber_ids)
    candidates: dict[int, Period] = {}
    for reader_id, reader in readers.items():
        period = latest_due_period(reader.subscriber.schedule, now)
        if reader.status == "active" and period is not None:
            candidates[reader_id] = period
    present = store.periods_present({(i, p.key) for i, p in candidates.items()})
    return [Due(readers[i], p) for i, p in sorted(candidates.items()) if (i, p.key) not in present]


def check_embedding_model(config: Config) -> str:
    """Load the configured embedding model now (``paperpost check``); one summary line.

    Raises ``ConfigError`` naming ``match.embedding_model`` when it cannot be loaded.
    """
    from pipeline.match.embedding import shared_embedder

    settings = match_settings(config)
    if not settings.embedding_model or not settings.embedding_weight:
        return "embeddings off (TF-IDF + LSA)"
    try:
        embedder = shared_embedder(settings.embedding_model, threads=settings.embedding_threads)
    except EmbeddingError as exc:
        raise config_error(config, ("match", "embedding_model"), str(exc)) from exc
    return (
        f"embeddings from {embedder.name} ({embedder.dimension} dimensions, weight "
        f"{settings.embedding_weight:.2f}, {settings.embedding_threads} torch thread(s))"
    )


def outbox_key(installation: str, subscriber_id: int, period_key: str) -> str:
    """What a digest's Message-ID is made from: unique across installations (a random id
    stored once per database), stable across the retries of one digest."""
    return f"{installation}:{subscriber_id}:{period_key}"


def due_ids(store: Store, *, now: datetime) -> list[int]:
    """The ids, ascending, of the active readers whose latest due period has no outbox row
    yet: from their schedules alone (no profiles read); :func:`due_among` loads a block."""
    candidates: dict[int, Period] = {}
    for reader_id, schedule in store.active_schedules(now=now).items():
        period = latest_due_period(schedule, now)
        if period is not None:
            candidates[reader_id] = period
    present = store.periods_present({(i, p.key) for i, p in candidates.items()})
    return sorted(i for i, p in candidates.items() if (i, p.key) not in present)


def profile_with_feedback(
    profile: Profile, liked: Sequence[str], disliked: Sequence[str]
) -> Profile:
    """The config's interests plus "more/less like this" signals from digest links."""
    if not liked and not disliked:
        return profile
    like = tuple(dict.fromkeys((*profile.like, *liked)))
    dislike = tuple(p for p in dict.fromkeys(disliked) if p not in like)
    return replace(profile, like=like, dislike=dislike)


def match_settings(config: Config) -> MatchSettings:
    match = config.file.match
    settings = MatchSettings(
        embedding_model=config.embedding_model,
        embedding_weight=match.embedding_weight,
        embedding_threads=match.embedding_threads,
    )
    if match.similarity_threshold is None:
        return settings
    return replace(settings, similarity_threshold=match.similarity_threshold)


@dataclass(frozen=True)
class MatchInputs:
    """Everything matching needs for some readers at ``now``: each one's window start, the
    papers since the earliest, each profile with its feedback, the papers each reader was
    already sent, the liked papers, the readers' "more"/"less" counts per paper of the
    window (the ``coreaders`` ranking term) and the fitted matcher. Planning, preview and
    explain all match from these, built by :func:`match_inputs` alone. The counts are
    passed to each match call, like ``reserved`` and ``liked``: they are not part of what
    the matcher is fitted on (nor of :func:`fit_digest`), so presses that arrive while a
    tick plans change the next call, never the fitted matcher."""

    starts: dict[int, datetime]
    papers: list[Paper]
    profiles: dict[int, Profile]
    reserved: dict[int, set[str]]
    liked: dict[str, Paper]
    coreaders: dict[str, tuple[int, int]]
    matcher: Matcher

    def window(self, reader_id: int) -> list[Paper]:
        """The papers of one reader's window: first seen after its start."""
        start = self.starts[reader_id]
        return [p for p in self.papers if _first_seen(p) > start]


def match_inputs(
    store: Store,
    settings: PlanSettings,
    readers: Sequence[Reader],
    *,
    now: datetime,
    matcher: Matcher | None = None,
    end: datetime | None = None,
) -> MatchInputs:
    """``end``: where the windows end (planning's ingest fence), default ``now``."""
    ids = [r.id for r in readers]
    last_ends = store.last_window_ends(ids)
    starts = {i: window_start(settings, last_ends.get(i), now=now) for i in ids}
    papers = store.papers_seen_between(min(starts.values()), end or now) if starts else []
    feedback = store.feedback(ids)
    profiles = {r.id: profile_with_feedback(r.subscriber.profile, *feedback[r.id]) for r in readers}
    liked_ids = {pid for p in profiles.values() for pid in (*p.like, *p.dislike)}
    return MatchInputs(
        starts=starts,
        papers=papers,
        profiles=profiles,
        reserved=store.reserved_papers(ids, [p.id for p in papers]),
        liked=store.papers_by_id(liked_ids),
        coreaders=store.coreader_counts([p.id for p in papers]),
        matcher=matcher or fit_matcher(store, settings, now=now, fallback=papers),
    )


def delivered_inputs(
    store: Store, settings: PlanSettings, reader: Reader, delivery: Delivery
) -> MatchInputs:
    """The inputs as they were when ``delivery`` was planned: the papers of its window, the
    papers the reader had before it (not its own), the matcher fitted at its end. The
    profile is the reader's as it is now (settings and feedback may have changed since),
    and so are the other readers' press counts."""
    start, end = delivery.window_start, delivery.window_end
    papers = store.papers_seen_between(start, end)
    feedback = store.feedback([reader.id])
    profile = profile_with_feedback(reader.subscriber.profile, *feedback[reader.id])
    own = {item.paper.id for item in delivery.items}
    before = store.reserved_papers([reader.id], [p.id for p in papers]).get(reader.id, set())
    return MatchInputs(
        starts={reader.id: start},
        papers=papers,
        profiles={reader.id: profile},
        reserved={reader.id: before - own},
        liked=store.papers_by_id({*profile.like, *profile.dislike}),
        coreaders=store.coreader_counts([p.id for p in papers]),
        matcher=fit_matcher(store, settings, now=end, fallback=papers),
    )


def plan_due(
    store: Store,
    settings: PlanSettings,
    due: Sequence[Due],
    *,
    now: datetime,
    matcher: Matcher | None = None,
) -> PlanReport:
    """Match and write outbox rows for ``due``. Subscribers are grouped by window start,
    so each group is matched in one vectorised call over exactly its papers.

    Windows end at ``now``, or just before an unfinished ingest run's start (the store's
    ingest fence): what that run commits later is stamped after it, so it falls into
    each reader's next window rather than one closed here (docs/ingest.md)."""
    report = PlanReport(due=len(due))
    if not due:
        return report
    end = store.ingest_fence(now=now)
    inputs = match_inputs(
        store, settings, [d.reader for d in due], now=now, matcher=matcher, end=end
    )
    starts, papers, profiles = inputs.starts, inputs.papers, inputs.profiles
    matcher, reserved, liked = inputs.matcher, inputs.reserved, inputs.liked

    groups: dict[datetime, list[Due]] = defaultdict(list)
    for d in due:
        groups[starts[d.subscriber_id]].append(d)
    domain = settings.message_domain
    installation = store.installation_id()
    for start in sorted(groups):
        members = groups[start]
        window = [p for p in papers if _first_seen(p) > start]
        result = matcher.match_compact(
            [profiles[d.subscriber_id] for d in members],
            window,
            exclude_ids=[reserved.get(d.subscriber_id, set()) for d in members],
            liked=liked,
            coreaders=inputs.coreaders,
        )
        for block, matched in _blocks(members, result):
            plans = [
                PlannedDelivery(
                    subscriber_id=d.subscriber_id,
                    period_key=d.period.key,
                    window_start=start,
                    window_end=max(start, end),
                    message_id=make_message_id(
                        outbox_key(installation, d.subscriber_id, d.period.key), domain
                    ),
                    items=items,
                    skip_if_empty=d.reader.subscriber.on_empty == "skip",
                    subscriber_version=d.reader.version,
                )
                for d, items in zip(block, matched, strict=True)
            ]
            row_ids = store.plan_deliveries(plans, now=now)
            for d, plan, row_id in zip(block, plans, row_ids, strict=True):
                if row_id is None:
                    report.already_planned += 1
                    continue
                if not plan.items and plan.skip_if_empty:
                    report.skipped_empty += 1
                    log.debug(  # per reader: the period's INFO line gives the count
                        "nothing new for %s in period %s: skipped", d.reader.email, d.period.key
                    )
                else:
                    report.planned += 1
                report.items[d.reader.email] = len(plan.items)
    return report


# Readers matched, materialised and written at once: one ``plan_deliveries`` transaction
# each. On SQLite that transaction holds the database's write lock, and every sender's
# mark waits behind it for as long as the block's rows take to write. The CPU per
# reader is the same from 128 to 4,096 readers a block (bench/PLAN.md has the lock times
# and costs), so the smaller block costs nothing and keeps a sender's wait short.
_BLOCK = 512


def _blocks(
    members: Sequence[Due], result: MatchResult
) -> Iterator[tuple[Sequence[Due], list[list[MatchItem]]]]:
    """(members, their items) a block at a time: items are materialised per block."""
    for begin in range(0, len(members), _BLOCK):
        block = members[begin : begin + _BLOCK]
        yield block, result.items_range(begin, begin + len(block))


def _first_seen(paper: Paper) -> datetime:
    assert paper.first_seen is not None, "papers from the store always carry first_seen"
    return paper.first_seen
