"""Retention (`paperpost prune`, daily in the daemon) on SQLite and PostgreSQL: ~500 days of
outbox rows, runs and bounce events written by the store's own writers, then pruned at
``[database] retention_days`` (400)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline.cycle.plan import due_ids
from pipeline.domain import Profile, Schedule, Subscriber
from pipeline.errors import ConfigError
from pipeline.schedule.periods import latest_due_period
from pipeline.store import PlannedDelivery, PlannedItem, Store
from pipeline.store.rows import (
    BOUNCE_EVENTS,
    DELIVERIES,
    DELIVERY_ITEMS,
    SENT_ITEMS,
    SUPPRESSIONS,
    RunRow,
)

DAY = timedelta(days=1)
START = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)  # day 0's digests are planned at 08:00
DAYS = 500
NOW = START + DAYS * DAY + timedelta(hours=1)  # day 500, after its digests fell due
RETENTION = 400
CUTOFF = NOW - RETENTION * DAY  # day 100 at 09:00: days 0..100 are older
HOLDER = "retention-test:1"


def subscriber(email: str) -> Subscriber:
    return Subscriber(
        email=email, name=None, schedule=Schedule("daily", time(8), "UTC"), profile=Profile()
    )


def key(day: int) -> str:
    return (START + day * DAY).date().isoformat()


@dataclass
class History:
    """What was written: reader ids by name, row ids by (name, day), statuses by row."""

    ids: dict[str, int] = field(default_factory=dict)
    rows: dict[tuple[str, int], int] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)


# The readers' histories: (name, days with a row, status of each day's row).
#   ada: every day, sent; the everyday reader.
#   bob: days 0..49, sent, then unsubscribed: every row is old, his newest stays.
#   cyd: every day, with old rows that are skipped, failed, cancelled or still on their way.
#   dee: days 0..30, sent, then a failed one: the newest (failed) and the newest covered stay.
READERS = ("ada", "bob", "cyd", "dee")
CYD_OLD = {
    3: "skipped",
    4: "failed",
    5: "cancelled",
    6: "pending",
    7: "deferred",
    8: "ambiguous",
    9: "sending",
    10: "claimed",
}


def status_of(name: str, day: int) -> str | None:
    """The final status of ``name``'s row for ``day`` (None: no row)."""
    if name == "bob":
        return "sent" if day < 50 else None
    if name == "dee":
        return None if day > 30 else ("failed" if day == 30 else "sent")
    if name == "cyd":
        return CYD_OLD.get(day, "sent")
    return "sent"


def build(store: Store) -> History:
    history = History()
    store.sync_subscribers([subscriber(f"{n}@lab.example") for n in READERS], now=START)
    for name in READERS:
        state = store.subscriber_state(f"{name}@lab.example")
        assert state is not None
        history.ids[name] = state.id
    for day in range(DAYS):
        now = START + day * DAY
        plans = []
        for name in READERS:
            if status_of(name, day) is None:
                continue
            sid = history.ids[name]
            plans.append(
                PlannedDelivery(
                    subscriber_id=sid,
                    period_key=key(day),
                    window_start=now - DAY,
                    window_end=now,
                    message_id=f"<{sid}.{key(day)}@paperpost.test>",
                    # One paper of its own per row and day, plus one shared by all.
                    items=[]
                    if status_of(name, day) == "skipped"  # an empty period: written skipped
                    else [
                        PlannedItem(f"p{day}", 0.9, "shared"),
                        PlannedItem(f"p{day}-{name}", 0.5, "own"),
                    ],
                )
            )
        written = store.plan_deliveries(plans, now=now)
        for plan, row_id in zip(plans, written, strict=True):
            assert row_id is not None
            name = next(n for n, i in history.ids.items() if i == plan.subscriber_id)
            history.rows[(name, day)] = row_id
        claimed = store.claim(limit=10, holder=HOLDER, now=now)
        by_row = {
            row_id: (name, d)
            for (name, d), row_id in history.rows.items()
            if d == day and status_of(name, d) != "skipped"
        }
        # The old pending row is due again each day: given back untouched.
        if stale := [row_id for row_id in claimed if row_id not in by_row]:
            assert store.release(stale, holder=HOLDER) == len(stale)
        assert sorted(set(claimed) - set(stale)) == sorted(by_row)
        for row_id in by_row:
            name, _ = by_row[row_id]
            move(store, row_id, status_of(name, day) or "", now + timedelta(minutes=5))
    store.unsubscribe("bob@lab.example", now=START + 50 * DAY)
    with store.connect() as conn:
        history.status = dict(conn.execute(select(DELIVERIES.c.id, DELIVERIES.c.status)).all())
    return history


