"""The outbox as a port: what a delivery ledger must do, whatever holds it.

Two implementations keep this contract: ``Store`` (SQLAlchemy over SQLite or PostgreSQL,
``pipeline.store.planning`` and ``pipeline.store.outbox``) and ``MemoryOutbox`` (plain
dicts, ``pipeline.store.memory``, for unit tests). ``tests/test_outbox_contract.py`` runs
one suite over all of them.

One row per (subscriber, period key). Its states:

``pending``
    Planned: its papers (the items) are frozen and reserved for the reader. Waits until
    ``next_attempt_at``.
``claimed``
    Owned by one sender (``claimed_by``, the *holder*); nothing handed to a transport yet,
    so giving it back or resending it can never make a second copy.
``sending``
    Committed immediately before the bytes ending with DATA's final dot are written. From
    here on the server may have the message.
``sent``
    The server accepted it (terminal).
``deferred``
    A temporary failure (a 4xx, before or after DATA), or an ambiguous exchange the
    at-least-once policy resends: claimed again once ``next_attempt_at`` passes, with the
    same Message-ID and the same items.
``failed``
    A permanent failure (5xx, not built, retried for too long). Its papers are released:
    a later digest may carry them. Leaves only through ``requeue``.
``ambiguous``
    The server may have accepted it (the exchange broke after the final dot). Reachable
    only from ``sending``. Its papers stay reserved. Leaves only through ``requeue``.
``skipped``
    An empty period under the skip policy, written so by ``plan_deliveries`` (terminal).
``cancelled``
    The reader was no longer active when a sender came to claim it; its papers are
    released (terminal).

Transitions, each made by one method and by no other::

    (new)               -> pending | skipped       plan_deliveries (plan_delivery: one)
    pending, deferred   -> claimed                 claim (due, reader active)
    pending, deferred   -> cancelled               claim (due, reader not active)
    claimed             -> sending                 mark_sending (by the holder only)
    sending             -> sent                    mark_sent
    claimed, sending    -> deferred                mark_deferred
    claimed, sending    -> failed                  mark_failed
    sending             -> ambiguous               mark_ambiguous
    claimed             -> pending                 release (by the holder only),
                                                   recover_stale, recover_dead
    failed, ambiguous   -> pending                 requeue (an operator's explicit act)

A method asked to move a row from any other state writes nothing and says so (``False``,
or the row is not counted). Nothing ever moves a ``sending`` row back to ``pending`` or
``claimed``: whether it left is unknown, so only the ambiguous-delivery policy decides
(``mark_deferred`` to resend with the same Message-ID, or ``mark_ambiguous``).

Claims and holders. A holder is a sender's name, ``"<host>:<pid>"`` for the real ones. A
claim is atomic: two senders claiming at once take disjoint rows. Only the holder may
start the exchange (``mark_sending``) or give its rows back (``release``). A sender
passes its name to ``mark_deferred`` and ``mark_failed`` too, so an outcome reached while
its claim was lost moves nothing; recovery, acting for a dead or stalled sender, passes
none. ``mark_sent`` and ``mark_ambiguous`` take the row's id alone: they leave only from
``sending``, which only the holder can have reached.

Leases. A claim is a lease without a renewal: ``claimed_at`` is set by ``claim`` and set
again by ``mark_sending``. ``recover_stale`` returns claims older than a limit to
``pending`` (nothing left the process, so that is safe) and reports stale ``sending``
rows; a sender whose claim went stale and was taken over finds ``mark_sending`` refused.
``recover_dead`` does the same at once, without waiting for the limit, for holders on
this host whose process is gone.

Reservations. Each (reader, paper) is reserved by at most one row, so a paper is never
sent twice to one reader. ``plan_deliveries`` drops items already reserved; ``failed`` and
``cancelled`` rows give theirs up; ``requeue`` takes a failed row's back, dropping those
another row of the same reader took in the meantime.

All datetimes are timezone-aware UTC; ``now`` is always the caller's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipeline.store.planning import PlannedDelivery, PlannedItem

STATES = (
    "pending",
    "claimed",
    "sending",
    "sent",
    "deferred",
    "failed",
    "ambiguous",
    "skipped",
    "cancelled",
)
# The only states ``requeue`` moves rows out of.
REQUEUEABLE = ("failed", "ambiguous")


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as an operator sees it (``list_deliveries``)."""

    id: int
    subscriber_id: int
    email: str
    period_key: str
    status: str
    attempts: int  # how many times it reached ``sending``
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    message_id: str
    last_error: str | None
    item_count: int


