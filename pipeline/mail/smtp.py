"""SMTP transport over aiosmtplib: a small pool of reused connections.

Delivery semantics (what each outcome means to the outbox):

- ``send`` returns the server's reply to the final ``.`` ("250 ...").
- 4xx from MAIL, RCPT, DATA or the final ``.`` -> :class:`TransientDeliveryError`;
  the envelope is reset with RSET and the connection is reused.
- 421 (the server is closing the connection) or a connection found dropped
  *before* the final ``.`` -> one reconnect and one retry on a fresh connection
  (the server cannot have accepted anything yet); if that fails too ->
  :class:`TransientDeliveryError`. A read timeout before the ``.`` is transient
  at once (retrying would just wait again).
- 5xx -> :class:`PermanentDeliveryError`, carrying the server's reply.
- Failures while connecting (refused, unreachable, TLS handshake or
  certificate, STARTTLS missing, AUTH rejected with 535 or 454) ->
  :class:`BatchAbortedError`: nothing in the batch can be sent.
- Disconnect or timeout after the final ``.`` was written ->
  :class:`AmbiguousDeliveryError`: the server may have accepted the message.

The ``commit`` callback of :meth:`SmtpMailer.send` (the outbox's ``sending``
mark) is awaited after the 354 reply to DATA, just before the message and its
final ``.`` are written: everything before (a pool slot, the pacer, connecting,
EHLO, MAIL, RCPT) cannot deliver anything. If it returns False the connection
is closed without the final ``.`` (the server discards the unfinished message)
and :class:`ClaimLostError` is raised. The reconnect-and-retry path does not
call it again.

The DATA command is driven step by step (rather than with aiosmtplib's
``data()``) precisely so that a failure before the terminating ``.`` can be
told apart from one after it. The wait for the reply to the ``.`` uses its own
timeout, by default the 10 minutes RFC 5321 section 4.5.3.2.6 asks for.

Four round trips per message (MAIL, RCPT, DATA, the message), through
aiosmtplib's public API: ``mail()``, ``rcpt()``, ``execute_command(b"DATA")``,
then the client's protocol ``write`` and ``read_response`` for the message and
its final ``.``. PIPELINING (RFC 2920) would save two of them, but aiosmtplib's
protocol pairs one buffered reply with one read and drops data that arrives
while no read is pending, so it cannot be done without reaching into its
internals.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import aiosmtplib

from pipeline.domain import Commit, Envelope
from pipeline.errors import (
    AmbiguousDeliveryError,
    BatchAbortedError,
    ClaimLostError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from pipeline.mail.headers import envelope_addresses
from pipeline.mail.pacing import Pacer

__all__ = ["SmtpMailer", "SmtpSettings", "SmtpStats"]

Security = Literal["tls", "starttls", "none"]
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the SMTP server and how hard to push it.

    ``timeout`` bounds every step but one (connect, greeting, TLS, EHLO, AUTH,
    MAIL, RCPT, DATA); ``data_timeout`` bounds the wait for the reply to the
    final ``.`` (RFC 5321 recommends 10 minutes: the server may be scanning).
    ``security="none"`` is refused unless ``host`` is a loopback address.
    """

    host: str
    port: int = 587
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    data_timeout: float = 600.0
    pool_size: int = 4
    rate_per_second: float | None = None
    max_per_connection: int = 100
    helo_name: str | None = None
    ca_file: Path | None = None
    validate_certs: bool = True

    def __post_init__(self) -> None:
        if self.security not in ("tls", "starttls", "none"):
            raise ValueError(f"SMTP security must be tls, starttls or none, not {self.security!r}")
        if self.security == "none" and not _is_loopback(self.host):
            raise ValueError(
                f"SMTP security 'none' is only allowed to a loopback host, not {self.host!r}"
            )
        if self.pool_size < 1 or self.max_per_connection < 1:
            raise ValueError("SMTP pool_size and max_per_connection must be at least 1")
        if self.timeout <= 0 or self.data_timeout <= 0:
            raise ValueError("SMTP timeouts must be positive")
        if (self.username is None) != (self.password is None):
            raise ValueError("SMTP username and password go together")

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class SmtpStats:
    """Counters for status output and the benchmark."""

    connections_opened: int = 0
    reconnects: int = 0
    delivered: int = 0
    transient: int = 0
    permanent: int = 0
    ambiguous: int = 0


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    sent: int = 0


