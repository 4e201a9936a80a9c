"""Bounces, complaints and mailed unsubscribes, and the suppression list they feed.

An address is suppressed by a hard bounce, by ``soft_limit`` soft bounces within
``soft_days``, by a complaint, or by a mail to the unsubscribe address (reason
``unsubscribe_mail``). The last is the reader's own choice, so it is the one suppression
the reader may lift (:data:`READER_LIFTABLE`: the manage page's "Subscribe again", or
``paperpost resubscribe``); a later bounce or complaint makes it permanent.
Suppressions are kept as the sha256 of the normalised address (stripped, lower-cased), so
they outlive an erased reader without keeping the address. Each report is recorded once
per address: re-reading a mailbox changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from pipeline.store.base import StoreBase
from pipeline.store.rows import BOUNCE_EVENTS, DELIVERIES, SUBSCRIBERS, SUPPRESSIONS

Outcome = Literal["duplicate", "recorded", "suppressed", "unsubscribed"]
# Statuses a suppression overrides.
_SUPPRESSIBLE: Final = ("active", "pending", "removed", "unsubscribed")
# Suppression reasons the reader may lift themselves: their own request, not the mail
# system's verdict (a bounce, a complaint) nor an erasure.
READER_LIFTABLE: Final = frozenset({"unsubscribe_mail"})


def may_resubscribe(status: str, suppression: str | None) -> bool:
    """Whether a reader with ``status``, whose address is listed for ``suppression`` (None:
    not listed), may come back by their own act."""
    if suppression is not None and suppression not in READER_LIFTABLE:
        return False
    return status == "unsubscribed" or (status == "suppressed" and suppression is not None)


def address_hash(address: str) -> str:
    """The key of an address in ``suppressions`` and ``bounce_events``."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class BounceRates:
    """Events against digests sent over the same window (the rates are None without sends)."""

    days: int
    sent: int
    bounces: int  # hard and soft
    complaints: int

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None


