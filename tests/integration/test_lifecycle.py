"""The reader's life in the store, on SQLite and PostgreSQL: pending sign-ups and their
single-use confirmation, expiry, overrides over the operator's file, pauses, feedback undo,
export and erasure (only the address hash stays)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

from pipeline.domain import Profile, Schedule, Subscriber
from pipeline.store import Store
from pipeline.store.lifecycle import address_hash

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LIFETIME = timedelta(hours=48)


def reader(email: str, **profile: object) -> Subscriber:
    return Subscriber(
        email=email,
        name=None,
        schedule=Schedule("daily", time(8, 0), "Europe/Berlin"),
        profile=Profile(**profile),  # type: ignore[arg-type]
    )


def test_a_sign_up_is_pending_until_its_own_nonce_confirms_it_once(store: Store) -> None:
    new = reader("new@lab.example", categories=("cs.LG",))
    assert store.add_pending(new, nonce="n-1", now=NOW).outcome == "created"
    state = store.subscriber_state("new@lab.example")
    assert state is not None and state.status == "pending"
    assert store.active_schedules(now=NOW) == {}  # nothing is planned for a pending reader
    assert store.reader_record("new@lab.example") is None  # no manage page either

    # A second sign-up replaces the nonce: the first link dies.
    assert store.add_pending(new, nonce="n-2", now=NOW).outcome == "renewed"
    assert not store.confirm_signup("new@lab.example", "n-1", now=NOW, lifetime=LIFETIME)
    # A nonce confirms only its own address.
    other = reader("other@lab.example", about="graphs")
    store.add_pending(other, nonce="n-other", now=NOW)
    assert not store.confirm_signup("new@lab.example", "n-other", now=NOW, lifetime=LIFETIME)
    assert store.confirm_signup("new@lab.example", "n-2", now=NOW, lifetime=LIFETIME)
    assert not store.confirm_signup("new@lab.example", "n-2", now=NOW, lifetime=LIFETIME)

    found = store.reader_by_email("new@lab.example")
    assert found is not None
    assert (found.status, found.origin, found.version) == ("active", "self-service", 2)
    assert list(store.active_schedules(now=NOW)) == [found.id]
    # A known address signs up again: nothing changes, nothing to send.
    assert store.add_pending(new, nonce="n-3", now=NOW).nonce is None
    assert store.reader_by_email("new@lab.example") == found


def test_unconfirmed_sign_ups_expire(store: Store) -> None:
    store.add_pending(reader("late@lab.example", about="x"), nonce="n", now=NOW)
    store.add_pending(reader("fresh@lab.example", about="x"), nonce="m", now=NOW + DAY)
    later = NOW + LIFETIME + timedelta(minutes=1)
    assert not store.confirm_signup("late@lab.example", "n", now=later, lifetime=LIFETIME)
    assert store.expire_signups(now=later, lifetime=LIFETIME) == 1
    assert store.subscriber_state("late@lab.example") is None
    fresh = store.subscriber_state("fresh@lab.example")
    assert fresh is not None and fresh.status == "pending"


async def test_the_daemon_expires_unconfirmed_sign_ups(write_config, db_url: str) -> None:
    """The daemon's own job, on its own schedule, deletes what nobody confirmed in time."""
    from pipeline.app import App
    from pipeline.config import load_config
    from pipeline.daemon import Daemon
    from tests.factories import at

    config = load_config(write_config(db_url=db_url))
    with App(config) as app:
        app.upgrade_database()
        app.store.add_pending(reader("late@lab.example", about="x"), nonce="n", now=NOW)
        app.store.add_pending(reader("fresh@lab.example", about="x"), nonce="m", now=NOW + DAY)
    lifetime = timedelta(hours=config.file.web.confirm_hours)
    daemon = Daemon(config, clock=at(NOW + lifetime + timedelta(minutes=1)))
    try:
        [job] = [j for j in daemon._jobs(config) if j.name == "expire-signups"]
        assert job.every == daemon.options.maintenance_every
        await job.run()
        assert daemon.core.store.subscriber_state("late@lab.example") is None
        fresh = daemon.core.store.subscriber_state("fresh@lab.example")
        assert fresh is not None and fresh.status == "pending"
    finally:
        daemon.core.close()


def test_config_readers_edits_win_over_the_file_until_reset(store: Store) -> None:
    ada = reader("ada@lab.example", categories=("cs.CL",), about="language models")
    store.sync_subscribers([ada], now=NOW)
    before = store.reader_by_email("ada@lab.example")
    assert before is not None
    changed = store.edit_reader(
        "ada@lab.example", {"frequency": "weekly:mon", "categories": ["cs.CL"]}, now=NOW
    )
    assert changed
    record = store.reader_record("ada@lab.example")
    assert record is not None
    assert dict(record.overrides) == {"frequency": "weekly:mon"}  # categories did not change
    assert record.reader.version == before.version + 1
    assert record.reader.subscriber.schedule.frequency == "weekly:mon"

    # The operator edits the file: the about text follows the file, the frequency the reader.
    edited_file = replace(ada, profile=replace(ada.profile, about="speech"))
    store.sync_subscribers([edited_file], now=NOW + DAY)
    after = store.reader_by_email("ada@lab.example")
    assert after is not None
    assert after.subscriber.profile.about == "speech"
    assert after.subscriber.schedule.frequency == "weekly:mon"
    assert after.version == record.reader.version + 1

    assert store.reset_overrides("ada@lab.example", now=NOW + DAY)
    store.sync_subscribers([edited_file], now=NOW + DAY)
    back = store.reader_by_email("ada@lab.example")
    assert back is not None and back.subscriber.schedule.frequency == "daily"
    record = store.reader_record("ada@lab.example")
    assert record is not None and dict(record.overrides) == {}


