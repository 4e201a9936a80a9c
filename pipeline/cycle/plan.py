"""Planning: which subscribers are due, what goes into each digest, outbox rows written.

This is where the stages meet: schedule (periods) -> match -> store. Each due
(subscriber, period) gets its outbox row and frozen items in one transaction before
anything is sent, so a retry, a second daemon or a restart finds the row and sends
the same digest once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pipeline.config import Config, config_error
from pipeline.domain import MatchItem, Paper, Period, Profile, Subscriber
from pipeline.errors import EmbeddingError
from pipeline.mail import make_message_id
from pipeline.match import Matcher, MatchResult, MatchSettings
from pipeline.schedule.periods import latest_due_period
from pipeline.store import PlannedItem, Store

log = logging.getLogger("paperpost.plan")


@dataclass(frozen=True)
class Due:
    subscriber: Subscriber
    subscriber_id: int
    period: Period


@dataclass
class PlanReport:
    due: int = 0
    planned: int = 0
    skipped_empty: int = 0
    already_planned: int = 0
    items: dict[str, int] = field(default_factory=dict)  # email -> papers planned


def sender_address(config: Config) -> str:
    """The bare address of ``[mail] from`` (the envelope sender)."""
    return config.file.mail.from_.rsplit("<", 1)[-1].rstrip(">").strip()


def message_domain(config: Config) -> str:
    """The operator's domain: right side of the From address (Message-ID, List-Id)."""
    return sender_address(config).rsplit("@", 1)[-1]


def window_start(config: Config, last_end: datetime | None, *, now: datetime) -> datetime:
    """Where a subscriber's next digest starts: the end of their last covered window (or
    ``first_digest_days`` back for a first digest), never more than ``max_window_days``."""
    sched = config.file.schedule
    start = last_end or now - timedelta(days=sched.first_digest_days)
    return max(start, now - timedelta(days=sched.max_window_days))


def fit_matcher(
    store: Store, config: Config, *, now: datetime, fallback: Sequence[Paper]
) -> Matcher:
    """The similarity model fitted on the rolling window of stored papers.

    A configured embedding model that cannot be loaded is a configuration error
    (``ConfigError`` naming ``match.embedding_model``): the run stops, as for any bad key.
    """
    corpus = store.papers_seen_between(now - timedelta(days=config.file.match.window_days), now)
    try:
        return Matcher.fit(corpus or list(fallback), match_settings(config))
    except EmbeddingError as exc:
        raise config_error(config, ("match", "embedding_model"), str(exc)) from exc


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


def outbox_key(subscriber_id: int, period_key: str) -> str:
    return f"{subscriber_id}:{period_key}"


def due_subscribers(store: Store, subscribers: Sequence[Subscriber], *, now: datetime) -> list[Due]:
    """Active subscribers whose latest due period has no outbox row yet."""
    states = store.subscriber_states()
    candidates: list[Due] = []
    for sub in subscribers:
        state = states.get(sub.email)
        if state is None or state.status != "active":
            continue
        period = latest_due_period(sub.schedule, now)
        if period is not None:
            candidates.append(Due(sub, state.id, period))
    present = store.periods_present({(d.subscriber_id, d.period.key) for d in candidates})
    return [d for d in candidates if (d.subscriber_id, d.period.key) not in present]


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


def plan_due(
    store: Store,
    config: Config,
    due: Sequence[Due],
    *,
    now: datetime,
    matcher: Matcher | None = None,
) -> PlanReport:
    """Match and write outbox rows for ``due``. Subscribers are grouped by window start,
    so each group is matched in one vectorised call over exactly its papers."""
    report = PlanReport(due=len(due))
    if not due:
        return report
    ids = [d.subscriber_id for d in due]
    last_ends = store.last_window_ends(ids)
    starts = {i: window_start(config, last_ends.get(i), now=now) for i in ids}
    papers = store.papers_seen_between(min(starts.values()), now)
    matcher = matcher or fit_matcher(store, config, now=now, fallback=papers)
    feedback = store.feedback(ids)
    reserved = store.reserved_papers(ids, [p.id for p in papers])
    profiles = {
        d.subscriber_id: profile_with_feedback(d.subscriber.profile, *feedback[d.subscriber_id])
        for d in due
    }
    liked_ids = {pid for p in profiles.values() for pid in (*p.like, *p.dislike)}
    liked = store.papers_by_id(liked_ids)

    groups: dict[datetime, list[Due]] = defaultdict(list)
    for d in due:
        groups[starts[d.subscriber_id]].append(d)
    domain = message_domain(config)
    for start in sorted(groups):
        members = groups[start]
        window = [p for p in papers if _first_seen(p) > start]
        result = matcher.match_compact(
            [profiles[d.subscriber_id] for d in members],
            window,
            exclude_ids=[reserved.get(d.subscriber_id, set()) for d in members],
            liked=liked,
        )
        for _index, d, items in _blocks(members, result):
            planned = [
                PlannedItem(
                    paper_id=i.paper_id, score=i.score, reason=i.reason, trending=i.trending
                )
                for i in items
            ]
            row_id = store.plan_delivery(
                subscriber_id=d.subscriber_id,
                period_key=d.period.key,
                window_start=start,
                window_end=now,
                message_id=make_message_id(outbox_key(d.subscriber_id, d.period.key), domain),
                items=planned,
                now=now,
                skip_if_empty=d.subscriber.on_empty == "skip",
            )
            if row_id is None:
                report.already_planned += 1
                continue
            if not planned and d.subscriber.on_empty == "skip":
                report.skipped_empty += 1
                log.info(
                    "nothing new for %s in period %s: skipped", d.subscriber.email, d.period.key
                )
            else:
                report.planned += 1
            report.items[d.subscriber.email] = len(planned)
    return report


_BLOCK = 4096  # subscribers whose items are built at once (bounded memory, batched speed)


def _blocks(
    members: Sequence[Due], result: MatchResult
) -> Iterator[tuple[int, Due, list[MatchItem]]]:
    """(index, due, items) per member; items are materialised a block at a time."""
    for begin in range(0, len(members), _BLOCK):
        block = result.items_range(begin, min(begin + _BLOCK, len(members)))
        for offset, items in enumerate(block):
            yield begin + offset, members[begin + offset], items


def _first_seen(paper: Paper) -> datetime:
    assert paper.first_seen is not None, "papers from the store always carry first_seen"
    return paper.first_seen
