"""The bounce mailbox end to end over real databases (SQLite and PostgreSQL) and a real
Maildir: digests leave with VERP return paths, the reports that come back suppress or are
ignored as the rules say, a reader may lift only the suppression they asked for,
re-reading changes nothing, a malformed report never stops the others, and a suppressed
reader is never planned again."""

from __future__ import annotations

import email
import email.policy
import logging
import mailbox
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.bounces.settings import verp_signer
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.web.metrics import bounce_metrics, exposition
from tests.factories import BOUNCE_REPORTS as DATA
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at


def bounces_table(tmp_path: Path, extra: str = "") -> str:
    return f'\n[bounces]\nmaildir = "{tmp_path / "bounces"}"\n{extra}\n'


def make_maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def drop(box: Path, name: str, data: bytes | None = None) -> None:
    (box / "new" / name).write_bytes(data if data is not None else (DATA / name).read_bytes())


def status(app: App, address: str) -> str:
    return app.reader(address).status


@pytest.fixture
def setup(write_config, tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    box = make_maildir(tmp_path / "bounces")
    path = write_config(db_url=db_url, extra=bounces_table(tmp_path, "soft_bounce_limit = 2"))
    config = load_config(path)
    with App(config) as app:
        app.upgrade_database()  # a fresh SQLite file would do it alone; PostgreSQL would not
    return config, box


async def test_digests_leave_with_a_verp_return_path(setup, tmp_path: Path) -> None:
    config, _ = setup
    verp = verp_signer(config)
    assert verp is not None
    with App(config, clock=at(NOW)) as app:
        await app.run_once()
        rows = {e.email: e.id for e in app.outbox()}
    delivered = mailbox.Maildir(tmp_path / "maildir", create=False)
    seen = {}
    for msg in delivered:
        return_path = str(msg["Return-Path"]).strip("<>")
        assert return_path.startswith("bounces+") and return_path.endswith("@paperpost.example")
        seen[str(msg["To"]).rsplit("<", 1)[-1].rstrip(">")] = verp.delivery_for_address(return_path)
    assert seen == rows and len(rows) == 3


async def test_reports_suppress_unsubscribe_or_are_ignored(setup, caplog) -> None:
    config, box = setup
    with App(config, clock=at(NOW)) as app, caplog.at_level(logging.INFO, "paperpost.bounces"):
        await app.run_once()
        for name in (
            "hard_dsn.eml",  # ada: hard bounce
            "soft_dsn.eml",  # grace: one soft bounce (the limit is 2)
            "delayed_dsn.eml",  # zoe: delayed, not a bounce
            "garbage.eml",  # skipped, flagged
            "broken_dsn.eml",  # skipped, flagged
            "unsubscribe_mail.eml",  # zoe: mailed unsubscribe
        ):
            drop(box, name)
        report = app.process_bounces()
        assert (report.read, report.hard, report.soft, report.unsubscribes) == (6, 1, 1, 1)
        assert (report.malformed, report.ignored, report.duplicates) == (2, 1, 0)
        assert report.suppressed == ["ada@lab.example"]
        assert report.unsubscribed == ["zoe@lab.example"]
        assert status(app, "ada@lab.example") == "suppressed"
        assert status(app, "grace@lab.example") == "active"
        assert status(app, "zoe@lab.example") == "suppressed"
        assert app.status_reasons() == {
            "ada@lab.example": "hard_bounce",
            "zoe@lab.example": "unsubscribe_mail",
        }
        assert app.store.suppression("ADA@lab.example ") == "hard_bounce"
        assert app.store.suppression("zoe@lab.example") == "unsubscribe_mail"
        events = {
            r.subscriber: (r.levelno, r.kind, r.outcome)
            for r in caplog.records
            if getattr(r, "event", None) == "bounce"
        }
        assert events == {
            "ada@lab.example": (logging.WARNING, "hard", "suppressed"),
            "grace@lab.example": (logging.INFO, "soft", "recorded"),
            "zoe@lab.example": (logging.INFO, "unsubscribe", "unsubscribed"),
        }
        # Every message left new/: processed ones seen, malformed ones flagged for a human.
        assert list((box / "new").iterdir()) == []
        flags = sorted(p.name.rsplit(":2,", 1)[1] for p in (box / "cur").iterdir())
        assert flags == ["F", "F", "S", "S", "S", "S"]
        # Reading the same reports again (a copy of the mailbox) records nothing twice.
        for name in ("hard_dsn.eml", "soft_dsn.eml", "unsubscribe_mail.eml"):
            drop(box, name)
        again = app.process_bounces()
        assert (again.read, again.duplicates, again.soft, again.hard) == (3, 3, 0, 0)
        assert status(app, "grace@lab.example") == "active"  # still one soft bounce
        # A second, different soft bounce within the window reaches the limit.
        second = (DATA / "soft_dsn.eml").read_bytes().replace(b"E1softA", b"E1softB")
        drop(box, "soft2.eml", second)
        assert app.process_bounces().suppressed == ["grace@lab.example"]
        assert app.status_reasons()["grace@lab.example"] == "soft_bounces"


async def test_a_mailed_unsubscribe_is_a_suppression_the_reader_may_lift(setup) -> None:
    """The reader's own request: suppressed with its reason, lifted by their own act (the
    manage page, or the operator's ``resubscribe`` on their behalf), which a bounce or a
    complaint can never be."""
    config, box = setup
    later = at(NOW + timedelta(days=1))
    with App(config, clock=at(NOW)) as app:
        await app.run_once()
        drop(box, "unsubscribe_mail.eml")  # zoe
        drop(box, "hard_dsn.eml")  # ada
        app.process_bounces()
        # An old digest's unsubscribe link does not turn a suppression into an unsubscribe.
        assert not app.unsubscribe("ada@lab.example", reason="link")
        assert status(app, "ada@lab.example") == "suppressed"
        record = app.store.reader_record("zoe@lab.example")
        assert record is not None and record.may_resubscribe
        assert not app.store.reader_record("ada@lab.example").may_resubscribe  # type: ignore[union-attr]
        assert app.store.resubscribe_reader("zoe@lab.example", now=NOW)
        assert not app.resubscribe("ada@lab.example")
        assert status(app, "zoe@lab.example") == "active"
        assert app.store.suppression("zoe@lab.example") is None
        assert status(app, "ada@lab.example") == "suppressed"
    with App(config, clock=later) as app:
        report = await app.run_once()
        assert sorted(report.plan.items) == ["grace@lab.example", "zoe@lab.example"]


async def test_a_complaint_after_a_mailed_unsubscribe_makes_it_permanent(setup) -> None:
    config, box = setup
    mailed = (DATA / "unsubscribe_mail.eml").read_bytes().replace(b"zoe@", b"ada@")
    with App(config, clock=at(NOW)) as app:
        app.sync()
        drop(box, "mailed.eml", mailed)
        assert app.process_bounces().unsubscribed == ["ada@lab.example"]
        assert app.store.suppression("ada@lab.example") == "unsubscribe_mail"
        drop(box, "arf_complaint.eml")  # about a digest she had already received
        assert app.process_bounces().suppressed == ["ada@lab.example"]
        assert app.store.suppression("ada@lab.example") == "complaint"
        assert app.status_reasons()["ada@lab.example"] == "complaint"
        assert not app.resubscribe("ada@lab.example")


async def test_soft_bounces_far_apart_do_not_suppress(setup) -> None:
    config, box = setup
    first = (DATA / "soft_dsn.eml").read_bytes()
    later = first.replace(b"E1softA", b"E1softC").replace(b"23 Nov 2026", b"03 Dec 2026")
    with App(config, clock=at(NOW)) as app:
        app.sync(now=NOW)
        drop(box, "one.eml", first)
        app.process_bounces()
    with App(config, clock=at(NOW + timedelta(days=10, hours=1))) as app:
        drop(box, "two.eml", later)
        report = app.process_bounces()
        assert (report.soft, report.suppressed) == (1, [])
        assert status(app, "grace@lab.example") == "active"


async def test_a_complaint_suppresses(setup, caplog) -> None:
    config, box = setup
    with App(config, clock=at(NOW + timedelta(days=2))) as app:
        app.sync()
        drop(box, "arf_complaint.eml")
        with caplog.at_level(logging.INFO, logger="paperpost.bounces"):
            report = app.process_bounces()
        assert (report.complaints, report.suppressed) == (1, ["ada@lab.example"])
        assert app.status_reasons() == {"ada@lab.example": "complaint"}
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "bounce"]
    assert (record.levelno, record.subscriber, record.kind, record.outcome) == (
        logging.WARNING,
        "ada@lab.example",
        "complaint",
        "suppressed",
    )


