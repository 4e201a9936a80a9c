"""SmtpMailer against a real aiosmtpd on 127.0.0.1: every fault maps to its error class."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain import Envelope
from pipeline.errors import (
    AmbiguousDeliveryError,
    BatchAbortedError,
    PermanentDeliveryError,
)
from pipeline.mail import SmtpMailer, SmtpSettings
from pipeline.mail.pacing import Pacer
from pipeline.mail.smtp import data_payload
from tests.conftest_smtp import StartServer, TlsFiles
from tests.smtpd import DROP, HANG, RunningServer, ScriptedHandler, password_authenticator

# aiosmtpd warns when AUTH is allowed without TLS; the tests do that on loopback on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

BODY = b"From: a@lab.example\r\nSubject: hi\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"


def envelope(n: int = 0, recipient: str | None = None) -> Envelope:
    return Envelope(
        sender="digest@lab.example",
        recipient=recipient or f"reader{n}@lab.example",
        data=BODY,
        message_id=f"<{n}.test@lab.example>",
    )


def settings(server: RunningServer, **changes: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "timeout": 5.0,
        "data_timeout": 5.0,
    }
    values.update(changes)
    return SmtpSettings(**values)


@pytest.fixture
async def mailers() -> AsyncIterator[Callable[[SmtpSettings], SmtpMailer]]:
    made: list[SmtpMailer] = []

    def make(s: SmtpSettings) -> SmtpMailer:
        made.append(SmtpMailer(s))
        return made[-1]

    yield make
    for mailer in made:
        await mailer.aclose()


async def outcome(mailer: SmtpMailer, env: Envelope) -> str:
    try:
        return await mailer.send(env)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


FAULTS = [
    (
        "data-451-then-250",
        {"DATA": ["451 4.3.0 Try again later"]},
        [r"TransientDeliveryError: .*answered 451 4\.3\.0 Try again later to end of DATA", r"250 "],
        1,
    ),
    (
        "rcpt-451-greylisting",
        {"RCPT": ["451 4.7.1 Greylisted, try again in 5 minutes"]},
        [r"TransientDeliveryError: .*451 4\.7\.1 Greylisted.* to RCPT TO", r"250 "],
        1,
    ),
    (
        "rcpt-550",
        {"RCPT": ["550 5.1.1 <reader0@lab.example>: Recipient address rejected"]},
        [
            r"PermanentDeliveryError: .*550 5\.1\.1 <reader0@lab\.example>: Recipient address",
            r"250 ",
        ],
        1,
    ),
    (
        "data-554",
        {"DATA": ["554 5.7.1 Message rejected as spam"]},
        [r"PermanentDeliveryError: .*554 5\.7\.1 Message rejected as spam to end of DATA", r"250 "],
        1,
    ),
    (
        "mail-550-sender",
        {"MAIL": ["550 5.7.1 Sender not allowed"]},
        [r"PermanentDeliveryError: .*550 5\.7\.1 Sender not allowed to MAIL FROM", r"250 "],
        1,
    ),
    ("mail-421-reconnects", {"MAIL": ["421 4.3.2 Service shutting down"]}, [r"250 ", r"250 "], 2),
    ("data-end-421-reconnects", {"DATA": ["421 4.3.2 Closing"]}, [r"250 ", r"250 "], 2),
    (
        "rcpt-421-twice",
        {"RCPT": ["421 4.3.2 Busy", "421 4.3.2 Busy"]},
        [
            r"TransientDeliveryError: .*421 4\.3\.2 Busy to RCPT TO \(again after reconnecting\)",
            r"250 ",
        ],
        1,
    ),
    ("dropped-before-data-reconnects", {"MAIL": [DROP]}, [r"250 ", r"250 "], 2),
    (
        "drop-after-data",
        {"DATA": [DROP]},
        [r"AmbiguousDeliveryError: .*went away after the message was sent", r"250 "],
        2,
    ),
]


@pytest.mark.parametrize(
    ("script", "expected", "received"),
    [(s, e, r) for _, s, e, r in FAULTS],
    ids=[i for i, *_ in FAULTS],
)
async def test_fault_is_classified(
    smtp_server_factory: StartServer,
    mailers: Callable[[SmtpSettings], SmtpMailer],
    script: dict[str, list[str]],
    expected: list[str],
    received: int,
) -> None:
    server = smtp_server_factory(ScriptedHandler(script))
    mailer = mailers(settings(server))
    results = [await outcome(mailer, envelope(0)), await outcome(mailer, envelope(1))]
    for result, pattern in zip(results, expected, strict=True):
        assert re.match(pattern, result), result
    assert len(server.received) == received


async def test_reply_after_the_client_timeout_is_ambiguous(
    smtp_server_factory: StartServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    handler = ScriptedHandler({"DATA": [HANG]})
    server = smtp_server_factory(handler)
    mailer = mailers(settings(server, data_timeout=0.3))
    with pytest.raises(AmbiguousDeliveryError, match="SMTPReadTimeoutError"):
        await mailer.send(envelope(0))
    handler.release()  # the server's late "250" goes to a connection the client dropped
    assert len(server.received) == 1  # ...and the message did land: hence "ambiguous"
    assert (await mailer.send(envelope(1))).startswith("250")
    assert mailer.stats.ambiguous == 1


async def test_connection_refused_aborts_the_batch(
    closed_port: int, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(SmtpSettings(host="127.0.0.1", port=closed_port, security="none", timeout=5))
    with pytest.raises(
        BatchAbortedError, match=rf"cannot connect to SMTP 127\.0\.0\.1:{closed_port}"
    ):
        await mailer.send(envelope())


AUTH = [
    ("good-login", "digest", "s3cret", None),
    ("535-bad-password", "digest", "wrong", r"rejected the login of 'digest': 535"),
]


@pytest.mark.parametrize(
    ("user", "password", "match"), [(u, p, m) for _, u, p, m in AUTH], ids=[i for i, *_ in AUTH]
)
async def test_auth(
    smtp_server_factory: StartServer,
    mailers: Callable[[SmtpSettings], SmtpMailer],
    user: str,
    password: str,
    match: str | None,
) -> None:
    server = smtp_server_factory(
        authenticator=password_authenticator("digest", "s3cret"), auth_require_tls=False
    )
    mailer = mailers(settings(server, username=user, password=password))
    if match is None:
        assert (await mailer.send(envelope())).startswith("250")
        assert len(server.received) == 1
    else:
        with pytest.raises(BatchAbortedError, match=match):
            await mailer.send(envelope())
        assert server.received == []


TLS = [
    ("implicit-tls", "tls", True, None),
    ("starttls", "starttls", True, None),
    ("implicit-tls-untrusted-cert", "tls", False, r"TLS with SMTP 127\.0\.0\.1:\d+ failed"),
    ("starttls-untrusted-cert", "starttls", False, r"TLS with SMTP 127\.0\.0\.1:\d+ failed"),
]


@pytest.mark.parametrize(
    ("security", "trusted", "match"), [(s, t, m) for _, s, t, m in TLS], ids=[i for i, *_ in TLS]
)
async def test_tls(
    smtp_server_factory: StartServer,
    mailers: Callable[[SmtpSettings], SmtpMailer],
    tls_files: TlsFiles,
    security: str,
    trusted: bool,
    match: str | None,
) -> None:
    context = tls_files.server_context()
    server = smtp_server_factory(
        implicit_tls=context if security == "tls" else None,
        starttls=context if security == "starttls" else None,
        authenticator=password_authenticator("digest", "s3cret"),
        auth_require_tls=security == "starttls",  # aiosmtpd only knows about STARTTLS
    )
    mailer = mailers(
        settings(
            server,
            security=security,
            ca_file=tls_files.cert if trusted else None,
            username="digest",
            password="s3cret",
        )
    )
    if match is None:
        assert (await mailer.send(envelope())).startswith("250")
        assert len(server.received) == 1
    else:
        with pytest.raises(BatchAbortedError, match=match):
            await mailer.send(envelope())


async def test_starttls_required_but_not_offered_aborts(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server, security="starttls"))
    with pytest.raises(BatchAbortedError, match="STARTTLS"):
        await mailer.send(envelope())


async def test_connections_are_reused_and_capped(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server, pool_size=2, max_per_connection=3))
    for n in range(7):
        assert (await mailer.send(envelope(n))).startswith("250")
    assert mailer.stats.connections_opened == 3  # 3 + 3 + 1
    assert len(smtp_server.handler.peers) == 3
    assert mailer.stats.delivered == 7


async def test_concurrency_is_bounded_by_the_pool(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server, pool_size=3))
    replies = await asyncio.gather(*(mailer.send(envelope(n)) for n in range(30)))
    assert all(r.startswith("250") for r in replies)
    assert len(smtp_server.received) == 30
    assert mailer.stats.connections_opened <= 3
    assert sorted(r for _, r in [(e, e.rcpt_tos[0]) for e, _ in smtp_server.received]) == sorted(
        f"reader{n}@lab.example" for n in range(30)
    )


async def test_message_bytes_arrive_intact_with_dot_stuffing_and_crlf(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server))
    await mailer.send(envelope(0))
    lf_only = Envelope(
        "digest@lab.example", "x@lab.example", BODY.replace(b"\r\n", b"\n"), "<lf@x>"
    )
    await mailer.send(lf_only)
    assert [data for _, data in smtp_server.received] == [BODY, BODY]
    assert smtp_server.received[0][0].mail_from == "digest@lab.example"


async def test_idn_recipient_is_sent_as_punycode_and_bad_ones_fail_alone(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server))
    await mailer.send(envelope(recipient="zoe@bücher.example"))
    assert smtp_server.received[0][0].rcpt_tos == ("zoe@xn--bcher-kva.example",)
    with pytest.raises(PermanentDeliveryError, match="envelope recipient"):
        await mailer.send(envelope(recipient="x@lab.example\r\nRCPT TO:<y@evil.example>"))
    assert (await mailer.send(envelope(2))).startswith("250")


async def test_closed_mailer_refuses_to_send(
    smtp_server: RunningServer, mailers: Callable[[SmtpSettings], SmtpMailer]
) -> None:
    mailer = mailers(settings(smtp_server))
    await mailer.send(envelope())
    await mailer.aclose()
    with pytest.raises(BatchAbortedError, match="is closed"):
        await mailer.send(envelope())


async def test_rate_limit_asks_for_evenly_spaced_slots(
    smtp_server: RunningServer,
    mailers: Callable[[SmtpSettings], SmtpMailer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requested: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, result: object = None) -> object:
        if delay > 0:
            requested.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", record)
    monkeypatch.setattr("pipeline.mail.smtp.time", SimpleNamespace(monotonic=lambda: 100.0))
    mailer = mailers(settings(smtp_server, rate_per_second=50, pool_size=2))
    await asyncio.gather(*(mailer.send(envelope(n)) for n in range(6)))
    assert len(smtp_server.received) == 6
    # A frozen clock: the first message goes at once, the others get slots 20 ms apart.
    assert requested == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.10])


SETTINGS_ERRORS = [
    (
        "none-remote",
        {"host": "smtp.example.com", "security": "none"},
        "only allowed to a loopback host",
    ),
    ("bad-security", {"host": "127.0.0.1", "security": "ssl"}, "must be tls, starttls or none"),
    ("pool-zero", {"host": "127.0.0.1", "pool_size": 0}, "at least 1"),
    ("user-without-password", {"host": "127.0.0.1", "username": "u"}, "go together"),
]


@pytest.mark.parametrize(
    ("values", "match"),
    [(v, m) for _, v, m in SETTINGS_ERRORS],
    ids=[i for i, *_ in SETTINGS_ERRORS],
)
def test_settings_are_validated(values: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmtpSettings(**values)


def test_settings_allow_plain_to_loopback_names() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.53"):
        assert SmtpSettings(host=host, security="none").security == "none"
    assert "password" not in repr(SmtpSettings(host="h", username="u", password="p"))


PACING = [
    ("unlimited", None, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    ("ten-per-second-burst", 10.0, [0.0, 0.0, 0.0], [0.0, 0.1, 0.2]),
    ("ten-per-second-spaced", 10.0, [0.0, 0.5, 0.55], [0.0, 0.0, 0.05]),
]


@pytest.mark.parametrize(
    ("rate", "clock", "delays"), [(r, c, d) for _, r, c, d in PACING], ids=[i for i, *_ in PACING]
)
def test_pacer(rate: float | None, clock: list[float], delays: list[float]) -> None:
    times = iter(clock)
    pacer = Pacer(rate, lambda: next(times))
    assert [pytest.approx(pacer.reserve()) for _ in clock] == delays


def test_pacer_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Pacer(0, lambda: 0.0)


def _payload_by_lines(data: bytes) -> bytes:
    """The DATA payload the plain way: CRLF everywhere, a dot doubled at a line start, '.'."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text.split(b"\r\n")[:-1]
    return b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
    ) + (b".\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b".",
        b"a\r\n",
        b"a\r\n.b\r\n",
        b".a\r\nb\r\n",
        b"a\nb\r\n",
        b"a\rb\r\n",
        b"a\r\nb",
        b"\na\r\n",
        b"a\r\n\r\n.\r\n",
        BODY,
    ],
    ids=[
        "empty",
        "dot",
        "one-line",
        "dot-line",
        "leading-dot",
        "bare-lf",
        "bare-cr",
        "no-final-crlf",
        "leading-lf",
        "lone-dot-line",
        "body",
    ],
)
def test_data_payload(data: bytes) -> None:
    assert data_payload(data) == _payload_by_lines(data)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\r\n."])).map(b"".join))
def test_data_payload_matches_the_plain_way(data: bytes) -> None:
    assert data_payload(data) == _payload_by_lines(data)
