"""``preview`` shows exactly the next send (its own file, ``on_empty`` honoured) and
``send-test`` refuses unknown and unsubscribed addresses without ``--force``."""

from __future__ import annotations

import email.policy
import mailbox
import re
from pathlib import Path

import pytest

from pipeline.app import App, RecipientRefusedError
from pipeline.cli import main
from pipeline.config import load_config
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at

NOBODY_MATCHES = """
[[subscribers]]
email = "quiet@lab.example"
timezone = "UTC"
send_at = "00:00"
on_empty = "{on_empty}"
[subscribers.interests]
query = 'ti:zqxjkvwpyqz'
"""


def titles(html: str) -> list[str]:
    """The arXiv ids linked from a digest, in order: which papers it carries."""
    return list(dict.fromkeys(re.findall(r"arxiv\.org/abs/([0-9.]+)", html)))


def delivered_to(maildir: Path, address: str) -> email.message.EmailMessage:
    box = mailbox.Maildir(maildir, factory=None, create=False)
    for key in box.iterkeys():
        raw = box.get_bytes(key)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if message["To"] and address in str(message["To"]):
            assert isinstance(message, email.message.EmailMessage)
            return message
    raise AssertionError(f"nothing delivered to {address}")


async def test_preview_is_the_next_send_in_its_own_file(write_config, tmp_path: Path) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        await app.ingest()
        upcoming = app.next_digest("ada@lab.example")
        written = app.preview("ada@lab.example")
        assert written == tmp_path / "previews" / "ada_lab.example.next.html"
        assert written.read_text(encoding="utf-8") == upcoming.html
        report = await app.run_once(write_previews=True)
        delivered_file = report.deliver.previews["ada@lab.example"]
    assert delivered_file != written
    sent = delivered_file.read_text(encoding="utf-8")
    # The same papers in the same order, under the same subject, for the same period.
    assert upcoming.papers > 0 and titles(upcoming.html or "") == titles(sent)
    message = delivered_to(tmp_path / "maildir", "ada@lab.example")
    assert str(message["Subject"]) == upcoming.subject
    assert upcoming.period_key == app.outbox(email="ada@lab.example")[0].period_key

    # Everything is sent: the next digest has nothing new, ada's on_empty is skip.
    with App(load_config(path), clock=at(NOW)) as app:
        after = app.next_digest("ada@lab.example")
        assert after.html is None and "on_empty is skip" in (after.nothing or "")
        assert app.preview("ada@lab.example") is None
    assert not written.exists()  # the stale preview went: it showed a digest never sent
    assert delivered_file.read_text(encoding="utf-8") == sent  # never overwritten


async def test_a_planned_digest_previews_as_planned(write_config) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        await app.ingest()
        app.plan()
        [row] = app.outbox(email="zoe@lab.example")
        upcoming = app.next_digest("zoe@lab.example")
        assert (upcoming.period_key, upcoming.papers) == (row.period_key, row.item_count)


def test_preview_of_an_empty_skip_digest_writes_nothing_and_says_so(
    write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(subscribers=NOBODY_MATCHES.format(on_empty="skip"))
    assert main(["-c", str(path), "ingest"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "preview", "quiet@lab.example"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("quiet@lab.example: nothing would be sent for ")
    assert "on_empty is skip; no preview written" in out
    assert not (tmp_path / "previews").exists() or not list((tmp_path / "previews").iterdir())


def test_preview_of_an_empty_send_digest_writes_the_page_that_would_go(
    write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(subscribers=NOBODY_MATCHES.format(on_empty="send"))
    assert main(["-c", str(path), "ingest"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "preview", "quiet@lab.example"]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == tmp_path / "previews" / "quiet_lab.example.next.html"
    assert "0 papers" in err
    assert "<html" in Path(out.strip()).read_text(encoding="utf-8").lower()


# -- send-test ------------------------------------------------------------------------------
def smtp_config(write_config, port: int) -> Path:  # type: ignore[no-untyped-def]
    extra = f'[mail.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    path: Path = write_config(transport="smtp", mail_extra=extra)
    return path


def test_send_test_refuses_unknown_and_unsubscribed_addresses_without_force(
    write_config, smtp_server, capsys: pytest.CaptureFixture[str]
) -> None:
    path = smtp_config(write_config, smtp_server.port)
    assert main(["-c", str(path), "ingest"]) == 0
    assert main(["-c", str(path), "subscribers", "unsubscribe", "grace@lab.example"]) == 0
    capsys.readouterr()

    for address, why in (
        ("stranger@elsewhere.example", "is not a subscriber of this list (unknown address)"),
        ("grace@lab.example", "unsubscribed from this list"),
    ):
        assert main(["-c", str(path), "send-test", address]) == 1
        _, err = capsys.readouterr()
        assert err.splitlines() == [
            f"paperpost: error: send-test: {address} {why}; nothing sent "
            "(add --force to send anyway)"
        ]
    assert smtp_server.received == []

    assert main(["-c", str(path), "send-test", "ada@lab.example"]) == 0  # active: no question
    assert main(["-c", str(path), "send-test", "--force", "grace@lab.example"]) == 0
    out, err = capsys.readouterr()
    assert out.count("server answered: 250") == 2
    assert "grace@lab.example unsubscribed from this list; sending anyway (--force)" in err
    assert [list(e.rcpt_tos) for e, _ in smtp_server.received] == [
        ["ada@lab.example"],
        ["grace@lab.example"],
    ]


async def test_send_test_refusal_is_a_clear_error_in_the_application(write_config) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        with pytest.raises(RecipientRefusedError, match="unknown address"):
            await app.send_test("who@lab.example")


def test_the_daemons_preview_page_says_when_nothing_would_be_sent(
    write_config, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.daemon import Daemon, DaemonWebBackend

    path = write_config(subscribers=NOBODY_MATCHES.format(on_empty="skip"))
    assert main(["-c", str(path), "ingest"]) == 0
    daemon = Daemon(load_config(path))
    try:
        page = DaemonWebBackend(daemon).render_preview("quiet@lab.example")
        assert page is not None and "<html" in page
        assert "Nothing would be sent to quiet@lab.example for " in page
        assert "on_empty is skip" in page
        assert DaemonWebBackend(daemon).render_preview("nobody@lab.example") is None
    finally:
        daemon.core.close()