async def test_the_verp_token_wins_over_the_reported_address(setup) -> None:
    """A forwarding address bounces: the report names the address it was forwarded to,
    the return path names the digest, and the digest's reader is suppressed."""
    config, box = setup
    verp = verp_signer(config)
    assert verp is not None
    with App(config, clock=at(NOW)) as app:
        await app.run_once()
        [row] = app.outbox(email="grace@lab.example")
        data = (
            (DATA / "hard_dsn.eml")
            .read_bytes()
            .replace(b"bounces@paperpost.example", verp.address(row.id).encode())
            .replace(b"ada@lab.example", b"gracie@forwarded.example")
        )
        drop(box, "verp.eml", data)
        report = app.process_bounces()
        assert report.suppressed == ["grace@lab.example"]
        assert status(app, "ada@lab.example") == "active"


async def test_a_forged_report_suppresses_nobody(setup, caplog) -> None:
    """A DSN sent to one of our return paths with a token that does not verify names an
    address of the forger's choosing: it is logged and flagged read, and changes nothing."""
    config, box = setup
    forged = (
        (DATA / "hard_dsn.eml")
        .read_bytes()
        .replace(b"bounces@paperpost.example", b"bounces+1c0ffee0123456789@paperpost.example")
    )
    with App(config, clock=at(NOW)) as app:
        app.sync()
        drop(box, "forged.eml", forged)
        with caplog.at_level(logging.INFO, logger="paperpost.bounces"):
            report = app.process_bounces()
        assert (report.read, report.hard, report.ignored, report.suppressed) == (1, 0, 1, [])
        assert status(app, "ada@lab.example") == "active"
        assert app.store.suppression("ada@lab.example") is None
    [warning] = [r for r in caplog.records if "no VERP token that verifies" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "forged.eml" in warning.getMessage()


def test_require_token_ignores_tokenless_reports(write_config, tmp_path: Path) -> None:
    box = make_maildir(tmp_path / "bounces")
    config = load_config(write_config(extra=bounces_table(tmp_path, "require_token = true")))
    with App(config, clock=at(NOW)) as app:
        app.upgrade_database()
        app.sync()
        drop(box, "hard_dsn.eml")  # to the bare bounces@ address: no token
        drop(box, "unsubscribe_mail.eml")  # needs none
        report = app.process_bounces()
        assert (report.hard, report.ignored, report.unsubscribed) == (0, 1, ["zoe@lab.example"])
        assert status(app, "ada@lab.example") == "active"
    with pytest.raises(ConfigError, match="require_token needs verp"):
        no_verp = bounces_table(tmp_path, "require_token = true\nverp = false")
        load_config(write_config(extra=no_verp))


async def test_suppressed_readers_are_never_planned_nor_reactivated(setup) -> None:
    config, box = setup
    with App(config, clock=at(NOW)) as app:
        await app.run_once()
        drop(box, "hard_dsn.eml")
        app.process_bounces()
        ada = app.reader("ada@lab.example").id
        assert ada not in app.store.active_schedules()
    # Next day: a config sync, then planning; ada gets nothing and stays suppressed.
    with App(config, clock=at(NOW + timedelta(days=1))) as app:
        report = await app.run_once()
        assert "ada@lab.example" not in report.plan.items
        assert sorted(report.plan.items) == ["grace@lab.example", "zoe@lab.example"]
        assert status(app, "ada@lab.example") == "suppressed"
        assert [e.period_key for e in app.outbox(email="ada@lab.example")] == ["2026-11-23"]


async def test_status_subscribers_and_rates(setup, capsys) -> None:
    config, box = setup
    with App(config, clock=at(NOW)) as app:
        await app.run_once()
        for name in ("hard_dsn.eml", "soft_dsn.eml"):
            drop(box, name)
        app.process_bounces()
        rates = app.bounce_rates(now=NOW + timedelta(days=1))
        assert (rates.sent, rates.bounces, rates.complaints) == (3, 2, 0)
        assert rates.bounce_rate == pytest.approx(2 / 3)
        assert rates.complaint_rate == 0
        assert app.bounce_rates(now=NOW + timedelta(days=9)).bounce_rate is None
    text = exposition(bounce_metrics(days=7, sent=3, bounces=2, complaints=0))
    assert 'paperpost_bounce_rate{window="7d"} 0.6666666666666666' in text
    assert 'paperpost_complaint_rate{window="7d"} 0' in text
    assert main(["-c", str(config.path), "subscribers", "list", "--status", "suppressed"]) == 0
    out = capsys.readouterr().out
    assert "ada@lab.example" in out and "hard_bounce" in out and "grace" not in out
    assert main(["-c", str(config.path), "status"]) == 0
    # `status` counts back from the real clock, days after NOW: the line, not the numbers.
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("last 7 days:")]
    assert "digests sent," in line and " bounces (" in line and " complaints (" in line


