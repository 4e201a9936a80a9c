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

The ``commit`` callback of :meth:`MaildirMailer.send` is awaited after the
message is in ``tmp/`` (invisible to mail clients) and before it is linked
into ``new/`` (or, for a message already there, before its path is returned);
if it returns False the tmp file is removed and :class:`ClaimLostError` raised.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.domain import Commit, Envelope
from pipeline.errors import BatchAbortedError, ClaimLostError, TransientDeliveryError
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

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        """Deliver one message; return the path of the delivered file.

        ``commit`` is awaited once, with the message written to ``tmp/`` and not yet
        linked into ``new/``; False removes it and raises :class:`ClaimLostError`.
        """
        if self._closed:
            raise BatchAbortedError(f"Maildir mailer for {self._path} is closed")
        envelope_addresses(envelope)  # a bad address fails this message only
        name = hashlib.sha256(envelope.message_id.encode("utf-8")).hexdigest()[:40] + ".paperpost"
        target, tmp = await asyncio.to_thread(self._prepare, envelope, name)
        try:
            if commit is not None and not await commit():
                raise ClaimLostError(
                    f"message {envelope.message_id} to {envelope.recipient}: no longer claimed "
                    f"by this sender; not delivered"
                )
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        if tmp is None:  # delivered before (a retry after a crash): not written again
            return str(target)
        return await asyncio.to_thread(self._link, envelope, tmp, target)

    async def aclose(self) -> None:
        self._closed = True

    def _prepare(self, envelope: Envelope, name: str) -> tuple[Path, Path | None]:
        """The message written and synced in ``tmp/``: (its place in ``new/``, the tmp
        file), or (the file already delivered, None)."""
        sender, recipient = envelope_addresses(envelope)
        with self._errors(envelope):
            tmp_dir, new_dir, cur_dir = self._ensure_dirs()
            existing = _already_delivered(name, new_dir, cur_dir)
            if existing is not None:
                return existing, None
            content = f"Return-Path: <{sender}>\nDelivered-To: {recipient}\n".encode(
                "ascii"
            ) + envelope.data.replace(b"\r\n", b"\n")
            tmp = tmp_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex}"
            _write_synced(tmp, content)
        return new_dir / name, tmp

    def _link(self, envelope: Envelope, tmp: Path, target: Path) -> str:
        """Make the message visible: link it into ``new/`` and sync the directory."""
        with self._errors(envelope):
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass  # a concurrent delivery of the same message won the race
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(target.parent)
        return str(target)

    @contextmanager
    def _errors(self, envelope: Envelope) -> Iterator[None]:
        """OSError -> TransientDeliveryError (space, quota, I/O) or BatchAbortedError."""
        try:
            yield
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