def move(store: Store, row_id: int, status: str, now: datetime) -> None:
    """Take a claimed row to ``status`` by the outbox's own transitions."""
    if status == "claimed":
        return
    if status == "pending":
        assert store.release([row_id], holder=HOLDER) == 1
        return
    if status == "cancelled":
        # What claim does for a reader no longer active: give it back, then cancel it.
        assert store.release([row_id], holder=HOLDER) == 1
        with store.begin() as conn:
            conn.execute(
                DELIVERIES.update().where(DELIVERIES.c.id == row_id).values(status="cancelled")
            )
        return
    if status == "failed":
        assert store.mark_failed(row_id, error="550 no", now=now, holder=HOLDER)
        return
    assert store.mark_sending(row_id, holder=HOLDER, now=now)
    if status == "sent":
        assert store.mark_sent(row_id, reply="250 ok", now=now)
    elif status == "deferred":
        assert store.mark_deferred(row_id, error="451", retry_at=NOW + 30 * DAY, now=now)
    elif status == "ambiguous":
        assert store.mark_ambiguous(row_id, error="broken", now=now)


def counts(store: Store) -> dict[str, int]:
    tables = {
        "deliveries": DELIVERIES,
        "delivery_items": DELIVERY_ITEMS,
        "sent_items": SENT_ITEMS,
        "runs": RunRow.__table__,
        "bounce_events": BOUNCE_EVENTS,
        "suppressions": SUPPRESSIONS,
    }
    with store.connect() as conn:
        return {
            name: int(conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]
            for name, table in tables.items()
        }


def expected_gone(history: History) -> set[int]:
    """The rows the rules delete: terminal, older than the cutoff, not a reader's newest
    row nor newest covered one."""
    gone = set()
    for (name, day), row_id in history.rows.items():
        days = sorted(d for (n, d) in history.rows if n == name)
        covered = [
            d
            for d in days
            if history.status[history.rows[(name, d)]] not in ("failed", "cancelled")
        ]
        old = START + day * DAY < CUTOFF - timedelta(minutes=5)
        terminal = history.status[row_id] in ("sent", "skipped", "failed", "cancelled")
        if old and terminal and day != days[-1] and day != covered[-1]:
            gone.add(row_id)
    return gone


def add_runs_and_bounces(store: Store) -> None:
    for day in (10, 50, 99, 101, 300, 499):
        started = START + day * DAY
        store.record_run(
            "dispatch", started=started, finished=started + timedelta(minutes=1), summary={}
        )
    store.start_run("ingest", started=START + 5 * DAY)  # never finished (a killed process)
    for n, (day, kind) in enumerate([(20, "soft"), (60, "hard"), (99, "soft"), (450, "soft")]):
        received = START + day * DAY
        store.record_bounce_event(
            address=f"{['ada', 'bob', 'cyd', 'dee'][n]}@lab.example",
            kind=kind,
            detail="test",
            report_id=f"<report-{n}@mx.test>",
            delivery_id=None,
            received_at=received,
            soft_limit=3,
            soft_days=7,
            now=received,
        )


