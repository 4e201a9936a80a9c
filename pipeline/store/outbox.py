"""The outbox: the delivery ledger behind "nothing lost, nothing twice".

Life of a row: ``pending`` (planned, items frozen) -> ``claimed`` (owned by one sender,
which may be connecting, waiting for the server or past MAIL and RCPT: nothing that can
deliver the message has been written) -> ``sending`` (committed by the transport just
before it writes the bytes that end with DATA's final ".") -> ``sent`` | ``deferred``
(4xx, retried later with the same Message-ID) | ``failed`` (5xx or too old) |
``ambiguous`` (the connection broke after the final "."). ``claimed`` rows may also go
straight to ``deferred`` or ``failed`` (a 4xx or 5xx before DATA). Also ``skipped`` (an
empty period under the skip policy) and ``cancelled`` (unsubscribed before the claim).
A crash leaves rows ``claimed`` (safe to resend: no server can have the message) or
``sending`` (handled by the ambiguous-delivery policy). ``claimed_by`` names the holder,
``host:pid`` for the cycle's senders: see :meth:`OutboxStore.recover_dead`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    Update,
    bindparam,
    case,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pipeline.store.base import StoreBase
from pipeline.store.port import REQUEUEABLE, OutboxEntry
from pipeline.store.rows import (
    DELIVERIES,
    DELIVERY_ITEMS,
    SENT_ITEMS,
    SUBSCRIBERS,
)

OPEN = ("pending", "claimed", "sending", "deferred")


_deliveries = DELIVERIES
_subscribers = SUBSCRIBERS
_sent_items = SENT_ITEMS
_items = DELIVERY_ITEMS


class OutboxStore(StoreBase):
    # -- claiming and marking --------------------------------------------------------------------
    # Plain connections and Core statements: a sender makes two of these writes per message
    # (``sending`` at the transport's commit, the outcome after), and an ORM session for each
    # cost five times the statement.
    def claim(self, *, limit: int, holder: str, now: datetime) -> list[int]:
        """Atomically take up to ``limit`` due rows for this sender.

        SQLite: the write transaction starts with BEGIN IMMEDIATE, so no other writer runs
        between the select and the update. PostgreSQL: FOR UPDATE SKIP LOCKED, so two senders
        take disjoint rows without waiting for each other. The subscription is re-checked
        here: rows of readers who unsubscribed since planning are cancelled, not sent.
        """
        while True:  # a batch that was all cancelled is not the end of the queue
            active, examined = self._claim_batch(limit=limit, holder=holder, now=now)
            if active or not examined:
                return active

    def _claim_batch(self, *, limit: int, holder: str, now: datetime) -> tuple[list[int], int]:
        d, subscriber = _deliveries.c, _subscribers.c
        with self.begin() as conn:
            # One query per state, each read in the order of the (status, next_attempt_at)
            # index and merged here: with "status IN (...)" the database sorted every due
            # row for each claim, so a run's claims cost the square of its rows
            # (bench/E2E.md, "the claim query").
            rows: list[tuple[int, str, datetime]] = []
            for state in ("pending", "deferred"):
                query = (
                    select(d.id, subscriber.status, d.next_attempt_at)
                    .join_from(_deliveries, _subscribers, subscriber.id == d.subscriber_id)
                    .where(d.status == state, d.next_attempt_at <= now)
                    .order_by(d.next_attempt_at, d.id)
                    .limit(limit)
                )
                if self.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True, of=_deliveries)
                rows.extend((r.id, r.status, r.next_attempt_at) for r in conn.execute(query))
            rows = sorted(rows, key=lambda r: (r[2], r[0]))[:limit]
            active = [rid for rid, status, _ in rows if status == "active"]
            gone = [rid for rid, status, _ in rows if status != "active"]
            if active:
                conn.execute(
                    update(_deliveries)
                    .where(d.id.in_(active))
                    .values(status="claimed", claimed_by=holder, claimed_at=now)
                )
            if gone:
                conn.execute(
                    update(_deliveries)
                    .where(d.id.in_(gone))
                    .values(status="cancelled", last_error="unsubscribed before sending")
                )
                _release_items(conn, gone)
            return active, len(rows)

    def mark_sending(self, delivery_id: int, *, holder: str, now: datetime) -> bool:
        """``claimed`` by ``holder`` -> ``sending``, committed: the transport's commit, just
        before it writes the bytes that may deliver the message.

        False when the row is no longer this sender's claim (a stale claim that another
        sender's recovery returned to the queue and someone claimed again): then the
        caller must not send it.
        """
        return self._move(_TO_SENDING, delivery_id=delivery_id, holder=holder, now=now)

    def mark_sent(self, delivery_id: int, *, reply: str, now: datetime) -> bool:
        """``sending`` -> ``sent``, committed: call right after the server's reply."""
        return self._move(_TO_SENT, delivery_id=delivery_id, now=now, reply=reply[:1000])

    def mark_deferred(
        self,
        delivery_id: int,
        *,
        error: str,
        retry_at: datetime,
        now: datetime,
        holder: str | None = None,
    ) -> bool:
        """``claimed`` or ``sending`` -> ``deferred`` until ``retry_at``. From ``claimed``
        (a 4xx before DATA) it counts an attempt, as ``mark_sending`` does otherwise.

        With ``holder``, only that sender's row moves (False when its claim was lost);
        without, any (recovery of a dead or stale sender's rows).
        """
        params: dict[str, object] = {"retry_at": retry_at, "error": error[:2000]}
        if holder is None:
            return self._move(_TO_DEFERRED, delivery_id=delivery_id, **params)
        return self._move(_TO_DEFERRED_HELD, delivery_id=delivery_id, holder=holder, **params)

    def mark_failed(
        self, delivery_id: int, *, error: str, now: datetime, holder: str | None = None
    ) -> bool:
        """``claimed`` or ``sending`` -> ``failed``: its papers are released so a later
        digest may carry them. ``holder`` as for :meth:`mark_deferred`."""
        params: dict[str, object] = {"delivery_id": delivery_id, "error": error[:2000]}
        transition = _TO_FAILED
        if holder is not None:
            transition, params["holder"] = _TO_FAILED_HELD, holder
        with self.begin() as conn:
            if not conn.execute(transition, params).rowcount:
                return False
            _release_items(conn, [delivery_id])
            return True

    def mark_ambiguous(self, delivery_id: int, *, error: str, now: datetime) -> bool:
        return self._move(_TO_AMBIGUOUS, delivery_id=delivery_id, error=error[:2000])

    def release(self, delivery_ids: Sequence[int], *, holder: str) -> int:
        """Give this holder's ``claimed`` rows back untouched (the run stopped or aborted
        before they reached the transport's point of no return); returns how many.

        ``sending`` rows are never released: the server may have the message, and putting
        them back in the queue would risk a duplicate.
        """
        if not delivery_ids:
            return 0
        d = _deliveries.c
        released = 0
        with self.begin() as conn:
            for i in range(0, len(delivery_ids), 500):
                result = conn.execute(
                    update(_deliveries)
                    .where(
                        d.id.in_(delivery_ids[i : i + 500]),
                        d.status == "claimed",
                        d.claimed_by == holder,
                    )
                    .values(status="pending", claimed_by=None, claimed_at=None)
                )
                released += int(getattr(result, "rowcount", 0) or 0)
        return released

    def recover_dead(
        self, *, host: str, alive: Callable[[int], bool], now: datetime
    ) -> tuple[int, list[int]]:
        """Rows held by processes of ``host`` that are gone (``alive(pid)`` is False):
        their ``claimed`` rows go back to pending at once (nothing left the process);
        their ``sending`` rows are returned for the ambiguous-delivery policy, as
        :meth:`recover_stale` does. Holders are ``f"{host}:{pid}"`` (a runner's job adds
        ``:job-N``); others are left alone. Returns (rows returned to the queue, ids of
        stuck ``sending`` rows).
        """
        d = _deliveries.c
        prefix = f"{host}:"
        with self.connect() as conn:
            held = list(
                conn.execute(
                    select(d.id, d.status, d.claimed_by).where(
                        d.status.in_(("claimed", "sending")), d.claimed_by.is_not(None)
                    )
                )
            )
        dead: dict[str, bool] = {}
        for _, _, holder in held:
            if holder in dead or not holder.startswith(prefix):
                continue
            pid = holder[len(prefix) :].split(":", 1)[0]  # host:pid, or host:pid:job-N
            if pid.isdigit() and int(pid) > 0:
                dead[holder] = not alive(int(pid))
        gone = sorted(holder for holder, is_dead in dead.items() if is_dead)
        if not gone:
            return 0, []
        stuck = sorted(
            rid for rid, status, holder in held if status == "sending" and dead.get(holder)
        )
        with self.begin() as conn:
            # A dead holder claims nothing new, so guarding on the holder is enough.
            result = conn.execute(
                update(_deliveries)
                .where(d.status == "claimed", d.claimed_by.in_(gone))
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            reclaimed = int(getattr(result, "rowcount", 0) or 0)
        return reclaimed, stuck

    def recover_stale(self, *, now: datetime, older_than: timedelta) -> tuple[int, list[int]]:
        """After a crash: stale ``claimed`` rows go back to pending (nothing left the process);
        stale ``sending`` rows are returned for the ambiguous-delivery policy."""
        cutoff = now - older_than
        with self.begin() as conn:
            result = conn.execute(
                update(_deliveries)
                .where(_deliveries.c.status == "claimed", _deliveries.c.claimed_at < cutoff)
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            reclaimed = int(getattr(result, "rowcount", 0) or 0)
            stuck = list(
                conn.scalars(
                    select(_deliveries.c.id).where(
                        _deliveries.c.status == "sending", _deliveries.c.claimed_at < cutoff
                    )
                )
            )
        return reclaimed, stuck

    def _move(self, transition: Update, **params: object) -> bool:
        """Run one of the transitions below; False if the row was not in a state it leaves
        from (nothing is written then)."""
        with self.begin() as conn:
            return bool(conn.execute(transition, params).rowcount)

    # -- operator acts and listing (the Outbox port: pipeline.store.port) -----------------------
    def requeue(
        self,
        *,
        ids: Sequence[int] | None = None,
        statuses: Collection[str] = REQUEUEABLE,
        subscriber_id: int | None = None,
        now: datetime,
    ) -> int:
        """``failed`` / ``ambiguous`` rows back to ``pending``, due at ``now``, on an
        operator's word; see ``Outbox.requeue``.

        One write transaction: the rows are picked (locked on PostgreSQL, so a concurrent
        requeue waits and then finds them moved), their papers reserved again with
        INSERT ... ON CONFLICT DO NOTHING (a paper another row of the reader holds, also one
        a concurrent plan is inserting, stays that row's), the items that lost their paper
        deleted, and ``item_count`` recounted from what is left.
        """
        wanted = sorted(set(statuses))
        if others := [state for state in wanted if state not in REQUEUEABLE]:
            raise ValueError(f"requeue moves only failed and ambiguous rows, not {others}")
        if not wanted or (ids is not None and not ids):
            return 0
        d, it, si = _deliveries.c, _items.c, _sent_items.c
        insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
        reserve = insert(_sent_items).on_conflict_do_nothing(
            index_elements=[si.subscriber_id, si.paper_id]
        )
        drop = delete(_items).where(
            it.delivery_id == bindparam("did"), it.rank == bindparam("drank")
        )
        moved = 0
        with self.begin() as conn:
            query = select(d.id, d.subscriber_id).where(d.status.in_(wanted)).order_by(d.id)
            if ids is not None:
                query = query.where(d.id.in_(list(dict.fromkeys(ids))))
            if subscriber_id is not None:
                query = query.where(d.subscriber_id == subscriber_id)
            if self.dialect == "postgresql":
                query = query.with_for_update(of=_deliveries)
            rows = conn.execute(query).all()
            reader = {row.id: row.subscriber_id for row in rows}
            picked = list(reader)
            for i in range(0, len(picked), 500):
                chunk = picked[i : i + 500]
                # Oldest row first: when two requeued rows of one reader carry the same paper,
                # the older keeps it.
                items = conn.execute(
                    select(it.delivery_id, it.rank, it.paper_id)
                    .where(it.delivery_id.in_(chunk))
                    .order_by(it.delivery_id, it.rank)
                ).all()
                if items:
                    conn.execute(
                        reserve,
                        [
                            {
                                "subscriber_id": reader[item.delivery_id],
                                "paper_id": item.paper_id,
                                "delivery_id": item.delivery_id,
                            }
                            for item in items
                        ],
                    )
                    held = {
                        (row.delivery_id, row.paper_id)
                        for row in conn.execute(
                            select(si.delivery_id, si.paper_id).where(si.delivery_id.in_(chunk))
                        )
                    }
                    lost = [
                        {"did": item.delivery_id, "drank": item.rank}
                        for item in items
                        if (item.delivery_id, item.paper_id) not in held
                    ]
                    if lost:
                        conn.execute(drop, lost)
                remaining = (
                    select(func.count())
                    .select_from(_items)
                    .where(it.delivery_id == d.id)
                    .scalar_subquery()
                )
                result = conn.execute(
                    update(_deliveries)
                    .where(d.id.in_(chunk), d.status.in_(wanted))
                    .values(
                        status="pending",
                        next_attempt_at=now,
                        claimed_by=None,
                        claimed_at=None,
                        item_count=remaining,
                    )
                )
                moved += int(result.rowcount or 0)
        return moved

    def list_deliveries(
        self,
        *,
        statuses: Collection[str] | None = None,
        subscriber_id: int | None = None,
        period_key: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Outbox rows matching every filter given, newest first; see
        ``Outbox.list_deliveries``."""
        d, s = _deliveries.c, _subscribers.c
        query = (
            select(
                d.id,
                d.subscriber_id,
                s.email,
                d.period_key,
                d.status,
                d.attempts,
                d.next_attempt_at,
                d.created_at,
                d.sent_at,
                d.message_id,
                d.last_error,
                d.item_count,
            )
            .join_from(_deliveries, _subscribers, s.id == d.subscriber_id)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        )
        if statuses is not None:
            query = query.where(d.status.in_(sorted(set(statuses))))
        if subscriber_id is not None:
            query = query.where(d.subscriber_id == subscriber_id)
        if period_key is not None:
            query = query.where(d.period_key == period_key)
        with self.connect() as conn:
            return [
                OutboxEntry(
                    id=row.id,
                    subscriber_id=row.subscriber_id,
                    email=row.email,
                    period_key=row.period_key,
                    status=row.status,
                    attempts=row.attempts,
                    next_attempt_at=row.next_attempt_at,
                    created_at=row.created_at,
                    sent_at=row.sent_at,
                    message_id=row.message_id,
                    last_error=row.last_error,
                    item_count=row.item_count,
                )
                for row in conn.execute(query)
            ]


def _transition(from_states: tuple[str, ...], **values: object) -> Update:
    """``UPDATE deliveries SET values WHERE id = :delivery_id AND status IN from_states``.

    Built once, at import: a statement object that is reused keeps its cache key, so running
    it costs little more than the database's own work (building it per call cost as much).
    """
    d = _deliveries.c
    # One state: "=", which needs no expanding of an IN list at each run.
    guard = d.status == from_states[0] if len(from_states) == 1 else d.status.in_(from_states)
    return update(_deliveries).where(d.id == bindparam("delivery_id"), guard).values(**values)


_TO_SENDING = (
    _transition(
        ("claimed",),
        status="sending",
        claimed_at=bindparam("now"),
        attempts=_deliveries.c.attempts + 1,
    )
    # Only the sender whose claim it is may start the exchange.
    .where(_deliveries.c.claimed_by == bindparam("holder"))
)
_TO_SENT = _transition(
    ("sending",),
    status="sent",
    sent_at=bindparam("now"),
    server_reply=bindparam("reply"),
    last_error=None,
)
_TO_DEFERRED = _transition(
    ("sending", "claimed"),
    status="deferred",
    next_attempt_at=bindparam("retry_at"),
    last_error=bindparam("error"),
    claimed_by=None,
    # SET reads the row as it was: an attempt that ended before "sending" counts too.
    attempts=_deliveries.c.attempts + case((_deliveries.c.status == "claimed", 1), else_=0),
)
_TO_DEFERRED_HELD = _TO_DEFERRED.where(_deliveries.c.claimed_by == bindparam("holder"))
_TO_FAILED = _transition(
    ("sending", "claimed"), status="failed", last_error=bindparam("error"), claimed_by=None
)
_TO_FAILED_HELD = _TO_FAILED.where(_deliveries.c.claimed_by == bindparam("holder"))
_TO_AMBIGUOUS = _transition(
    ("sending",), status="ambiguous", last_error=bindparam("error"), claimed_by=None
)


def _release_items(db: Session | Connection, delivery_ids: Sequence[int]) -> None:
    db.execute(delete(_sent_items).where(_sent_items.c.delivery_id.in_(delivery_ids)))
