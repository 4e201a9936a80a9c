"""The application layer over real stores and a real Maildir: readers read by id from the
database, versions recorded on outbox rows, Message-IDs unique across installations, a
reload in the middle of a period, and the operator's commands on the outbox."""

from __future__ import annotations

import email
import email.policy
import mailbox
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from pipeline.app import App, UnknownReaderError
from pipeline.config import load_config
from pipeline.errors import PaperpostError
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at
from tests.smtpd import ScriptedHandler


def message_ids(maildir: Path) -> dict[str, str]:
    box = mailbox.Maildir(maildir, create=False)
    return {str(m["To"]): str(m["Message-ID"]) for m in box}


async def test_message_ids_differ_between_installations_and_survive_retries(
    write_config, tmp_path: Path
) -> None:
    """The same config and day on two databases: before, subscriber 1 of every Paperpost
    got the same Message-ID on the same day, which a deduplicating receiver drops."""
    ids = []
    for name in ("one", "two"):
        path = write_config(db_url=f"sqlite:///{tmp_path / name}.db", name=f"{name}.toml")
        config = load_config(path)
        with App(config, clock=at(NOW)) as app:
            await app.run_once()
            ids.append({e.email: e.message_id for e in app.outbox()})
        (tmp_path / "maildir").rename(tmp_path / f"maildir-{name}")
    first, second = ids
    assert first.keys() == second.keys() and len(first) == 3
    assert not set(first.values()) & set(second.values())
    # What was sent is what the row holds (a retry resends the row's id).
    received = message_ids(tmp_path / "maildir-one")
    assert sorted(received.values()) == sorted(first.values())


async def test_rows_record_the_reader_version_they_were_planned_under(write_config) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        await app.run_once()
        ada = app.reader("ada@lab.example")
        assert ada.version == 1
        [row] = app.outbox(email="ada@lab.example")
        assert app.store.load_delivery(row.id).subscriber_version == 1


async def test_planning_writes_block_by_block_and_counts_each_reader_once(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning writes one block of readers per transaction (blocks of 2 for the 3 readers
    here): each reader is planned once and the report's items are what each row holds.
    The same readers planned again (a second planner that lost the race) are counted
    already planned, and nothing is written."""
    from pipeline.cycle import plan as planning

    monkeypatch.setattr(planning, "_BLOCK", 2)
    with App(load_config(write_config()), clock=at(NOW)) as app:
        app.sync()
        await app.ingest()
        due = planning.due_among(app.store, planning.due_ids(app.store, now=NOW), now=NOW)
        assert len(due) == 3
        report = planning.plan_due(app.store, app.planning, due, now=NOW)
        assert (report.due, report.planned, report.skipped_empty, report.already_planned) == (
            3,
            3,
            0,
            0,
        )
        held = {e.email: e.item_count for e in app.outbox()}
        assert report.items == held and all(held.values())
        again = planning.plan_due(app.store, app.planning, due, now=NOW)
        assert (again.planned, again.skipped_empty, again.already_planned) == (0, 0, 3)
        assert again.items == {}
        assert {e.email: e.item_count for e in app.outbox()} == held


async def test_app_plan_in_blocks_of_readers_plans_what_one_block_plans(
    write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """App.plan loads and matches a block of readers at a time with one fitted matcher:
    blocks of 1 reader plan the same digests, paper for paper, as one block of all."""
    import pipeline.app

    planned = []
    for block, name in ((1, "one.db"), (10_000, "all.db")):
        monkeypatch.setattr(pipeline.app, "_PLAN_BLOCK", block)
        path = write_config(name=f"{name}.toml", db_url=f"sqlite:///{tmp_path / name}")
        with App(load_config(path), clock=at(NOW)) as app:
            app.sync()
            await app.ingest()
            report = app.plan()
            assert (report.due, report.planned) == (3, 3)
            rows = app.store.load_deliveries([e.id for e in app.outbox()])
            planned.append({d.email: [i.paper.id for i in d.items] for d in rows.values()})
    assert planned[0] == planned[1]
    assert all(planned[0].values())


async def test_a_reload_mid_period_sends_planned_rows_as_planned_and_plans_anew_after(
    write_config, smtp_server
) -> None:
    """Ada's row is planned (not yet sent) under version 1; the operator then
    changes her query and time zone. The planned row goes out as planned; the next
    period is planned under version 2 with her new schedule."""
    extra = f'\n[mail.smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
    path = write_config(transport="smtp", mail_extra=extra)
    config = load_config(path)
    with App(config, clock=at(NOW)) as app:
        app.sync()
        await app.ingest()
        report = app.plan()
        assert report.planned == 3
        [planned] = app.outbox(email="ada@lab.example")
        before = app.store.load_delivery(planned.id)

        text = path.read_text(encoding="utf-8")
        changed = text.replace(
            'timezone = "Europe/London"\nsend_at = "00:00"',
            'timezone = "America/New_York"\nsend_at = "06:00"',
        ).replace("abs:RLHF OR ", "ti:diffusion OR abs:RLHF OR ")
        assert changed != text
        path.write_text(changed, encoding="utf-8")
        app.reconfigure(load_config(path))
        stats = app.sync()
        assert stats.updated == 1
        ada = app.reader("ada@lab.example")
        assert ada.version == 2 and ada.subscriber.schedule.timezone == "America/New_York"

        report = await app.deliver()
        assert report.sent == 3
        after = app.store.load_delivery(planned.id)
        assert after.status == "sent"
        assert [i.paper.id for i in after.items] == [i.paper.id for i in before.items]
        assert after.subscriber_version == 1
        # The footer and period label come from the reader's schedule as it is now.
        received = [d for env, d in smtp_server.received if "ada@lab.example" in env.rcpt_tos]
        assert len(received) == 1
        message = email.message_from_bytes(received[0], policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        text = message.get_body(("plain",))
        assert text is not None and "America/New_York" in str(text.get_content())

    # The next day, 06:00 in New York: a new period, planned under version 2.
    later = datetime(2026, 11, 24, 11, 30, tzinfo=UTC)
    with App(load_config(path), clock=at(later)) as app:
        app.plan()
        rows = app.outbox(email="ada@lab.example")
        assert [r.period_key for r in rows] == ["2026-11-24", "2026-11-23"]
        assert app.store.load_delivery(rows[0].id).subscriber_version == 2


async def test_delivery_uses_the_readers_schedule_from_the_database(write_config) -> None:
    """Before, delivery mapped the address to a schedule through the config and fell back
    to daily UTC when it was not there; a reader the config no longer has would get a
    wrong period label. Now the row's reader is read by id."""
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        await app.ingest()
        app.plan()
    # Zoë leaves the config after her row was planned; the row is still due and sent,
    # labelled with her own (Auckland) schedule.
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index('[[subscribers]]\nemail = "zoe')], encoding="utf-8")
    with App(load_config(path), clock=at(NOW)) as app:
        [row] = app.outbox(email="zoe@lab.example")
        delivery = app.store.load_delivery(row.id)
        assert delivery.schedule.timezone == "Pacific/Auckland"
        report = await app.deliver()
        assert report.sent == 3