def test_prune_keeps_what_planning_and_links_need_and_deletes_the_rest(store: Store) -> None:
    history = build(store)
    add_runs_and_bounces(store)
    before = counts(store)
    assert before["suppressions"] == 1  # bob's hard bounce
    ends_before = store.last_window_ends(sorted(history.ids.values()))
    gone = expected_gone(history)
    # days 0..100 of ada (101), bob's 49, cyd's 101 less 5 on their way, dee's 29
    assert len(gone) == 101 + 49 + 96 + 29

    # A dry run says what would go and deletes nothing.
    dry = store.prune(cutoff=CUTOFF, dry_run=True, batch_size=7)
    assert counts(store) == before
    pruned = store.prune(cutoff=CUTOFF, batch_size=7)  # small batches: many transactions
    assert dry == pruned

    assert pruned.deliveries == len(gone)
    with store.connect() as conn:
        left = set(conn.scalars(select(DELIVERIES.c.id)))
        items_left = set(conn.scalars(select(DELIVERY_ITEMS.c.delivery_id)))
        reserved_left = set(conn.scalars(select(SENT_ITEMS.c.delivery_id)))
    assert left == set(history.status) - gone
    # Their items and reserved papers went with them, and only theirs.
    assert not (items_left | reserved_left) & gone
    skipped = sum(1 for row_id in gone if history.status[row_id] == "skipped")
    assert pruned.delivery_items == 2 * (len(gone) - skipped)  # two items per row
    released = sum(1 for row_id in gone if history.status[row_id] in ("failed", "cancelled"))
    # Failed rows released their papers already; cancelled ones are given back below
    # without a release (as the test moves them), so they still hold theirs.
    assert pruned.sent_items == 2 * (len(gone) - skipped - released) + 2 * sum(
        1 for row_id in gone if history.status[row_id] == "cancelled"
    )

    ids = history.ids
    # Each reader's newest row stays, even when old (bob's last is 450 days old).
    assert history.rows[("bob", 49)] in left
    assert not any(history.rows[("bob", d)] in left for d in range(49))
    # dee: the newest row (failed) and the newest covered one (day 29) stay.
    assert {history.rows[("dee", 29)], history.rows[("dee", 30)]} <= left
    assert history.rows[("dee", 28)] not in left
    # Rows still on their way stay, however old; old terminal ones go.
    for day, status in CYD_OLD.items():
        assert (history.rows[("cyd", day)] in left) == (
            status not in ("skipped", "failed", "cancelled")
        ), status
    # The history since the cutoff is untouched.
    assert all(history.rows[(n, d)] in left for (n, d) in history.rows if d > 100)

    # Runs finished before the cutoff went; the unfinished one stays however old.
    assert pruned.runs == 3
    runs = store.last_runs(20)
    assert sorted((r.kind, r.finished_at is None) for r in runs) == [
        ("dispatch", False),
        ("dispatch", False),
        ("dispatch", False),
        ("ingest", True),
    ]
    # Bounce events before the cutoff went; suppressions stay.
    assert pruned.bounce_events == 3
    after = counts(store)
    assert after["bounce_events"] == 1 and after["suppressions"] == 1
    assert after["deliveries"] == before["deliveries"] - len(gone)

    # Planning reads the same window ends as before: no window starts over.
    assert store.last_window_ends(sorted(ids.values())) == ends_before

    # A second prune finds nothing.
    again = store.prune(cutoff=CUTOFF, batch_size=7)
    assert again.total == 0

    # Planning the next period: exactly one new row per active reader, for today, and no
    # old period is planned again.
    due = due_ids(store, now=NOW)
    assert due == sorted(ids[n] for n in ("ada", "cyd", "dee"))
    today = key(DAYS)
    for sid in due:
        schedule = store.active_schedules(now=NOW)[sid]
        period = latest_due_period(schedule, NOW)
        assert period is not None and period.key == today
        assert store.plan_delivery(
            subscriber_id=sid,
            period_key=period.key,
            window_start=ends_before[sid],
            window_end=NOW,
            message_id=f"<{sid}.{period.key}@paperpost.test>",
            items=[],
            now=NOW,
        )
    assert due_ids(store, now=NOW) == []
    with store.connect() as conn:
        new = conn.execute(
            select(DELIVERIES.c.subscriber_id, DELIVERIES.c.period_key).where(
                DELIVERIES.c.created_at == NOW
            )
        ).all()
    assert sorted(new) == sorted((sid, today) for sid in due)
    # Every later tick of the day finds nothing due; days pruned away never come back.
    for hours in (1, 6, 12):
        assert due_ids(store, now=NOW + timedelta(hours=hours)) == []