class _Reconnect(Exception):
    """421 or a dropped connection before the final '.': safe to retry on a new connection."""


class _Once:
    """The caller's commit callback, awaited at most once per send (not again on a retry)."""

    def __init__(self, commit: Commit | None) -> None:
        self._commit = commit
        self.done = commit is None

    async def __call__(self) -> bool:
        if self.done or self._commit is None:
            return True
        self.done = True
        return await self._commit()


class SmtpMailer:
    """A :class:`pipeline.domain.Mailer` that sends through one SMTP server."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._pacer = Pacer(settings.rate_per_second, time.monotonic)
        self._closed = False
        self.stats = SmtpStats()

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        """Send one message; return the server's reply to the final '.'.

        ``commit`` is awaited once, after the 354 reply to DATA and before the message is
        written (see the module docstring); False closes the connection and raises
        :class:`ClaimLostError`.
        """
        if self._closed:
            raise BatchAbortedError(f"SMTP mailer for {self._settings.server} is closed")
        # A bad address fails this message only, before any I/O.
        addresses = envelope_addresses(envelope)
        payload = data_payload(envelope.data)
        once = _Once(commit)
        async with self._slots:
            delay = self._pacer.reserve()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = self._idle.pop() if self._idle else None
            for attempt in (1, 2):
                if conn is None:
                    conn = await self._connect(retrying=attempt > 1)
                try:
                    reply = await self._transaction(conn, envelope, addresses, payload, once)
                except _Reconnect as exc:
                    self._discard(conn)
                    conn = None
                    if attempt == 2:
                        self.stats.transient += 1
                        raise TransientDeliveryError(
                            f"{exc} (again after reconnecting); retry later"
                        ) from exc
                    self.stats.reconnects += 1
                    continue
                except (TransientDeliveryError, PermanentDeliveryError) as exc:
                    self._count(exc)
                    await self._release(conn)
                    raise
                except AmbiguousDeliveryError:
                    self.stats.ambiguous += 1
                    self._discard(conn)
                    raise
                except BaseException:
                    self._discard(conn)
                    raise
                conn.sent += 1
                self.stats.delivered += 1
                await self._release(conn)
                return reply
        raise AssertionError("unreachable: the retry loop always returns or raises")

    async def aclose(self) -> None:
        """Refuse new sends and QUIT every idle connection."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    async def _connect(self, *, retrying: bool) -> _Connection:
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            local_hostname=s.helo_name,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            validate_certs=s.validate_certs,
            cert_bundle=str(s.ca_file) if s.ca_file is not None else None,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise BatchAbortedError(
                f"SMTP {s.server} rejected the login of {s.username!r}: {exc.code} {exc.message}; "
                f"check the SMTP username and password"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if retrying and 400 <= exc.code < 500:
                raise TransientDeliveryError(
                    f"SMTP {s.server} answered {exc.code} {exc.message} on reconnect; retry later"
                ) from exc
            raise BatchAbortedError(
                f"SMTP {s.server} refused the session: {exc.code} {exc.message}"
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if _is_tls_failure(exc):
                raise BatchAbortedError(
                    f"TLS with SMTP {s.server} failed ({exc}); check security, port and CA file"
                ) from exc
            if retrying and not isinstance(exc, aiosmtplib.SMTPNotSupported):
                raise TransientDeliveryError(
                    f"SMTP {s.server} could not be reached on reconnect ({exc}); retry later"
                ) from exc
            raise BatchAbortedError(f"cannot connect to SMTP {s.server}: {exc}") from exc
        try:
            await _greet(client)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            if retrying:
                raise TransientDeliveryError(
                    f"SMTP {s.server} failed EHLO and HELO on reconnect ({exc}); retry later"
                ) from exc
            raise BatchAbortedError(f"SMTP {s.server} refused EHLO and HELO: {exc}") from exc
        self.stats.connections_opened += 1
        return _Connection(client)

    async def _transaction(
        self,
        conn: _Connection,
        envelope: Envelope,
        addresses: tuple[str, str],
        payload: bytes,
        commit: _Once,
    ) -> str:
        client = conn.client
        who = _who(envelope)
        sender, recipient = addresses
        # SIZE (RFC 1870) counts the message as sent, without the terminating ".\r\n".
        options = [f"SIZE={len(payload) - 3}"] if client.supports_extension("size") else []
        try:
            await client.mail(sender, options=options)
            await client.rcpt(recipient)
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reject(conn, exc, who, step=_step(exc))
        except aiosmtplib.SMTPTimeoutError as exc:
            raise TransientDeliveryError(f"{who}: SMTP {self._settings.server} timed out") from exc
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _Reconnect(f"{who}: connection to SMTP {self._settings.server} lost") from exc
        protocol = client.protocol
        if protocol is None:
            raise _Reconnect(f"{who}: connection to SMTP {self._settings.server} lost")
        try:
            go_ahead = await commit()
        except BaseException:
            client.close()  # never leave a connection in DATA mode behind
            raise
        if not go_ahead:
            # Past 354: closing without the final "." makes the server discard the message.
            client.close()
            raise ClaimLostError(f"{who}: no longer claimed by this sender; not sent")
        try:
            protocol.write(payload)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _Reconnect(f"{who}: connection to SMTP {self._settings.server} lost") from exc
        try:
            reply = await protocol.read_response(timeout=self._settings.data_timeout)
        except (aiosmtplib.SMTPException, ConnectionError, TimeoutError) as exc:
            client.close()
            raise AmbiguousDeliveryError(
                f"{who}: SMTP {self._settings.server} went away after the message was sent "
                f"({exc.__class__.__name__}); it may or may not have been accepted"
            ) from exc
        if reply.code != 250:
            if reply.code == 421:
                client.close()
            await self._reject(
                conn, aiosmtplib.SMTPDataError(reply.code, reply.message), who, step="end of DATA"
            )
        return f"{reply.code} {reply.message}"

    async def _reject(
        self, conn: _Connection, exc: aiosmtplib.SMTPResponseException, who: str, *, step: str
    ) -> NoReturn:
        detail = f"{who}: SMTP {self._settings.server} answered {exc.code} {exc.message} to {step}"
        if exc.code == 421:
            raise _Reconnect(detail) from exc
        if conn.client.is_connected:
            try:
                await conn.client.rset()
            except (aiosmtplib.SMTPException, OSError):
                conn.client.close()
        if 400 <= exc.code < 500:
            raise TransientDeliveryError(f"{detail}; retry later") from exc
        raise PermanentDeliveryError(detail) from exc

    async def _release(self, conn: _Connection) -> None:
        if not conn.client.is_connected:
            return
        if self._closed or conn.sent >= self._settings.max_per_connection:
            await self._quit(conn)
        else:
            self._idle.append(conn)

    async def _quit(self, conn: _Connection) -> None:
        try:
            await conn.client.quit()
        except (aiosmtplib.SMTPException, OSError):
            conn.client.close()

    def _discard(self, conn: _Connection) -> None:
        conn.client.close()

    def _count(self, exc: Exception) -> None:
        if isinstance(exc, TransientDeliveryError):
            self.stats.transient += 1
        else:
            self.stats.permanent += 1


_LINE_END = re.compile(rb"\r\n|\r|\n")


def data_payload(data: bytes) -> bytes:
    """CRLF line endings, dot-stuffed (RFC 5321 4.5.2), terminated by '.'.

    Messages from :func:`pipeline.mail.build_message` already have CRLF line
    endings and no line starting with '.', and pass through unchanged; anything
    else is normalised.
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_END.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if refused) right after connecting, so that SIZE is known for the first MAIL."""
    if not client.is_ehlo_or_helo_needed:
        return
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


def _step(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "MAIL FROM"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return "RCPT TO"
    return "DATA"


def _who(envelope: Envelope) -> str:
    return f"message {envelope.message_id} to {envelope.recipient}"


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        if "tls" in str(seen).lower() and isinstance(seen, aiosmtplib.SMTPException):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
