"""SmtpMailer's ``commit`` hook against a real aiosmtpd: awaited once, after the 354 reply
to DATA and before the message is written; False means no message and a closed connection;
a failure before DATA never reaches it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import AnyStr

import pytest
from aiosmtpd.smtp import SMTP

from pipeline.domain import Envelope
from pipeline.errors import ClaimLostError, TransientDeliveryError
from pipeline.mail import SmtpMailer, SmtpSettings
from pipeline.mail.smtp import _Connection
from tests.conftest_smtp import StartServer
from tests.smtpd import RecordingHandler, RunningServer, ScriptedHandler

WAIT = 30.0  # seconds: a safety net against hangs, never a timing assertion


def envelope(n: int) -> Envelope:
    return Envelope(
        sender="digest@lab.example",
        recipient=f"reader{n}@lab.example",
        data=b"From: digest@lab.example\r\nSubject: hi\r\n\r\nbody\r\n",
        message_id=f"<{n}.commit@lab.example>",
    )


def settings(server: RunningServer) -> SmtpSettings:
    return SmtpSettings(
        host=server.host, port=server.port, security="none", timeout=5.0, data_timeout=5.0
    )


class TracingHandler(ScriptedHandler):
    """Remembers every reply the server sends and when a session ends; can close the
    session right after the 354 reply to DATA (as a server that dies there)."""

    def __init__(self, script: dict[str, list[str]] | None = None) -> None:
        super().__init__(script or {})
        self.replies: list[str] = []
        self.closed = threading.Event()
        self.close_after_354 = 0


class TracingSMTP(SMTP):
    async def push(self, status: AnyStr) -> None:
        handler = self.event_handler
        assert isinstance(handler, TracingHandler)
        text = status if isinstance(status, str) else status.decode()
        handler.replies.append(text)
        await super().push(status)
        if text.startswith("354") and handler.close_after_354 > 0:
            handler.close_after_354 -= 1
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        handler = self.event_handler
        assert isinstance(handler, TracingHandler)
        handler.closed.set()


class WatchedMailer(SmtpMailer):
    """A real SmtpMailer that lets the test see the connections it opens."""

    def __init__(self, s: SmtpSettings) -> None:
        super().__init__(s)
        self.connections: list[_Connection] = []

    async def _connect(self, *, retrying: bool) -> _Connection:
        conn = await super()._connect(retrying=retrying)
        self.connections.append(conn)
        return conn


@pytest.fixture
async def watched() -> AsyncIterator[Callable[[SmtpSettings], WatchedMailer]]:
    made: list[WatchedMailer] = []

    def make(s: SmtpSettings) -> WatchedMailer:
        made.append(WatchedMailer(s))
        return made[-1]

    yield make
    for mailer in made:
        await mailer.aclose()


def tracing_server(
    factory: StartServer, script: dict[str, list[str]] | None = None
) -> tuple[RunningServer, TracingHandler]:
    handler = TracingHandler(script)
    return factory(handler, smtp_class=TracingSMTP), handler


async def test_commit_is_awaited_once_after_354_and_before_the_message(
    smtp_server_factory: StartServer, watched: Callable[[SmtpSettings], WatchedMailer]
) -> None:
    server, handler = tracing_server(smtp_server_factory)
    mailer = watched(settings(server))
    seen: list[tuple[str, list[str], int]] = []

    async def commit() -> bool:
        seen.append((handler.replies[-1], list(handler.commands), len(server.received)))
        return True

    reply = await mailer.send(envelope(0), commit=commit)
    assert reply.startswith("250 ")
    # Once; the server had answered DATA with 354 and had no message yet.
    [(last_reply, commands, messages)] = seen
    assert last_reply.startswith("354 ")
    assert (commands, messages) == (["MAIL", "RCPT"], 0)
    assert len(server.received) == 1


async def test_commit_refused_closes_the_connection_and_delivers_nothing(
    smtp_server_factory: StartServer, watched: Callable[[SmtpSettings], WatchedMailer]
) -> None:
    server, handler = tracing_server(smtp_server_factory)
    mailer = watched(settings(server))
    calls: list[str] = []

    async def refuse() -> bool:
        calls.append(handler.replies[-1])
        return False

    with pytest.raises(ClaimLostError, match=r"reader0@lab\.example: no longer claimed"):
        await mailer.send(envelope(0), commit=refuse)
    assert len(calls) == 1 and calls[0].startswith("354 ")
    # The client hung up inside DATA: the server discards the unfinished message.
    assert await asyncio.to_thread(handler.closed.wait, WAIT)
    assert server.received == []
    assert "DATA" not in handler.commands  # aiosmtpd's handle_DATA never ran
    # The connection is not reused: the next message goes over a fresh one.
    assert (await mailer.send(envelope(1))).startswith("250 ")
    assert mailer.stats.connections_opened == 2
    assert [e.rcpt_tos for e, _ in server.received] == [("reader1@lab.example",)]


async def test_a_4xx_at_rcpt_never_reaches_the_commit(
    smtp_server_factory: StartServer, watched: Callable[[SmtpSettings], WatchedMailer]
) -> None:
    server = smtp_server_factory(ScriptedHandler({"RCPT": ["451 4.7.1 Greylisted"]}))
    mailer = watched(settings(server))
    calls = 0

    async def commit() -> bool:
        nonlocal calls
        calls += 1
        return True

    with pytest.raises(TransientDeliveryError, match=r"451 4\.7\.1 Greylisted to RCPT TO"):
        await mailer.send(envelope(0), commit=commit)
    assert calls == 0
    assert server.received == []


async def test_a_retry_after_the_commit_does_not_commit_again(
    smtp_server_factory: StartServer, watched: Callable[[SmtpSettings], WatchedMailer]
) -> None:
    # The server dies right after its 354: the commit has happened, the write then finds
    # the connection gone (nothing written, so nothing delivered) and the mailer retries
    # once on a new connection, without asking to commit a second time.
    server, handler = tracing_server(smtp_server_factory)
    handler.close_after_354 = 1
    mailer = watched(settings(server))
    calls = 0

    async def commit() -> bool:
        nonlocal calls
        calls += 1
        assert await asyncio.to_thread(handler.closed.wait, WAIT)
        first = mailer.connections[0].client
        deadline = time.monotonic() + WAIT
        while first.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0)  # let the loop read the server's end of the connection
        assert not first.is_connected
        return True

    reply = await mailer.send(envelope(0), commit=commit)
    assert reply.startswith("250 ")
    assert calls == 1
    assert (mailer.stats.reconnects, mailer.stats.connections_opened) == (1, 2)
    assert len(server.received) == 1


async def test_without_a_commit_the_mailer_sends_as_before(
    smtp_server_factory: StartServer, watched: Callable[[SmtpSettings], WatchedMailer]
) -> None:
    server = smtp_server_factory(RecordingHandler())
    mailer = watched(settings(server))
    assert (await mailer.send(envelope(0))).startswith("250 ")
    assert len(server.received) == 1