async def test_preview_and_explain_read_the_reader_from_the_database(write_config) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        with pytest.raises(UnknownReaderError, match=r"no subscriber 'ada@lab\.example'"):
            app.preview("ada@lab.example")
        app.sync()
        await app.ingest()
        html = app.preview("ada@lab.example").read_text(encoding="utf-8")
        assert "<html" in html.lower()
        with pytest.raises(PaperpostError, match="not in the database"):
            app.explain("ada@lab.example", "9999.99999")


async def test_requeue_moves_only_failed_and_ambiguous_rows(
    write_config, smtp_server_factory
) -> None:
    server = smtp_server_factory(ScriptedHandler({"RCPT": ["550 5.1.1 mailbox unavailable"]}))
    extra = (
        f'concurrency = 1\n[mail.smtp]\nhost = "127.0.0.1"\nport = {server.port}\n'
        'security = "none"\n'
    )
    path = write_config(transport="smtp", mail_extra=extra)
    with App(load_config(path), clock=at(NOW)) as app:
        report = await app.run_once()
        assert (report.deliver.sent, report.deliver.failed) == (2, 1)
        sent = app.outbox(statuses=["sent"])
        assert app.requeue(ids=[e.id for e in sent]) == 0  # never a sent digest
        [failed] = app.outbox(statuses=["failed"])
        assert app.requeue(email=failed.email) == 1
        [row] = app.outbox(email=failed.email)
        assert row.status == "pending" and row.message_id == failed.message_id
        report2 = await app.deliver()
        assert report2.sent == 1
    recipients = sorted(env.rcpt_tos[0] for env, _ in server.received)
    assert recipients == ["ada@lab.example", "grace@lab.example", "zoe@lab.example"]


async def test_read_only_commands_need_no_smtp_secret(write_config, monkeypatch) -> None:
    extra = (
        '\n[mail.smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "none"\n'
        'username = "digest"\npassword_env = "PAPERPOST_TEST_SMTP_PASSWORD"\n'
    )
    path = write_config(transport="smtp", mail_extra=extra)
    monkeypatch.delenv("PAPERPOST_TEST_SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("PAPERPOST_TEST_SECRET", raising=False)
    with pytest.raises(PaperpostError, match="PAPERPOST_TEST_SMTP_PASSWORD is not set"):
        load_config(path)
    config = load_config(path, secrets=False)
    assert config.secrets.smtp_password is None and config.secrets.link_keys == ()
    with App(config, clock=at(NOW - timedelta(days=1))) as app:
        assert app.outbox() == []


async def test_explain_agrees_with_every_paper_a_digest_carried(write_config) -> None:
    """``explain`` only formats the matcher's own record, over the digest's own window: it
    said "not selected" before for a trending paper that was in the digest."""
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        await app.run_once()
        [row] = app.outbox(email="zoe@lab.example")  # trending = 3 besides her query
        delivery = app.store.load_delivery(row.id)
        trending = [i for i in delivery.items if i.trending]
        assert trending, "the sample listings give Zoë trending papers"
        for rank, item in enumerate(delivery.items, 1):
            text = app.explain("zoe@lab.example", item.paper.id)
            assert "verdict     selected" in text, text
            assert f"at rank {rank}; it will not be sent again" in text
            assert "would no longer select it" not in text
        # A paper of that window she did not get: explained over the same window.
        sent = {i.paper.id for i in delivery.items}
        window = app.store.papers_seen_between(delivery.window_start, delivery.window_end)
        other = next(p for p in window if p.id not in sent)
        text = app.explain("zoe@lab.example", other.id)
        assert "verdict     selected" not in text
        assert f"considered for the digest of {delivery.period_key}" in text
        assert "the outcome differs now" not in text
        with pytest.raises(PaperpostError, match="not in the database"):
            app.explain("zoe@lab.example", "9999.99999")