def test_the_period_a_schedule_has_due_is_kept_however_old(store: Store) -> None:
    """A reader on a schedule that fires once a year: the row of the period due now is
    planning's proof that it was planned, so ``keep`` protects it whatever its age."""
    yearly = Subscriber(
        email="yearly@lab.example",
        name=None,
        schedule=Schedule("cron:0 8 1 1 *", time(8), "UTC"),
        profile=Profile(),
    )
    store.sync_subscribers([yearly], now=START)
    state = store.subscriber_state("yearly@lab.example")
    assert state is not None
    schedule = store.active_schedules()[state.id]
    now = datetime(2026, 12, 30, 12, 0, tzinfo=UTC)
    period = latest_due_period(schedule, now)
    assert period is not None
    due_at = period.due_at
    # An older row of another period, planned after it (a schedule changed back and
    # forth), makes the due period's row not the newest.
    first = store.plan_delivery(
        subscriber_id=state.id,
        period_key=period.key,
        window_start=due_at - DAY,
        window_end=due_at,
        message_id="<y1@paperpost.test>",
        items=[],
        now=due_at,
    )
    store.plan_delivery(
        subscriber_id=state.id,
        period_key="2026-01-02",
        window_start=due_at,
        window_end=due_at + DAY,
        message_id="<y2@paperpost.test>",
        items=[],
        now=due_at + DAY,
    )
    store.plan_delivery(
        subscriber_id=state.id,
        period_key="2026-01-03",
        window_start=due_at + DAY,
        window_end=due_at + 2 * DAY,
        message_id="<y3@paperpost.test>",
        items=[],
        now=due_at + 2 * DAY,
    )
    cutoff = now - 30 * DAY
    unprotected = store.prune(cutoff=cutoff, dry_run=True)
    assert unprotected.deliveries == 2  # the due period's row and 2026-01-02
    kept = store.prune(cutoff=cutoff, keep={(state.id, period.key)})
    assert kept.deliveries == 1
    assert store.periods_present({(state.id, period.key)}) == {(state.id, period.key)}
    assert due_ids(store, now=now) == []
    assert first is not None


