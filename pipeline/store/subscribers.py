"""Readers: their settings (the source of truth), the suppression list and their feedback.

The config file's subscribers reach the database through one writer, ``sync_subscribers``:
an idempotent upsert keyed on the address, safe when several processes sync at once (the
database settles a conflict, not the code). Every change of a reader's settings bumps its
``version``; an unsubscribe by link wins over the config until ``resubscribe``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row

from pipeline.domain import Profile, Reader, Schedule, Subscriber
from pipeline.store.base import StoreBase
from pipeline.store.rows import META, SUBSCRIBERS, SUPPRESSIONS, FeedbackRow, SubscriberRow
from pipeline.store.suppression import address_hash, may_resubscribe

_subscribers = SUBSCRIBERS
_CHUNK = 500  # rows per multi-row INSERT (SQLite allows 32,766 bound values)
# Paper ids per IN list of ``coreader_counts`` (looked up by ix_feedback_paper_id).
_PAPER_IDS = 5000


@dataclass(frozen=True)
class SubscriberState:
    id: int
    email: str
    name: str | None
    status: str  # active | unsubscribed | removed
    status_changed_at: datetime | None


@dataclass(frozen=True)
class SyncStats:
    added: int
    updated: int
    removed: int
    suppressed: int  # in the config but unsubscribed by link
    skipped: int = 0  # an import left alone: the address belongs to another origin


class SubscriberStore(StoreBase):
    def sync_subscribers(self, subscribers: Sequence[Subscriber], *, now: datetime) -> SyncStats:
        """Make the config's readers in the table match ``subscribers``.

        New addresses are added, changed settings are written (version + 1), readers gone
        from the config are marked ``removed`` (only those the config owns). An unsubscribe
        by link wins over the config. Safe to run in several processes at once.
        """
        return self._upsert(subscribers, origin="config", now=now, remove_missing=True)

    def import_subscribers(self, subscribers: Sequence[Subscriber], *, now: datetime) -> SyncStats:
        """Add or update readers from a bulk file (``paperpost subscribers import``).

        Addresses the config file owns are skipped (the file is their one writer) and
        counted; nobody is removed.
        """
        return self._upsert(subscribers, origin="import", now=now, remove_missing=False)

    def _upsert(
        self,
        subscribers: Sequence[Subscriber],
        *,
        origin: str,
        now: datetime,
        remove_missing: bool,
    ) -> SyncStats:
        from pipeline.store.lifecycle import apply_overrides

        wanted = {s.email: s for s in subscribers}
        records = {email: _record(sub) for email, sub in wanted.items()}
        c = _subscribers.c
        query = select(c.id, c.email, c.status, c.origin, c.fingerprint, c.overrides)
        with self.begin() as conn:
            if remove_missing:  # a sync: every row, to find who left the file
                present = {r.email: r for r in conn.execute(query)}
            else:  # an import (a chunk at a time): only the rows of these addresses
                emails = list(wanted)
                present = {
                    r.email: r
                    for i in range(0, len(emails), _CHUNK)
                    for r in conn.execute(query.where(c.email.in_(emails[i : i + _CHUNK])))
                }
            skipped = (
                {e for e in wanted if e in present and present[e].origin not in (origin, "import")}
                if origin == "import"
                # The subscribe page's readers belong to the readers, never to the file.
                else {e for e in wanted if e in present and present[e].origin == "self-service"}
            )
            # An erased (or otherwise suppressed) address that has no row is not added again.
            hashes = {address_hash(e): e for e in wanted if e not in present}
            erased = {
                hashes[h]
                for i in range(0, len(hashes), _CHUNK)
                for h in conn.scalars(
                    select(SUPPRESSIONS.c.address_hash).where(
                        SUPPRESSIONS.c.address_hash.in_(list(hashes)[i : i + _CHUNK])
                    )
                )
            }
            skipped_or_erased = skipped | erased
            for e, row in present.items():  # the reader's own edits win over the file's
                if e in records and row.origin == "config" and row.overrides:
                    records[e] = apply_overrides(records[e], row.overrides)
            changed = sorted(
                e
                for e, rec in records.items()
                if e not in skipped_or_erased
                and (
                    e not in present
                    or present[e].fingerprint != rec["fingerprint"]
                    or present[e].origin != origin
                    or present[e].status == "removed"
                )
            )
            # In address order, so two processes syncing at once lock rows in the same
            # order (no deadlock): the second waits for the first and then finds no change.
            for i in range(0, len(changed), _CHUNK):
                chunk = changed[i : i + _CHUNK]
                conn.execute(self._upsert_statement(origin, now), [records[e] for e in chunk])
            removed = 0
            if remove_missing:
                gone = [
                    r.id
                    for e, r in present.items()
                    if e not in wanted and r.origin == origin and r.status == "active"
                ]
                for i in range(0, len(gone), _CHUNK):
                    result = conn.execute(
                        update(_subscribers)
                        .where(c.id.in_(gone[i : i + _CHUNK]), c.status == "active")
                        .values(status="removed", status_changed_at=now, status_reason=origin)
                    )
                    removed += int(result.rowcount or 0)
        added = sum(1 for e in changed if e not in present)
        return SyncStats(
            added=added,
            updated=len(changed) - added,
            removed=removed,
            suppressed=len(erased)
            + sum(1 for e in wanted if e in present and present[e].status == "unsubscribed"),
            skipped=len(skipped),
        )

    def _upsert_statement(self, origin: str, now: datetime) -> Any:
        insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = insert(_subscribers).values(
            origin=origin,
            status="active",
            status_changed_at=now,
            status_reason=origin,
            created_at=now,
            updated_at=now,
            version=1,
        )
        c, new = _subscribers.c, stmt.excluded
        settings_changed = c.fingerprint != new.fingerprint
        return stmt.on_conflict_do_update(
            index_elements=[c.email],
            set_={
                "name": new.name,
                "timezone": new.timezone,
                "frequency": new.frequency,
                "send_at": new.send_at,
                "on_empty": new.on_empty,
                "profile": new.profile,
                "fingerprint": new.fingerprint,
                "origin": origin,
                "version": case((settings_changed, c.version + 1), else_=c.version),
                "updated_at": case((settings_changed, now), else_=c.updated_at),
                # Back from "removed"; an unsubscribe (a reader's own act) stays.
                "status": case((c.status == "removed", "active"), else_=c.status),
                "status_changed_at": case((c.status == "removed", now), else_=c.status_changed_at),
            },
        )

    # -- reading readers -----------------------------------------------------------------------
    def active_schedules(self, *, now: datetime | None = None) -> dict[int, Schedule]:
        """{reader id: schedule} of every active reader: what the dispatch tick needs to
        find who is due, without reading profiles. With ``now``, readers paused past it
        (the manage page's pause) are left out."""
        c = _subscribers.c
        query = select(c.id, c.frequency, c.send_at, c.timezone).where(c.status == "active")
        if now is not None:
            query = query.where(or_(c.paused_until.is_(None), c.paused_until <= now))
        with self.connect() as conn:
            rows = conn.execute(query)
            return {r.id: reader_schedule(r.frequency, r.send_at, r.timezone) for r in rows}

    def readers(self, ids: Collection[int]) -> dict[int, Reader]:
        """The readers among ``ids`` that exist, with their settings, by id."""
        out: dict[int, Reader] = {}
        wanted = sorted(set(ids))
        with self.connect() as conn:
            for i in range(0, len(wanted), _CHUNK):
                query = select(_subscribers).where(_subscribers.c.id.in_(wanted[i : i + _CHUNK]))
                out.update((r.id, _reader(r)) for r in conn.execute(query))
        return out

    def reader_by_email(self, email: str) -> Reader | None:
        with self.connect() as conn:
            row = conn.execute(
                select(_subscribers).where(_subscribers.c.email == email.strip().lower())
            ).first()
            if row is None:
                row = conn.execute(
                    select(_subscribers).where(_subscribers.c.email == email.strip())
                ).first()
            return _reader(row) if row is not None else None

    def list_readers(
        self, *, statuses: Collection[str] | None = None, origin: str | None = None
    ) -> Iterator[Reader]:
        """Readers in address order, optionally of some statuses and one origin."""
        c = _subscribers.c
        query = select(_subscribers).order_by(c.email)
        if statuses:
            query = query.where(c.status.in_(list(statuses)))
        if origin:
            query = query.where(c.origin == origin)
        with self.connect() as conn:
            rows = conn.execute(query).all()
        return (_reader(r) for r in rows)

    def liked_paper_ids(self) -> set[str]:
        """The papers active readers list under ``like`` (their metadata is fetched when the
        database lacks it)."""
        c = _subscribers.c
        with self.connect() as conn:
            rows = conn.execute(select(c.profile).where(c.status == "active"))
            return {pid for (profile,) in rows for pid in (profile or {}).get("like") or ()}

    def installation_id(self) -> str:
        """A random id created once per database: it makes Message-IDs unique across
        installations. Safe when several processes ask first at the same time."""
        import secrets

        insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
        meta = META
        with self.begin() as conn:
            conn.execute(
                insert(meta)
                .values(key="installation_id", value=secrets.token_hex(16))
                .on_conflict_do_nothing(index_elements=[meta.c.key])
            )
            value = conn.scalar(select(meta.c.value).where(meta.c.key == "installation_id"))
        assert value is not None
        return str(value)

    def subscriber_states(self) -> dict[str, SubscriberState]:
        with self.read() as s:
            return {r.email: _state(r) for r in s.scalars(select(SubscriberRow))}

    def subscriber_state(self, email: str) -> SubscriberState | None:
        with self.read() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            return _state(row) if row else None

    def unsubscribe(self, email: str, *, now: datetime, reason: str = "link") -> bool:
        """Put ``email`` on the suppression list. Idempotent; returns whether it was active."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                s.add(
                    SubscriberRow(
                        email=email,
                        status="unsubscribed",
                        status_changed_at=now,
                        status_reason=reason,
                        created_at=now,
                    )
                )
                return False
            if row.status in ("unsubscribed", "suppressed"):
                return False  # a suppression stays one: only its own rules lift it
            was_active = row.status == "active"
            row.status, row.status_changed_at, row.status_reason = "unsubscribed", now, reason
            return was_active

    def resubscribe(self, email: str, *, now: datetime, reason: str = "resubscribe") -> bool:
        """Undo an unsubscribe by link or by mail (``paperpost resubscribe``, the manage
        page); never past a bounce, a complaint or an erasure. Returns whether it changed."""
        digest = address_hash(email)
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            listed = s.scalar(
                select(SUPPRESSIONS.c.reason).where(SUPPRESSIONS.c.address_hash == digest)
            )
            if row is None or not may_resubscribe(row.status, listed):
                return False
            if listed is not None:
                s.execute(delete(SUPPRESSIONS).where(SUPPRESSIONS.c.address_hash == digest))
            row.status, row.status_changed_at, row.status_reason = "active", now, reason
            return True

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        """Record "more"/"less" for one paper; the latest signal for a paper wins."""
        if signal not in ("more", "less"):
            raise ValueError(f"feedback signal must be 'more' or 'less', found {signal!r}")
        with self.write() as s:
            sub = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if sub is None:
                return False
            # One statement, so two presses at once cannot both insert (unique key).
            upsert = (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(
                FeedbackRow
            ).values(subscriber_id=sub.id, paper_id=paper_id, signal=signal, created_at=now)
            s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[FeedbackRow.subscriber_id, FeedbackRow.paper_id],
                    set_={"signal": signal, "created_at": now},
                )
            )
            return True

    def feedback(self, subscriber_ids: Sequence[int]) -> dict[int, tuple[list[str], list[str]]]:
        """{subscriber id: (liked paper ids, disliked paper ids)} in the order given."""
        out: dict[int, tuple[list[str], list[str]]] = {i: ([], []) for i in subscriber_ids}
        with self.read() as s:
            for i in range(0, len(subscriber_ids), 500):
                chunk = list(subscriber_ids[i : i + 500])
                rows = s.scalars(
                    select(FeedbackRow)
                    .where(FeedbackRow.subscriber_id.in_(chunk))
                    .order_by(FeedbackRow.subscriber_id, FeedbackRow.created_at, FeedbackRow.id)
                )
                for row in rows:
                    likes, dislikes = out[row.subscriber_id]
                    (likes if row.signal == "more" else dislikes).append(row.paper_id)
        return out

    def coreader_counts(self, paper_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        """{paper id: (active readers who pressed "more" on it, those who pressed "less")}
        for the papers among ``paper_ids`` that any active reader pressed on. Counts only,
        never who: what the ``coreaders`` ranking term reads (pipeline.match.coreaders).
        One grouped query per ``_PAPER_IDS`` ids; a reader has one signal per paper (the
        latest)."""
        f, c = FeedbackRow.__table__.c, _subscribers.c
        more = func.sum(case((f.signal == "more", 1), else_=0))
        less = func.sum(case((f.signal == "less", 1), else_=0))
        wanted = sorted(set(paper_ids))
        out: dict[str, tuple[int, int]] = {}
        with self.connect() as conn:
            for i in range(0, len(wanted), _PAPER_IDS):
                query = (
                    select(f.paper_id, more, less)
                    .join(_subscribers, c.id == f.subscriber_id)
                    .where(f.paper_id.in_(wanted[i : i + _PAPER_IDS]), c.status == "active")
                    .group_by(f.paper_id)
                )
                out.update((pid, (int(m), int(x))) for pid, m, x in conn.execute(query))
        return out


def _state(row: SubscriberRow) -> SubscriberState:
    return SubscriberState(
        id=row.id,
        email=row.email,
        name=row.name,
        status=row.status,
        status_changed_at=row.status_changed_at,
    )


def _record(sub: Subscriber) -> dict[str, Any]:
    """A reader's settings as the table's columns, with their fingerprint."""
    sched, prof = sub.schedule, sub.profile
    profile = {
        "query": prof.query,
        "categories": list(prof.categories),
        "authors": list(prof.authors),
        "about": prof.about,
        "like": list(prof.like),
        "exclude": prof.exclude,
        "max_items": prof.max_items,
        "min_score": prof.min_score,
        "trending": prof.trending,
    }
    record: dict[str, Any] = {
        "email": sub.email,
        "name": sub.name,
        "timezone": sched.timezone,
        "frequency": sched.frequency,
        "send_at": sched.send_at.strftime("%H:%M"),
        "on_empty": sub.on_empty,
        "profile": profile,
    }
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    record["fingerprint"] = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    return record


def reader_schedule(frequency: str, send_at: str, timezone: str) -> Schedule:
    hh, mm = send_at.split(":")
    return Schedule(frequency=frequency, send_at=time(int(hh), int(mm)), timezone=timezone)


def _reader(row: Row[Any]) -> Reader:
    p: dict[str, Any] = row.profile or {}
    profile = Profile(
        query=p.get("query"),
        categories=tuple(p.get("categories") or ()),
        authors=tuple(p.get("authors") or ()),
        about=p.get("about"),
        like=tuple(p.get("like") or ()),
        exclude=p.get("exclude"),
        max_items=int(p.get("max_items", 15)),
        min_score=float(p.get("min_score", 0.0)),
        trending=int(p.get("trending", 0)),
    )
    subscriber = Subscriber(
        email=row.email,
        name=row.name,
        schedule=reader_schedule(row.frequency, row.send_at, row.timezone),
        profile=profile,
        on_empty="send" if row.on_empty == "send" else "skip",
    )
    return Reader(
        id=row.id, version=row.version, origin=row.origin, status=row.status, subscriber=subscriber
    )
