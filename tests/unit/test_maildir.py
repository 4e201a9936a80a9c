"""MaildirMailer specifics: atomic, idempotent delivery readable by any mail client."""

from __future__ import annotations

import errno
import mailbox
import os
from pathlib import Path

import pytest

from pipeline.domain import Envelope
from pipeline.errors import BatchAbortedError, ClaimLostError, TransientDeliveryError
from pipeline.mail import MaildirMailer

MESSAGE = (
    b"From: Paperpost <digest@lab.example>\r\nTo: ada@lab.example\r\nSubject: hi\r\n"
    b"Message-ID: <m1@lab.example>\r\n\r\nbody line\r\n.dot line\r\n"
)


def envelope(message_id: str = "<m1@lab.example>") -> Envelope:
    return Envelope("digest@lab.example", "ada@lab.example", MESSAGE, message_id)


async def test_delivered_file_is_a_maildir_message(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    path = Path(await MaildirMailer(root).send(envelope()))
    assert path.parent == root / "new"
    assert list((root / "tmp").iterdir()) == []
    raw = path.read_bytes()
    assert b"\r" not in raw
    assert raw.startswith(b"Return-Path: <digest@lab.example>\nDelivered-To: ada@lab.example\n")
    (message,) = list(mailbox.Maildir(root, create=False))
    assert message["Subject"] == "hi"
    assert message["Message-ID"] == "<m1@lab.example>"
    assert message.get_payload() == "body line\n.dot line\n"


async def test_redelivery_of_the_same_message_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    mailer = MaildirMailer(root)
    first = await mailer.send(envelope())
    assert await mailer.send(envelope()) == first
    assert len(list((root / "new").iterdir())) == 1
    # A mail client reads it: moved to cur/ with flags. Still not delivered twice.
    seen = root / "cur" / (Path(first).name + ":2,S")
    os.rename(first, seen)
    assert await mailer.send(envelope()) == str(seen)
    assert len(list(mailbox.Maildir(root, create=False))) == 1
    other = await mailer.send(envelope("<m2@lab.example>"))
    assert other != first and len(list(mailbox.Maildir(root, create=False))) == 2


async def test_an_unusable_maildir_aborts_the_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BatchAbortedError, match=r"cannot deliver into Maildir .*file/Maildir"):
        await MaildirMailer(blocker / "Maildir").send(envelope())


async def test_a_full_disk_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pipeline.mail.maildir.os.write", full)
    root = tmp_path / "Maildir"
    with pytest.raises(TransientDeliveryError, match="No space left on device"):
        await MaildirMailer(root).send(envelope())
    assert list((root / "new").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []  # no half-written leftovers


async def test_commit_comes_with_the_message_in_tmp_and_before_new(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    seen: list[tuple[int, int]] = []

    async def commit() -> bool:
        seen.append((len(list((root / "tmp").iterdir())), len(list((root / "new").iterdir()))))
        return True

    path = Path(await MaildirMailer(root).send(envelope(), commit=commit))
    assert seen == [(1, 0)]  # once: written and synced in tmp/, not yet visible in new/
    assert path.parent == root / "new"
    assert list((root / "tmp").iterdir()) == []


async def test_a_refused_commit_delivers_nothing(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    calls: list[int] = []

    async def refuse() -> bool:
        calls.append(1)
        return False

    with pytest.raises(ClaimLostError, match="no longer claimed by this sender; not delivered"):
        await MaildirMailer(root).send(envelope(), commit=refuse)
    assert calls == [1]
    assert list((root / "new").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []


async def test_a_message_delivered_before_is_committed_too(tmp_path: Path) -> None:
    # A retry after a crash finds the message in new/: the outbox row must still be
    # committed ("sending") before it is recorded as sent, and a lost claim is reported.
    root = tmp_path / "Maildir"
    mailer = MaildirMailer(root)
    first = await mailer.send(envelope())
    calls: list[bool] = []

    async def commit() -> bool:
        calls.append(True)
        return True

    async def refuse() -> bool:
        calls.append(False)
        return False

    assert await mailer.send(envelope(), commit=commit) == first
    with pytest.raises(ClaimLostError, match="no longer claimed"):
        await mailer.send(envelope(), commit=refuse)
    assert calls == [True, False]
    assert len(list((root / "new").iterdir())) == 1
