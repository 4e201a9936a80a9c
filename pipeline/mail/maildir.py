"""Maildir transport: each message becomes one file in ``<path>/new``.

Same contract as SMTP: ``send`` returns where the message went (the file
path) or raises one of the delivery errors. Delivery is the classic Maildir
dance (write to ``tmp/``, fsync, link into ``new/``, fsync the directory), so
a message is either fully there or not at all, and a crash never leaves half
a message visible to a mail client.

The file name is derived from the Message-ID, which makes delivery
idempotent: sending the same message again (a retry after a crash, the
at-least-once case of the outbox) finds the file already in ``new/`` or
``cur/`` and returns its path instead of writing a duplicate.

Like a real delivery agent it prepends ``Return-Path`` and ``Delivered-To``,
and stores LF line endings, the Maildir convention.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import uuid
from pathlib import Path

from pipeline.domain import Envelope
from pipeline.errors import BatchAbortedError, TransientDeliveryError
from pipeline.mail.headers import envelope_addresses

__all__ = ["MaildirMailer"]

# Errors that may pass (space, quota, I/O hiccup); anything else means the
# Maildir itself is unusable and the batch must stop.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})


class MaildirMailer:
    """A :class:`pipeline.domain.Mailer` that delivers into a local Maildir."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._closed = False

    async def send(self, envelope: Envelope) -> str:
        """Deliver one message; return the path of the delivered file."""
        if self._closed:
            raise BatchAbortedError(f"Maildir mailer for {self._path} is closed")
        envelope_addresses(envelope)  # a bad address fails this message only
        return await asyncio.to_thread(self._deliver, envelope)

    async def aclose(self) -> None:
        self._closed = True

    def _deliver(self, envelope: Envelope) -> str:
        sender, recipient = envelope_addresses(envelope)
        name = hashlib.sha256(envelope.message_id.encode("utf-8")).hexdigest()[:40] + ".paperpost"
        try:
            tmp_dir, new_dir, cur_dir = self._ensure_dirs()
            existing = _already_delivered(name, new_dir, cur_dir)
            if existing is not None:
                return str(existing)
            content = f"Return-Path: <{sender}>\nDelivered-To: {recipient}\n".encode(
                "ascii"
            ) + envelope.data.replace(b"\r\n", b"\n")
            tmp = tmp_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex}"
            _write_synced(tmp, content)
            target = new_dir / name
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass  # a concurrent delivery of the same message won the race
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(new_dir)
        except OSError as exc:
            where = f"Maildir {self._path} ({exc.strerror or exc})"
            if exc.errno in _TRANSIENT_ERRNOS:
                raise TransientDeliveryError(
                    f"message {envelope.message_id} to {envelope.recipient}: cannot write to "
                    f"{where}; retry later"
                ) from exc
            raise BatchAbortedError(
                f"cannot deliver into {where}; check the path and its permissions"
            ) from exc
        return str(target)

    def _ensure_dirs(self) -> tuple[Path, Path, Path]:
        dirs = (self._path / "tmp", self._path / "new", self._path / "cur")
        for directory in dirs:
            directory.mkdir(parents=True, exist_ok=True)
        return dirs


def _already_delivered(name: str, new_dir: Path, cur_dir: Path) -> Path | None:
    candidate = new_dir / name
    if candidate.exists():
        return candidate
    # A mail client moves read messages to cur/ and appends ":2,<flags>".
    for seen in cur_dir.glob(f"{name}:*"):
        return seen
    candidate = cur_dir / name
    return candidate if candidate.exists() else None


def _write_synced(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