# -- the application, the CLI and the daemon -------------------------------------------------
def test_app_prune_uses_the_setting_and_logs_one_record(
    write_config, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.app import App
    from pipeline.config import load_config

    config = load_config(write_config(db_url=db_url))
    assert config.file.database.retention_days == 400
    with App(config) as app:
        app.upgrade_database()
        app.store.record_run(
            "dispatch", started=START, finished=START + timedelta(minutes=1), summary={}
        )
        app.store.record_run("dispatch", started=NOW, finished=NOW, summary={})
        with caplog.at_level("INFO", logger="paperpost.app"):
            dry = app.prune(now=NOW, dry_run=True)
            report = app.prune(now=NOW)
    assert dry.dry_run and dry.counts == report.counts and report.counts.runs == 1
    assert report.cutoff == NOW - 400 * DAY
    records = [r for r in caplog.records if getattr(r, "event", None) == "pruned"]
    assert len(records) == 2
    assert records[-1].runs == 1 and records[-1].deliveries == 0  # type: ignore[attr-defined]


def test_cli_prune_prints_the_counts(write_config, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    path = write_config()
    assert main(["-c", str(path), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and "deliveries" in out and "bounce_events" in out
    assert "dry run" in out
    assert main(["-c", str(path), "prune"]) == 0
    assert "deleted" in capsys.readouterr().out


async def test_the_daemon_prunes_once_a_day(write_config, db_url: str) -> None:
    """The daemon's own job, whatever the runner: a day apart, at start too."""
    from pipeline.app import App
    from pipeline.config import load_config
    from pipeline.daemon import Daemon
    from tests.factories import at

    config = load_config(write_config(db_url=db_url))
    with App(config) as app:
        app.upgrade_database()
        app.store.record_run(
            "dispatch", started=START, finished=START + timedelta(minutes=1), summary={}
        )
    daemon = Daemon(config, clock=at(NOW))
    try:
        [job] = [j for j in daemon._jobs(config) if j.name == "prune"]
        assert job.every == DAY and job.run_at_start and job.needs_lease
        await job.run()
        assert daemon.core.store.last_runs(5) == []
    finally:
        daemon.core.close()


# -- the setting ---------------------------------------------------------------------------------
def with_retention(path: Path, days: int, bounces: str = "") -> Path:
    text = path.read_text(encoding="utf-8")
    text = text.replace("[database]\n", f"[database]\nretention_days = {days}\n", 1)
    path.write_text(text + bounces, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    from pipeline.config import load_config

    with pytest.raises(ConfigError, match=str(path)) as info:
        load_config(path)
    return [re.sub(r"^\S+?\.toml(:\d+)?: ", "", p) for p in info.value.problems]


@pytest.mark.parametrize("days", [0, -1, 10, 29, 30, 90, 366])
def test_a_retention_shorter_than_the_longest_link_is_refused(write_config, days: int) -> None:
    [problem] = problems_of(with_retention(write_config(), days))
    assert problem == (
        f"database.retention_days: must be at least 367 (days), found {days}: digest links "
        "(unsubscribe and manage) live 366 days and name their outbox row, which must "
        "outlive them; 0 (keep for ever) is not allowed"
    )


def test_the_problem_names_its_line(write_config) -> None:
    from pipeline.config import load_config

    path = with_retention(write_config(), 100)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:3: database.retention_days: ")


def test_the_shortest_retention_outlives_the_links(write_config) -> None:
    from pipeline.config import load_config
    from pipeline.web.tokens import DEFAULT_MAX_AGE_SECONDS, UNSUBSCRIBE_MAX_AGE_SECONDS

    config = load_config(with_retention(write_config(), 367))
    assert config.file.database.retention_days * 86400 > max(
        UNSUBSCRIBE_MAX_AGE_SECONDS, DEFAULT_MAX_AGE_SECONDS
    )


@pytest.mark.parametrize("window", ["rate_days", "soft_bounce_days"])
def test_a_retention_shorter_than_a_bounce_window_is_refused(
    write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    """The bounce windows (90 and 365 days at most) fit in any retention the links allow
    today; with shorter-lived links the bounce check is the one that speaks."""
    from pipeline.web import tokens

    monkeypatch.setattr(tokens, "UNSUBSCRIBE_MAX_AGE_SECONDS", 7 * 86400)
    monkeypatch.setattr(tokens, "DEFAULT_MAX_AGE_SECONDS", 7 * 86400)
    bounces = f'\n[bounces]\nmaildir = "{tmp_path}/bounces"\n{window} = 60\n'
    [problem] = problems_of(with_retention(write_config(), 40, bounces))
    assert problem == (
        f"database.retention_days: must be at least [bounces] {window} (60), found 40: the "
        "bounce rules read that many days of bounce events"
    )
    from pipeline.config import load_config

    assert (
        load_config(with_retention(write_config(), 60, bounces)).file.database.retention_days == 60
    )
