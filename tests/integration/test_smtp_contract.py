"""The transport contract, run against both mailers (SMTP to aiosmtpd, Maildir in tmp_path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.domain import Envelope, Mailer, MessageHeaders
from pipeline.errors import BatchAbortedError, PermanentDeliveryError
from pipeline.mail import MaildirMailer, SmtpMailer, SmtpSettings, build_message, make_message_id
from pipeline.render import Renderer, sample_digest
from tests.conftest_smtp import StartServer


@dataclass
class Transport:
    mailer: Mailer
    delivered: Callable[[], list[tuple[str, bytes]]]  # (recipient, message bytes with CRLF)


def _maildir_delivered(root: Path) -> list[tuple[str, bytes]]:
    found = []
    for path in sorted([*root.glob("new/*"), *root.glob("cur/*")]):
        raw = path.read_bytes()
        return_path, delivered_to, message = raw.split(b"\n", 2)
        assert return_path.startswith(b"Return-Path: <")
        recipient = delivered_to.removeprefix(b"Delivered-To: ").decode("ascii")
        found.append((recipient, message.replace(b"\n", b"\r\n")))
    return found


@pytest.fixture(params=["smtp", "maildir"])
async def transport(
    request: pytest.FixtureRequest, smtp_server_factory: StartServer, tmp_path: Path
) -> AsyncIterator[Transport]:
    if request.param == "smtp":
        server = smtp_server_factory()
        settings = SmtpSettings(
            host=server.host, port=server.port, security="none", timeout=5, pool_size=3
        )
        result = Transport(
            SmtpMailer(settings), lambda: [(e.rcpt_tos[0], data) for e, data in server.received]
        )
    else:
        root = tmp_path / "Maildir"
        result = Transport(MaildirMailer(root), lambda: _maildir_delivered(root))
    yield result
    await result.mailer.aclose()


_RENDERED = Renderer().render(sample_digest())


def real_message(n: int, recipient: str) -> Envelope:
    rendered = _RENDERED
    message_id = make_message_id(f"{recipient}/{n}", "lab.example")
    headers = MessageHeaders(
        from_addr="Paperpost <digest@lab.example>",
        to_addr=recipient,
        to_name="Ada Lovelace",
        subject=rendered.subject,
        message_id=message_id,
        date=datetime(2026, 11, 23, 7, 0, tzinfo=UTC),
        list_id="Paperpost <digest.lab.example>",
        unsubscribe_url="https://digest.lab.example/u/x",
        unsubscribe_mailto=None,
    )
    return Envelope("digest@lab.example", recipient, build_message(headers, rendered), message_id)


async def test_delivers_exactly_the_built_bytes(transport: Transport) -> None:
    envelope = real_message(1, "ada@lab.example")
    result = await transport.mailer.send(envelope)
    assert isinstance(result, str) and result
    assert transport.delivered() == [("ada@lab.example", envelope.data)]


async def test_concurrent_sends_are_each_delivered_once(transport: Transport) -> None:
    envelopes = [real_message(n, f"reader{n}@lab.example") for n in range(25)]
    results = await asyncio.gather(*(transport.mailer.send(e) for e in envelopes))
    assert all(isinstance(r, str) and r for r in results)
    delivered = transport.delivered()
    assert sorted(delivered) == sorted((e.recipient, e.data) for e in envelopes)


async def test_a_bad_recipient_fails_only_its_own_message(transport: Transport) -> None:
    bad = Envelope(
        "digest@lab.example", "ada@lab.example\r\nBcc: x@evil.example", b"x\r\n", "<b@x>"
    )
    with pytest.raises(PermanentDeliveryError, match="envelope recipient"):
        await transport.mailer.send(bad)
    good = real_message(2, "bob@lab.example")
    await transport.mailer.send(good)
    assert transport.delivered() == [("bob@lab.example", good.data)]


async def test_idn_recipients_are_delivered_to_the_punycode_address(transport: Transport) -> None:
    envelope = real_message(3, "zoe@bücher.example")
    await transport.mailer.send(envelope)
    assert transport.delivered() == [("zoe@xn--bcher-kva.example", envelope.data)]


async def test_a_closed_mailer_aborts_the_batch(transport: Transport) -> None:
    await transport.mailer.aclose()
    with pytest.raises(BatchAbortedError, match="is closed"):
        await transport.mailer.send(real_message(4, "ada@lab.example"))
    assert transport.delivered() == []