@runtime_checkable
class Outbox(Protocol):
    """The delivery ledger behind "nothing lost, nothing twice" (see the module docstring
    for the states and transitions)."""

    # -- planning --------------------------------------------------------------------------
    def periods_present(self, pairs: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which of the (subscriber id, period key) pairs already have a row, in any state."""

    def last_window_ends(self, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
        """End of each subscriber's last *covered* window: the newest ``window_end`` among
        its rows that are not ``failed`` or ``cancelled``. Absent: never had a digest."""

    def reserved_papers(
        self, subscriber_ids: Sequence[int], paper_ids: Collection[str]
    ) -> dict[int, set[str]]:
        """Papers among ``paper_ids`` reserved for each subscriber (planned, on their way
        or sent). Subscribers with none are absent."""

    def plan_delivery(
        self,
        *,
        subscriber_id: int,
        period_key: str,
        window_start: datetime,
        window_end: datetime,
        message_id: str,
        items: Sequence[PlannedItem],
        now: datetime,
        subscriber_version: int,
        skip_if_empty: bool = True,
    ) -> int | None:
        """``plan_deliveries`` for one row: the new row's id, or None when (subscriber,
        period key) already has a row."""

    def plan_deliveries(
        self, plans: Sequence[PlannedDelivery], *, now: datetime
    ) -> list[int | None]:
        """Write a block of new rows, each ``pending`` and due at ``now`` with its items,
        reserving each item's paper for its subscriber: the whole block in one atomic step.

        Returns one entry per plan, in order: the new row's id, or None when the row's
        (subscriber, period key) already has a row, also one written earlier in the same
        block. There is never a second row, also when two planners race; a row not
        written reserves nothing.

        The block reads as if its plans were written one after another: a row's items
        whose paper its subscriber already has reserved (by an earlier row, also one
        earlier in the block, or by a planner writing at the same moment) are dropped, the
        rest keep their order; if none is left and the plan's ``skip_if_empty``, the row is
        written ``skipped`` instead. ``item_count`` is the number of items written.
        ``subscriber_version`` (the version of the reader's settings it was planned under)
        is recorded on the row.

        A plan naming one paper twice among its items, or a subscriber the outbox does not
        know, is an error (``StoreError``), and nothing of the block is written.
        """

    # -- sending ---------------------------------------------------------------------------
    def claim(self, *, limit: int, holder: str, now: datetime) -> list[int]:
        """Atomically take due rows for ``holder``: ``pending`` or ``deferred`` with
        ``next_attempt_at <= now``, oldest due first (then by id), at most ``limit`` of them
        examined. Those of active readers become ``claimed`` by ``holder`` (``claimed_at =
        now``) and their ids are returned in that order; those of readers no longer active
        become ``cancelled`` and their papers are released.

        An empty answer means no due row is left: a batch that was all cancelled is
        followed by the next one within the call. Concurrent claims never share a row.
        """

    def mark_sending(self, delivery_id: int, *, holder: str, now: datetime) -> bool:
        """``claimed`` by ``holder`` -> ``sending``; ``attempts`` + 1, ``claimed_at = now``.
        Call, and let it commit, just before the hand-off to the transport.

        False when the row is not ``claimed`` by ``holder`` (another sender's recovery took
        a stale claim back and someone claimed it again): the caller must not send it.
        """

    def mark_sent(self, delivery_id: int, *, reply: str, now: datetime) -> bool:
        """``sending`` -> ``sent`` (``sent_at = now``, the server's reply kept, the last
        error cleared). False, and nothing written, from any other state."""

    def mark_deferred(
        self,
        delivery_id: int,
        *,
        error: str,
        retry_at: datetime,
        now: datetime,
        holder: str | None = None,
    ) -> bool:
        """``claimed`` or ``sending`` -> ``deferred``, due again at ``retry_at``; the holder
        is cleared. From ``claimed`` (a 4xx before DATA) it counts an attempt, as
        ``mark_sending`` does on the other path.

        With ``holder``, only a row held by that sender moves; without, any. False, and
        nothing written, when the row does not move.
        """

    def mark_failed(
        self, delivery_id: int, *, error: str, now: datetime, holder: str | None = None
    ) -> bool:
        """``claimed`` or ``sending`` -> ``failed``; the holder is cleared and the row's
        papers are released (a later digest may carry them). ``holder`` as for
        ``mark_deferred``. False, and nothing written, when the row does not move."""

    def mark_ambiguous(self, delivery_id: int, *, error: str, now: datetime) -> bool:
        """``sending`` -> ``ambiguous`` (the server may have the message; not resent); the
        holder is cleared, the papers stay reserved. False, and nothing written, from any
        other state."""

    def release(self, delivery_ids: Sequence[int], *, holder: str) -> int:
        """Give rows back untouched: those among ``delivery_ids`` that are ``claimed`` by
        ``holder`` go back to ``pending`` (holder cleared, due as before); returns how many.
        Rows in any other state, another holder's, and above all ``sending`` rows, are left
        alone."""

    # -- recovery and operator acts --------------------------------------------------------
    def recover_stale(self, *, now: datetime, older_than: timedelta) -> tuple[int, list[int]]:
        """The lease rule. ``claimed`` rows with ``claimed_at`` before ``now - older_than``
        go back to ``pending`` (nothing left the process); their number is returned first.
        The ids of ``sending`` rows as old are returned second, unchanged, for the
        ambiguous-delivery policy."""

    def recover_dead(
        self, *, host: str, alive: Callable[[int], bool], now: datetime
    ) -> tuple[int, list[int]]:
        """Like ``recover_stale``, at once and by holder: rows whose holder is
        ``"<host>:<pid>"`` (a positive pid) with ``alive(pid)`` false. Their ``claimed``
        rows go back to ``pending`` (the number is returned first); the ids of their
        ``sending`` rows are returned second, unchanged, in id order. Holders of other
        hosts, or not of that form, are left alone."""

    def requeue(
        self,
        *,
        ids: Sequence[int] | None = None,
        statuses: Collection[str] = REQUEUEABLE,
        subscriber_id: int | None = None,
        now: datetime,
    ) -> int:
        """An operator's explicit act: rows among ``ids`` (None: all), in ``statuses``, of
        ``subscriber_id`` (None: anyone's) go back to ``pending``, due at ``now``, holder
        cleared, Message-ID kept. Only ``failed`` and ``ambiguous`` rows ever move;
        ``statuses`` naming any other state is a ``ValueError``.

        A row's papers are reserved for it again (a ``failed`` row had given them up); an
        item whose paper another row of the same reader reserved in the meantime is dropped
        from it, and ``item_count`` follows (a row left with no items stays ``pending``).
        Returns the number of rows moved.
        """

    # -- reading ---------------------------------------------------------------------------
    def list_deliveries(
        self,
        *,
        statuses: Collection[str] | None = None,
        subscriber_id: int | None = None,
        period_key: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Rows matching every filter given (None: any), newest first (``created_at``,
        then id), at most ``limit``."""

    def outbox_counts(self) -> dict[str, int]:
        """{state: number of rows}; states with no rows are absent."""


if TYPE_CHECKING:
    from pipeline.store import Store
    from pipeline.store.memory import MemoryOutbox

    def _implementations(store: Store, memory: MemoryOutbox) -> list[Outbox]:
        """Never called: ``mypy`` fails here if an implementation drifts from the port
        (tests/test_outbox_contract.py checks the same at run time)."""
        return [store, memory]