def test_the_cli_processes_the_mailbox(setup, capsys) -> None:
    config, box = setup
    with App(config, clock=at(NOW)) as app:
        app.sync()
    drop(box, "arf_complaint.eml")
    drop(box, "garbage.eml")
    assert main(["-c", str(config.path), "bounces", "process"]) == 0
    out = capsys.readouterr().out
    assert "2 read: 0 hard bounces, 0 soft, 1 complaints" in out
    assert "1 malformed" in out and "suppressed: ada@lab.example" in out


def test_a_malformed_report_is_logged_with_its_file(setup, caplog) -> None:
    config, box = setup
    drop(box, "garbage.eml")
    with App(config, clock=at(NOW)) as app:
        app.sync()
        app.process_bounces()
    [record] = [r for r in caplog.records if "skipping malformed" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert str(box / "new" / "garbage.eml") in record.getMessage()


def test_bounces_config_is_validated(write_config, tmp_path: Path) -> None:
    both = (
        '\n[bounces]\nmaildir = "b"\n[bounces.imap]\nhost = "h"\nuser = "u"\npassword_env = "P"\n'
    )
    with pytest.raises(ConfigError, match="exactly one of maildir"):
        load_config(write_config(extra=both))
    bad_local = '\n[bounces]\nmaildir = "b"\nverp_local = "a+b"\n'
    with pytest.raises(ConfigError, match="verp_local"):
        load_config(write_config(extra=bad_local))
    imap = (
        '\n[bounces]\n[bounces.imap]\nhost = "imap.example"\nuser = "u"\n'
        'password_env = "NO_SUCH_VAR_PP"\n'
    )
    with pytest.raises(ConfigError, match="NO_SUCH_VAR_PP is not set"):
        load_config(write_config(extra=imap))
    plain = (
        '\n[bounces]\n[bounces.imap]\nhost = "imap.example"\nuser = "u"\n'
        'password_env = "PAPERPOST_TEST_SECRET"\ntls = "none"\n'
    )
    with pytest.raises(ConfigError, match="loopback"):
        load_config(write_config(extra=plain))


def test_without_bounces_the_envelope_sender_is_the_from_address(write_config) -> None:
    from pipeline.cycle.deliver import deliver_settings

    settings = deliver_settings(load_config(write_config()))
    assert settings.return_path is None and settings.sender == "digest@paperpost.example"


def test_a_missing_maildir_is_a_clear_error(write_config, tmp_path: Path) -> None:
    from pipeline.errors import PaperpostError

    config = load_config(write_config(extra=bounces_table(tmp_path)))
    with App(config) as app, pytest.raises(PaperpostError, match="has no new/ and cur/"):
        app.process_bounces()


def test_samples_are_ours(tmp_path: Path) -> None:
    """The samples parse with the stdlib as what they claim to be (a guard on the data)."""
    for name, kind in [
        ("hard_dsn.eml", "delivery-status"),
        ("soft_dsn.eml", "delivery-status"),
        ("delayed_dsn.eml", "delivery-status"),
        ("arf_complaint.eml", "feedback-report"),
    ]:
        msg = email.message_from_bytes((DATA / name).read_bytes(), policy=email.policy.default)
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == kind
    shutil.copy(DATA / "hard_dsn.eml", tmp_path / "x.eml")


async def test_the_daemon_polls_the_mailbox_and_serves_the_rates(setup) -> None:
    """The daemon's `bounces` job reads the mailbox, and /metrics (the daemon's web
    backend) carries the rates computed from the database."""
    from pipeline.daemon import Daemon, DaemonWebBackend

    config, box = setup
    with App(config, clock=at(NOW)) as app:
        await app.run_once()  # three digests sent
    drop(box, "hard_dsn.eml")
    drop(box, "arf_complaint.eml")
    daemon = Daemon(config, clock=at(NOW + timedelta(days=2)))
    try:
        jobs = {job.name: job for job in daemon._jobs(config)}
        assert jobs["bounces"].every == timedelta(minutes=5)
        await jobs["bounces"].run()
        assert daemon.core.reader("ada@lab.example").status == "suppressed"
        metrics = DaemonWebBackend(daemon).metrics_text()
    finally:
        daemon.core.close()
    # 1 bounce and 1 complaint against 3 digests sent in the last 7 days.
    assert 'paperpost_bounce_rate{window="7d"} 0.3333333333333333\n' in metrics
    assert 'paperpost_complaint_rate{window="7d"} 0.3333333333333333\n' in metrics
    assert 'paperpost_digests_sent_window{window="7d"} 3\n' in metrics


def test_no_bounces_table_no_bounce_job(write_config) -> None:
    from pipeline.daemon import Daemon

    config = load_config(write_config())

    async def jobs() -> set[str]:
        daemon = Daemon(config)
        try:
            return {job.name for job in daemon._jobs(config)}
        finally:
            daemon.core.close()

    import asyncio

    assert "bounces" not in asyncio.run(jobs())
