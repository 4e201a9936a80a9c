"""Where bounce reports are read from: a Maildir, or an IMAP folder (polled).

Both hand out the messages not yet processed and then mark each one:

- **Maildir**: the unread messages in ``new/``; a processed one moves to ``cur/`` with the
  Seen flag (``:2,S``), a malformed one to ``cur/`` flagged and unread (``:2,F``) so a
  mail client shows it to a human. ``cur/`` is never read again.
- **IMAP** (``imaplib``, TLS or STARTTLS; plain only to a loopback host): the UNSEEN
  messages of the folder, fetched with ``BODY.PEEK[]`` (reading does not mark them); a
  processed one gets ``\\Seen``, a malformed one ``\\Seen \\Flagged``. The folder should
  be Paperpost's alone: a message a person opens first is never read by Paperpost.

A message is marked only after its events are committed, so a crash in between means it
is read again, and recording it again changes nothing (events are unique per report).
"""

from __future__ import annotations

import imaplib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from pipeline.errors import PaperpostError

MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024  # a report is small; a huge message is not one
_LOOPBACK: Final = ("127.0.0.1", "::1", "localhost")


class MailboxError(PaperpostError):
    """The bounce mailbox cannot be opened or read (the run stops; nothing is marked)."""


@dataclass(frozen=True, slots=True)
class Item:
    ref: str  # for logs: the file's path, or "imap://host/folder UID n"
    data: bytes
    key: str  # the file name, or the UID


class BounceMailbox(Protocol):
    def messages(self) -> Iterator[Item]: ...
    def processed(self, item: Item) -> None: ...
    def rejected(self, item: Item) -> None: ...
    def close(self) -> None: ...


class MaildirBox:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise MailboxError(f"bounce Maildir {path} has no new/ and cur/ folders")

    def messages(self) -> Iterator[Item]:
        new = self.path / "new"
        for name in sorted(os.listdir(new)):
            if name.startswith("."):
                continue
            file = new / name
            try:
                size = file.stat().st_size
                with file.open("rb") as fh:
                    data = fh.read(MAX_MESSAGE_BYTES + 1)
            except FileNotFoundError:  # another reader took it
                continue
            except OSError as exc:
                raise MailboxError(f"cannot read {file}: {exc}") from exc
            if size > MAX_MESSAGE_BYTES:
                data = b""  # parsed as malformed ("empty"): flagged for a human
            yield Item(ref=str(file), data=data, key=name)

    def _move(self, item: Item, flags: str) -> None:
        base = item.key.split(":", 1)[0]
        try:
            os.rename(self.path / "new" / item.key, self.path / "cur" / f"{base}:2,{flags}")
        except FileNotFoundError:
            pass  # moved by another reader meanwhile
        except OSError as exc:
            raise MailboxError(f"cannot move {item.ref} to cur/: {exc}") from exc

    def processed(self, item: Item) -> None:
        self._move(item, "S")

    def rejected(self, item: Item) -> None:
        self._move(item, "F")

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ImapSettings:
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    security: Literal["tls", "starttls", "none"] = "tls"
    timeout: float = 60.0
    ca_file: Path | None = None


class ImapBox:
    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self._where = f"imap://{settings.host}:{settings.port}/{settings.folder}"
        self._imap = self._connect()

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        if s.security == "none" and s.host not in _LOOPBACK:
            raise MailboxError(f"{self._where}: plain IMAP is only allowed to a loopback host")
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        try:
            imap: imaplib.IMAP4
            if s.security == "tls":
                imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context, timeout=s.timeout)
            else:
                imap = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    imap.starttls(ssl_context=context)
            imap.login(s.user, s.password)
            status, data = imap.select(_quote(s.folder))
            if status != "OK":
                imap.logout()
                raise MailboxError(f"{self._where}: cannot select the folder: {data!r}")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self._where}: {exc}") from exc
        return imap

    def _uid(self, *args: str) -> list[object]:
        try:
            status, data = self._imap.uid(*args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self._where}: UID {args[0]} failed: {exc}") from exc
        if status != "OK":
            raise MailboxError(f"{self._where}: UID {args[0]} answered {status} {data!r}")
        return list(data)

    def messages(self) -> Iterator[Item]:
        found = self._uid("SEARCH", "UNSEEN")
        first = found[0] if found else b""
        uids = [int(u) for u in first.split()] if isinstance(first, bytes) else []
        for uid in sorted(uids):
            parts = self._uid("FETCH", str(uid), "(BODY.PEEK[])")
            data = b""
            for part in parts:
                if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                    data = part[1]
                    break
            if len(data) > MAX_MESSAGE_BYTES:
                data = b""
            yield Item(ref=f"{self._where} UID {uid}", data=data, key=str(uid))

    def processed(self, item: Item) -> None:
        self._uid("STORE", item.key, "+FLAGS", "(\\Seen)")

    def rejected(self, item: Item) -> None:
        self._uid("STORE", item.key, "+FLAGS", "(\\Seen \\Flagged)")

    def close(self) -> None:
        try:
            self._imap.close()
            self._imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _quote(folder: str) -> str:
    if any(c in folder for c in '\r\n"\\'):
        raise MailboxError(f"IMAP folder name {folder!r} has a quote, backslash or line break")
    return f'"{folder}"'