def test_the_file_never_touches_a_self_service_reader(store: Store) -> None:
    own = reader("self@lab.example", about="robots")
    store.add_pending(own, nonce="n", now=NOW)
    store.confirm_signup("self@lab.example", "n", now=NOW, lifetime=LIFETIME)
    mine = store.reader_by_email("self@lab.example")
    stats = store.sync_subscribers([reader("self@lab.example", about="operator's idea")], now=NOW)
    assert stats.skipped == 1 and stats.added == stats.updated == 0
    assert store.reader_by_email("self@lab.example") == mine
    store.sync_subscribers([], now=NOW)  # nor does removing it from the file
    assert store.reader_by_email("self@lab.example") == mine


def test_a_paused_reader_is_not_planned_until_the_pause_ends(store: Store) -> None:
    store.sync_subscribers([reader("ada@lab.example", about="x")], now=NOW)
    found = store.reader_by_email("ada@lab.example")
    assert found is not None
    assert store.pause("ada@lab.example", NOW + 14 * DAY, now=NOW)
    assert store.active_schedules(now=NOW + 13 * DAY) == {}
    assert list(store.active_schedules(now=NOW + 14 * DAY)) == [found.id]
    assert store.pause("ada@lab.example", None, now=NOW)
    assert list(store.active_schedules(now=NOW)) == [found.id]


def test_feedback_presses_can_be_seen_and_undone(store: Store) -> None:
    store.sync_subscribers([reader("ada@lab.example", about="x")], now=NOW)
    store.record_feedback("ada@lab.example", "2401.00001", "more", now=NOW)
    store.record_feedback("ada@lab.example", "2401.00002", "less", now=NOW + DAY)
    record = store.reader_record("ada@lab.example")
    assert record is not None
    assert [(m.paper_id, m.signal) for m in record.feedback] == [
        ("2401.00002", "less"),
        ("2401.00001", "more"),
    ]
    assert store.undo_feedback("ada@lab.example", "2401.00002", now=NOW)
    assert not store.undo_feedback("ada@lab.example", "2401.00002", now=NOW)
    state = store.subscriber_state("ada@lab.example")
    assert state is not None
    assert store.feedback([state.id])[state.id] == (["2401.00001"], [])
    after = store.reader_by_email("ada@lab.example")
    assert after is not None and after.version == record.reader.version + 1


def test_export_has_settings_and_presses_and_erasure_keeps_only_the_hash(store: Store) -> None:
    ada = reader("ada@lab.example", categories=("cs.CL",))
    store.sync_subscribers([ada], now=NOW)
    store.record_feedback("ada@lab.example", "2401.00001", "more", now=NOW)
    data = store.export_reader("ada@lab.example")
    assert data is not None
    assert data["email"] == "ada@lab.example"
    assert data["settings"]["interests"]["categories"] == ["cs.CL"]
    assert data["feedback"] == [
        {"paper": "2401.00001", "signal": "more", "at": NOW.isoformat(timespec="seconds")}
    ]

    assert store.erase_reader("ada@lab.example", now=NOW)
    assert store.subscriber_state("ada@lab.example") is None
    assert store.is_suppressed("ADA@lab.example ")
    with store.connect() as conn:
        from sqlalchemy import text

        rows = conn.execute(text("SELECT address_hash, reason FROM suppressions")).all()
        feedback = conn.execute(text("SELECT count(*) FROM feedback")).scalar()
    assert [tuple(r) for r in rows] == [(address_hash("ada@lab.example"), "erased")]
    assert feedback == 0
    # Neither the operator's file nor the subscribe page brings the address back.
    stats = store.sync_subscribers([ada], now=NOW + DAY)
    assert stats.added == 0 and stats.suppressed == 1
    assert store.subscriber_state("ada@lab.example") is None
    assert store.add_pending(ada, nonce="n", now=NOW).outcome == "suppressed"
    assert store.subscriber_state("ada@lab.example") is None


def test_resubscribe_from_the_manage_page_never_passes_a_suppression(store: Store) -> None:
    store.sync_subscribers([reader("ada@lab.example", about="x")], now=NOW)
    store.unsubscribe("ada@lab.example", now=NOW)
    assert store.resubscribe_reader("ada@lab.example", now=NOW + DAY)
    state = store.subscriber_state("ada@lab.example")
    assert state is not None and state.status == "active"
    store.unsubscribe("ada@lab.example", now=NOW + 2 * DAY)
    with store.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text("INSERT INTO suppressions VALUES (:h, 'complaint', NULL, :t)"),
            {"h": address_hash("ada@lab.example"), "t": NOW},
        )
    assert not store.resubscribe_reader("ada@lab.example", now=NOW + 3 * DAY)
