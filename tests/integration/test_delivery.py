"""What the outbox does with each SMTP outcome, end to end through ``run_once`` against a
fault-injecting aiosmtpd (tests/smtpd.py)."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from pipeline.app import run_once
from pipeline.config import Config, load_config
from pipeline.domain import Commit, Envelope
from pipeline.errors import ClaimLostError
from pipeline.store import Store
from pipeline.store.rows import DeliveryRow
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at
from tests.smtpd import DROP, RunningServer, ScriptedHandler, password_authenticator

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

ONE_READER = """
[[subscribers]]
email = "ada@lab.example"
name = "Ada"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR abs:"reward model"'
"""


def config_for(write_config, port: int, *, mail: str = "", smtp: str = "", env=None) -> Config:  # type: ignore[no-untyped-def]
    extra = f'{mail}\n[mail.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n{smtp}'
    path = write_config(transport="smtp", mail_extra=extra, subscribers=ONE_READER)
    return load_config(path, env=env)


def outbox(config: Config) -> list[tuple[str, str, int]]:
    store = Store.open(config.database_url)
    try:
        return store.deliveries_for("ada@lab.example")
    finally:
        store.close()


def column(config: Config, name: str) -> str:
    """One column of the only outbox row."""
    store = Store.open(config.database_url)
    try:
        with store.read() as s:
            return str(s.scalar(select(getattr(DeliveryRow, name))))
    finally:
        store.close()


def message_id_of(config: Config) -> str:
    return column(config, "message_id")


def last_error(config: Config) -> str:
    return column(config, "last_error")


async def test_4xx_defers_then_retries_with_the_same_message_id(
    write_config, smtp_server_factory
) -> None:
    server: RunningServer = smtp_server_factory(ScriptedHandler({"DATA": ["451 4.3.0 Try again"]}))
    config = config_for(write_config, server.port)
    first = await run_once(config, clock=at(NOW))
    assert (first.deliver.sent, first.deliver.deferred) == (0, 1)
    assert [s for _k, s, _n in outbox(config)] == ["deferred"]
    assert "451 4.3.0 Try again" in last_error(config)
    planned_id = message_id_of(config)
    too_soon = await run_once(config, clock=at(NOW + timedelta(seconds=20)))
    assert too_soon.deliver.sent == too_soon.deliver.deferred == 0
    later = await run_once(config, clock=at(NOW + timedelta(hours=1, minutes=1)))
    assert later.deliver.sent == 1
    [(_env, data)] = server.received
    sent = email.message_from_bytes(data, policy=email.policy.default)
    assert sent["Message-ID"] == planned_id
    assert [s for _k, s, _n in outbox(config)] == ["sent"]


async def test_4xx_past_the_retry_age_fails(write_config, smtp_server_factory) -> None:
    server = smtp_server_factory(ScriptedHandler({"RCPT": ["450 4.2.0 Mailbox busy"] * 5}))
    config = config_for(write_config, server.port, mail="retry_max_age_hours = 1")
    await run_once(config, clock=at(NOW))
    late = await run_once(config, clock=at(NOW + timedelta(hours=2)))
    assert late.deliver.failed == 1
    assert [s for _k, s, _n in outbox(config)] == ["failed"]
    assert last_error(config).startswith("gave up after 1:00:00: ")
    assert server.received == []


@pytest.mark.parametrize(
    ("step", "reply"),
    [("RCPT", "550 5.1.1 No such user"), ("DATA", "554 5.7.1 Rejected as spam")],
    ids=["550-rcpt", "554-data"],
)
async def test_5xx_fails_permanently_with_the_reply_and_releases_the_papers(
    write_config, smtp_server_factory, step: str, reply: str
) -> None:
    server = smtp_server_factory(ScriptedHandler({step: [reply]}))
    config = config_for(write_config, server.port)
    report = await run_once(config, clock=at(NOW))
    assert report.deliver.failed == 1
    assert [s for _k, s, _n in outbox(config)] == ["failed"]
    assert reply in last_error(config)
    store = Store.open(config.database_url)
    assert store.sent_paper_ids("ada@lab.example") == set()  # a later digest may carry them
    store.close()
    again = await run_once(config, clock=at(NOW + timedelta(days=1)))
    assert again.deliver.sent == 1  # the papers come back in the next period's digest
    [(_env, data)] = server.received
    message = email.message_from_bytes(data, policy=email.policy.default)
    text = message.get_body(("plain",))
    assert text is not None
    assert "RLHF" in text.get_content() or "reward" in text.get_content().lower()


async def test_535_aborts_the_batch_and_marks_nothing(write_config, smtp_server_factory) -> None:
    server = smtp_server_factory(
        authenticator=password_authenticator("digest", "right"), auth_require_tls=False
    )
    env = {"PAPERPOST_TEST_SECRET": "test-secret-0123456789abcdef", "SMTP_PW": "wrong"}
    config = config_for(
        write_config, server.port, smtp='username = "digest"\npassword_env = "SMTP_PW"\n', env=env
    )
    report = await run_once(config, clock=at(NOW))
    assert report.deliver.aborted is not None and "535" in report.deliver.aborted
    assert (report.deliver.sent, report.deliver.failed, report.deliver.deferred) == (0, 0, 0)
    assert [s for _k, s, _n in outbox(config)] == ["pending"]
    fixed = load_config(config.path, env={**env, "SMTP_PW": "right"})
    retry = await run_once(fixed, clock=at(NOW + timedelta(minutes=1)))
    assert retry.deliver.sent == 1
    assert len(server.received) == 1


async def test_connection_refused_defers_the_batch_and_marks_nothing(
    write_config, closed_port: int
) -> None:
    config = config_for(write_config, closed_port)
    report = await run_once(config, clock=at(NOW))
    assert report.deliver.aborted is not None
    assert [s for _k, s, _n in outbox(config)] == ["pending"]


@pytest.mark.parametrize(
    ("policy", "expected_copies", "status"),
    [("at-most-once", 1, "ambiguous"), ("at-least-once", 2, "sent")],
)
async def test_drop_after_data_follows_the_ambiguous_policy(
    write_config, smtp_server_factory, policy: str, expected_copies: int, status: str
) -> None:
    server = smtp_server_factory(ScriptedHandler({"DATA": [DROP]}))
    config = config_for(write_config, server.port, mail=f'ambiguous_policy = "{policy}"')
    first = await run_once(config, clock=at(NOW))
    assert first.deliver.ambiguous == 1
    await run_once(config, clock=at(NOW + timedelta(minutes=1)))
    assert [s for _k, s, _n in outbox(config)] == [status]
    ids = Counter(
        email.message_from_bytes(d, policy=email.policy.default)["Message-ID"]
        for _e, d in server.received
    )
    assert list(ids.values()) == [expected_copies]  # copies share one Message-ID


async def test_421_mid_session_is_retried_on_a_new_connection(
    write_config, smtp_server_factory
) -> None:
    server = smtp_server_factory(ScriptedHandler({"MAIL": ["421 4.3.2 Shutting down"]}))
    config = config_for(write_config, server.port)
    report = await run_once(config, clock=at(NOW))
    later = await run_once(config, clock=at(NOW + timedelta(hours=1, minutes=1)))
    assert report.deliver.sent + later.deliver.sent == 1
    assert len(server.received) == 1
    assert [s for _k, s, _n in outbox(config)] == ["sent"]


@pytest.mark.parametrize("stall", ["after-commit", "before-commit"])
async def test_a_row_taken_over_by_another_sender_is_not_sent_by_the_stalled_one(
    write_config,  # type: ignore[no-untyped-def]
    stall: str,
) -> None:
    # This sender stalls inside its first hand-off for longer than the stale-claim limit;
    # meanwhile another sender's recovery returns our claimed rows to the queue and claims
    # them. "after-commit": the stall comes once the first row is "sending" (waiting for
    # the reply to the final "."), so that row is ours to finish; "before-commit": while
    # connecting (the row still only claimed), so even that row is the other sender's.
    # Whatever the other sender took, this one must skip: the other one sends it.
    config = load_config(write_config(mail_extra="batch_size = 10\nconcurrency = 1"))
    store = Store.open(config.database_url, auto_upgrade=True)
    later = NOW + timedelta(minutes=11)
    sent: list[str] = []
    stalled: list[bool] = []

    class StallingMailer:
        async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
            assert commit is not None
            if stall == "after-commit" and not await commit():
                raise ClaimLostError("taken over")
            if not stalled:  # the other sender's recovery and claim, while this one stalls
                stalled.append(True)
                store.recover_stale(now=later, older_than=timedelta(minutes=10))
                assert store.claim(limit=10, holder="other", now=later)
            if stall == "before-commit" and not await commit():
                raise ClaimLostError("taken over")
            sent.append(envelope.recipient)
            return "250 2.0.0 queued"

        async def aclose(self) -> None:
            return None

    try:
        report = await run_once(config, clock=at(NOW), mailer=StallingMailer(), store=store)
        planned = report.plan.planned
        ours = 1 if stall == "after-commit" else 0
        assert planned >= 2
        assert len(sent) == report.deliver.sent == ours
        assert report.deliver.lost_claims == planned - ours
        # The rows we did not send are the other sender's claims, untouched by us.
        with store.read() as s:
            states = Counter(
                (status, holder)
                for status, holder in s.execute(select(DeliveryRow.status, DeliveryRow.claimed_by))
            )
        assert states[("claimed", "other")] == planned - ours
        assert sum(n for (status, _), n in states.items() if status == "sent") == ours
    finally:
        store.close()