class SuppressionStore(StoreBase):
    def delivery_recipient(self, delivery_id: int) -> tuple[int, str] | None:
        """(reader id, address) of an outbox row, or None if there is no such row."""
        d, s = DELIVERIES.c, SUBSCRIBERS.c
        with self.connect() as conn:
            row = conn.execute(
                select(s.id, s.email)
                .select_from(DELIVERIES.join(SUBSCRIBERS, d.subscriber_id == s.id))
                .where(d.id == delivery_id)
            ).first()
        return (int(row.id), str(row.email)) if row is not None else None

    def record_bounce_event(
        self,
        *,
        address: str,
        kind: str,
        detail: str,
        report_id: str,
        delivery_id: int | None,
        received_at: datetime,
        soft_limit: int,
        soft_days: int,
        now: datetime,
    ) -> Outcome:
        """Record one event and apply the suppression rules, in one transaction.

        ``duplicate`` when this report was already recorded for this address (nothing
        changes); otherwise whether it suppressed or unsubscribed the address.
        """
        digest = address_hash(address)
        e = BOUNCE_EVENTS.c
        with self.begin() as conn:
            reader_id = self._reader_id(conn, address)
            insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
            result = conn.execute(
                insert(BOUNCE_EVENTS)
                .values(
                    address_hash=digest,
                    subscriber_id=reader_id,
                    delivery_id=delivery_id,
                    kind=kind,
                    detail=detail,
                    report_id=report_id,
                    received_at=received_at,
                )
                .on_conflict_do_nothing(index_elements=[e.report_id, e.address_hash])
                .returning(e.id)  # rowcount is -1 here on psycopg; RETURNING tells
            )
            if result.first() is None:
                return "duplicate"
            if kind == "unsubscribe":
                # Suppressed like a bounce, but the reader may lift it (READER_LIFTABLE).
                listed = self._suppress(conn, digest, "unsubscribe_mail", detail, now)
                changed = self._set_status(
                    conn, address, "suppressed", "unsubscribe_mail", _SUPPRESSIBLE, now
                )
                return "unsubscribed" if changed or listed else "recorded"
            reason = {"hard": "hard_bounce", "complaint": "complaint"}.get(kind)
            if kind == "soft":
                since = now - timedelta(days=soft_days)
                count = conn.scalar(
                    select(func.count())
                    .select_from(BOUNCE_EVENTS)
                    .where(e.address_hash == digest, e.kind == "soft", e.received_at >= since)
                )
                if int(count or 0) >= soft_limit:
                    reason = "soft_bounces"
                    detail = f"{count} soft bounces within {soft_days} days; last: {detail}"
            if reason is None:
                return "recorded"
            listed = self._suppress(conn, digest, reason, detail, now)
            # A newly listed (or hardened) address gets the new reason whatever its status.
            statuses = (*_SUPPRESSIBLE, "suppressed") if listed else _SUPPRESSIBLE
            changed = self._set_status(conn, address, "suppressed", reason, statuses, now)
            # Only news is reported: an address already suppressed stays as it was.
            return "suppressed" if changed or listed else "recorded"

    def _reader_id(self, conn: Connection, address: str) -> int | None:
        s = SUBSCRIBERS.c
        found = conn.scalar(select(s.id).where(func.lower(s.email) == address.strip().lower()))
        return int(found) if found is not None else None

    def _suppress(
        self, conn: Connection, digest: str, reason: str, detail: str, now: datetime
    ) -> bool:
        """List the address; False if it was listed already. The first reason stays (a
        later complaint does not rewrite a hard bounce), except that a bounce or complaint
        replaces a reason the reader could lift: the address is now the mail system's call."""
        insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
        result = conn.execute(
            insert(SUPPRESSIONS)
            .values(address_hash=digest, reason=reason, detail=detail, created_at=now)
            .on_conflict_do_nothing(index_elements=[SUPPRESSIONS.c.address_hash])
            .returning(SUPPRESSIONS.c.address_hash)
        )
        if result.first() is not None:
            return True
        if reason in READER_LIFTABLE:
            return False
        s = SUPPRESSIONS.c
        hardened = conn.execute(
            update(SUPPRESSIONS)
            .where(s.address_hash == digest, s.reason.in_(READER_LIFTABLE))
            .values(reason=reason, detail=detail, created_at=now)
        )
        return bool(hardened.rowcount)

    def _set_status(
        self,
        conn: Connection,
        address: str,
        status: str,
        reason: str,
        overridable: Collection[str],
        now: datetime,
    ) -> bool:
        s = SUBSCRIBERS.c
        result = conn.execute(
            update(SUBSCRIBERS)
            .where(func.lower(s.email) == address.strip().lower(), s.status.in_(overridable))
            .values(status=status, status_reason=reason, status_changed_at=now)
        )
        return bool(result.rowcount)

    def status_reasons(self, statuses: Collection[str]) -> dict[str, str]:
        """{address: reason} of the readers in ``statuses`` that have one."""
        s = SUBSCRIBERS.c
        with self.connect() as conn:
            rows = conn.execute(
                select(s.email, s.status_reason).where(
                    s.status.in_(list(statuses)), s.status_reason.is_not(None)
                )
            )
            return {str(r.email): str(r.status_reason) for r in rows}

    def bounce_rates(self, *, now: datetime, days: int = 7) -> BounceRates:
        """Bounces and complaints received, and digests sent, over the last ``days``."""
        since = now - timedelta(days=days)
        e, d = BOUNCE_EVENTS.c, DELIVERIES.c
        with self.connect() as conn:
            rows = conn.execute(
                select(e.kind, func.count()).where(e.received_at >= since).group_by(e.kind)
            )
            counts = {str(kind): int(n) for kind, n in rows}
            sent = conn.scalar(
                select(func.count())
                .select_from(DELIVERIES)
                .where(and_(d.status == "sent", d.sent_at >= since))
            )
        return BounceRates(
            days=days,
            sent=int(sent or 0),
            bounces=int(counts.get("hard", 0)) + int(counts.get("soft", 0)),
            complaints=int(counts.get("complaint", 0)),
        )
