"""The whole cycle end to end: sample listings in, digests out through real transports.

SMTP goes to a real aiosmtpd on 127.0.0.1; the Maildir is read back with ``mailbox``;
the same cycle runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
from collections import Counter
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from pipeline.app import run_once
from pipeline.config import load_config
from pipeline.domain import Commit, Envelope, Mailer
from pipeline.errors import BatchAbortedError
from pipeline.store import Store
from tests.factories import MONDAY_NOON as NOW
from tests.factories import smtp_extra
from tests.smtpd import RunningServer

SUBSCRIBERS = ("ada@lab.example", "grace@lab.example", "zoe@lab.example")


def clock(at: datetime = NOW):  # type: ignore[no-untyped-def]
    return lambda: at


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    return str(text_part.get_content()), str(html_part.get_content())


def check_digest(store: Store, message: EmailMessage, recipient: str) -> list[str]:
    """Check one received digest against what the outbox planned; return its paper ids."""
    assert message["To"].addresses[0].addr_spec == recipient
    assert message["Subject"]
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(
        "@paperpost.example>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://digest.paperpost.example/unsubscribe/" in message["List-Unsubscribe"]
    text, html = parts(message)
    [(_period, status, count)] = store.deliveries_for(recipient)
    assert status == "sent"
    sent = store.sent_paper_ids(recipient)
    assert len(sent) == count
    papers = store.papers_by_id(sent)
    for paper in papers.values():
        first_words = " ".join(paper.title.split()[:4])
        assert first_words in " ".join(text.split()), f"{paper.id} missing from the text part"
        if paper.url:
            assert f'href="{paper.url}"' in html, f"{paper.url} is not linked in the HTML part"
    return sorted(sent)


async def test_full_cycle_over_smtp(write_config, smtp_server: RunningServer) -> None:
    config = load_config(write_config(transport="smtp", mail_extra=smtp_extra(smtp_server)))
    report = await run_once(config, clock=clock())
    assert all(o.ok for o in report.sources), [o.error for o in report.sources]
    assert report.deliver.sent == len(SUBSCRIBERS)
    received = smtp_server.received
    assert sorted(env.rcpt_tos[0] for env, _ in received) == sorted(SUBSCRIBERS)
    store = Store.open(config.database_url)
    for env, data in received:
        assert env.mail_from == "digest@paperpost.example"
        ids = check_digest(store, parse(data), env.rcpt_tos[0])
        assert len(ids) == len(set(ids)) > 0
    store.close()


async def test_second_run_sends_nothing(write_config, smtp_server: RunningServer) -> None:
    config = load_config(write_config(transport="smtp", mail_extra=smtp_extra(smtp_server)))
    await run_once(config, clock=clock())
    again = await run_once(config, clock=clock(NOW + timedelta(minutes=5)))
    assert (again.plan.planned, again.deliver.sent) == (0, 0)
    assert len(smtp_server.received) == len(SUBSCRIBERS)


async def test_next_day_sends_only_new_papers(write_config, smtp_server: RunningServer) -> None:
    config = load_config(write_config(transport="smtp", mail_extra=smtp_extra(smtp_server)))
    await run_once(config, clock=clock())
    # Next day: same listings re-ingested, nothing new first seen -> empty -> skipped.
    later = await run_once(config, clock=clock(NOW + timedelta(days=1)))
    assert later.deliver.sent == 0
    assert later.plan.skipped_empty == len(SUBSCRIBERS)
    assert len(smtp_server.received) == len(SUBSCRIBERS)


async def test_full_cycle_into_maildir(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(transport="maildir"))
    report = await run_once(config, clock=clock(), write_previews=True)
    assert report.deliver.sent == len(SUBSCRIBERS)
    box = mailbox.Maildir(tmp_path / "maildir", factory=None, create=False)
    messages = [parse(box.get_bytes(key)) for key in box.iterkeys()]
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == sorted(SUBSCRIBERS)
    store = Store.open(config.database_url)
    for message in messages:
        check_digest(store, message, message["To"].addresses[0].addr_spec)
    store.close()
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == sorted(
        s.replace("@", "_") + ".html" for s in SUBSCRIBERS
    )
    second = await run_once(config, clock=clock(NOW + timedelta(hours=1)))
    assert second.deliver.sent == 0
    assert len(box.keys()) == len(SUBSCRIBERS)


class FailingAfter:
    """A real transport that goes away after ``n`` messages (as a server that stops)."""

    def __init__(self, inner: Mailer, n: int) -> None:
        self.inner, self.n, self.sent = inner, n, 0

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        if self.sent >= self.n:
            raise BatchAbortedError("connection refused by 127.0.0.1")
        self.sent += 1
        return await self.inner.send(envelope, commit=commit)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_interrupted_run_delivers_the_rest_exactly_once(
    write_config, smtp_server: RunningServer
) -> None:
    from pipeline.app import App

    config = load_config(write_config(transport="smtp", mail_extra=smtp_extra(smtp_server)))
    broken = FailingAfter(App(config).mailer(), 1)
    first = await run_once(config, clock=clock(), mailer=broken)
    await broken.aclose()
    assert first.deliver.sent == 1
    assert first.deliver.aborted == "connection refused by 127.0.0.1"
    assert len(smtp_server.received) == 1
    second = await run_once(config, clock=clock(NOW + timedelta(minutes=1)))
    assert second.deliver.sent == len(SUBSCRIBERS) - 1
    recipients = Counter(env.rcpt_tos[0] for env, _ in smtp_server.received)
    assert recipients == Counter(SUBSCRIBERS)


class SimulatedCrash(BaseException):
    """Stands for the process dying: no handler in the delivery code catches it."""


class CrashAfter(FailingAfter):
    """The process dies (not a transport error) as message ``n + 1`` goes out: right after
    the commit before its final ".", so the server may have it."""

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        if self.sent >= self.n:
            assert commit is not None and await commit()
            raise SimulatedCrash
        return await super().send(envelope, commit=commit)


async def test_crash_mid_batch_recovers_without_resending(
    write_config, smtp_server: RunningServer
) -> None:
    from pipeline.app import App

    one_at_a_time = "concurrency = 1\n" + smtp_extra(smtp_server)
    config = load_config(write_config(transport="smtp", mail_extra=one_at_a_time))
    crashing = CrashAfter(App(config).mailer(), 1)
    with pytest.raises(SimulatedCrash):
        await run_once(config, clock=clock(), mailer=crashing)
    await crashing.aclose()
    store = Store.open(config.database_url)
    counts = store.outbox_counts()
    store.close()
    # One sent; the one in hand is "sending" (it may have left); the rest, never committed,
    # went back to the queue on the way out (a process killed outright cannot do that:
    # tests/e2e/test_kill_sending.py).
    assert counts == {"sent": 1, "sending": 1, "pending": len(SUBSCRIBERS) - 2}
    # A restart soon after sends the rest and leaves the "sending" row alone: its holder
    # (this process) is alive and its claim is not stale...
    soon = await run_once(config, clock=clock(NOW + timedelta(minutes=2)))
    assert (soon.deliver.sent, soon.deliver.ambiguous) == (len(SUBSCRIBERS) - 2, 0)
    # ...and once it is stale, the "sending" one is ambiguous, not resent.
    later = await run_once(config, clock=clock(NOW + timedelta(minutes=15)))
    assert (later.deliver.sent, later.deliver.ambiguous) == (0, 1)
    recipients = Counter(env.rcpt_tos[0] for env, _ in smtp_server.received)
    assert max(recipients.values()) == 1
    assert sum(recipients.values()) == len(SUBSCRIBERS) - 1


async def test_full_cycle_on_postgres(
    write_config, pg_url: str, smtp_server: RunningServer
) -> None:
    Store.open(pg_url, auto_upgrade=True).close()
    config = load_config(
        write_config(db_url=pg_url, transport="smtp", mail_extra=smtp_extra(smtp_server))
    )
    report = await run_once(config, clock=clock())
    assert report.deliver.sent == len(SUBSCRIBERS)
    store = Store.open(config.database_url)
    for env, data in smtp_server.received:
        check_digest(store, parse(data), env.rcpt_tos[0])
    store.close()
    again = await run_once(config, clock=clock(NOW + timedelta(minutes=5)))
    assert again.deliver.sent == 0
    assert len(smtp_server.received) == len(SUBSCRIBERS)


async def test_unsubscribed_reader_gets_nothing_and_config_does_not_revive(
    write_config, smtp_server: RunningServer
) -> None:
    config = load_config(write_config(transport="smtp", mail_extra=smtp_extra(smtp_server)))
    store = Store.open(config.database_url)
    store.sync_subscribers(config.subscribers(), now=NOW)
    store.unsubscribe("grace@lab.example", now=NOW)
    report = await run_once(config, clock=clock(), store=store)
    store.close()
    assert report.deliver.sent == len(SUBSCRIBERS) - 1
    assert "grace@lab.example" not in {env.rcpt_tos[0] for env, _ in smtp_server.received}
