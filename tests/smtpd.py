"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, port 0, in its own thread.

``RecordingHandler`` keeps every accepted message as ``(ReceivedEnvelope, bytes)``.
``ScriptedHandler`` injects faults: for each SMTP step (MAIL, RCPT, DATA) a
queue of actions, consumed one per command; when a queue is empty the step
behaves normally. An action is a reply line ("451 4.7.1 Greylisted"), or
``DROP`` (close the connection without replying; at DATA the message is
recorded first, as a server that crashed after storing it would), or
``HANG`` (record the message, then reply "250" only once the test calls
``release()``: the reply arrives after the client gave up).

The server runs in a thread with its own event loop, so sync tests (CLI,
``asyncio.run``) and async tests can both use it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

DROP = "DROP"
HANG = "HANG"


@dataclass(frozen=True)
class ReceivedEnvelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]


class RecordingHandler:
    """Accept everything and remember it."""

    def __init__(self) -> None:
        self.received: list[tuple[ReceivedEnvelope, bytes]] = []
        self.commands: list[str] = []  # "MAIL", "RCPT", "DATA", in arrival order
        self.peers: set[object] = set()  # client (host, port) of every session that sent MAIL
        self._lock = threading.Lock()

    def record(self, envelope: Envelope) -> None:
        data = envelope.original_content
        assert isinstance(data, bytes)
        with self._lock:
            self.received.append(
                (ReceivedEnvelope(str(envelope.mail_from), tuple(envelope.rcpt_tos)), data)
            )

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("MAIL")
        self.peers.add(session.peer)
        return MISSING

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("RCPT")
        return MISSING

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("DATA")
        self.record(envelope)
        return f"250 2.0.0 Ok: queued as {len(self.received)}"


class ScriptedHandler(RecordingHandler):
    """Replay scripted faults per step, then behave like ``RecordingHandler``."""

    def __init__(self, script: Mapping[str, Iterable[str]]) -> None:
        super().__init__()
        unknown = set(script) - {"MAIL", "RCPT", "DATA"}
        assert not unknown, f"unknown steps {unknown}"
        self.script = {step: deque(actions) for step, actions in script.items()}
        self._released = threading.Event()

    def release(self) -> None:
        """Let every HANG action reply now."""
        self._released.set()

    def _next(self, step: str) -> str | None:
        queue = self.script.get(step)
        return queue.popleft() if queue else None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("MAIL")
        self.peers.add(session.peer)
        return self._reply_or_default(server, self._next("MAIL"))

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("RCPT")
        action = self._next("RCPT")
        if action is None:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return self._reply_or_default(server, action)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("DATA")
        action = self._next("DATA")
        if action is None:
            self.record(envelope)
            return f"250 2.0.0 Ok: queued as {len(self.received)}"
        if action == DROP:
            self.record(envelope)
            _close(server)
            return "250 2.0.0 never seen by the client"
        if action == HANG:
            self.record(envelope)
            await asyncio.get_running_loop().run_in_executor(None, self._released.wait)
            return "250 2.0.0 accepted too late"
        return action

    def _reply_or_default(self, server: SMTP, action: str | None) -> Any:
        if action is None:
            return MISSING
        if action == DROP:
            _close(server)
            return "250 never seen by the client"
        if action.startswith("421"):
            # A 421 reply is followed by the server closing the channel (RFC 5321 3.8).
            asyncio.get_running_loop().call_soon(_close, server)
        return action


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


@dataclass
class RunningServer:
    """What the ``smtp_server`` fixtures yield."""

    host: str
    port: int
    handler: RecordingHandler
    received: list[tuple[ReceivedEnvelope, bytes]] = field(default_factory=list)


class SmtpServerThread:
    """aiosmtpd bound to 127.0.0.1:0 in a background thread."""

    def __init__(
        self,
        handler: RecordingHandler,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        authenticator: Callable[..., AuthResult] | None = None,
        auth_require_tls: bool = True,
        smtp_class: type[SMTP] = SMTP,
    ) -> None:
        self.handler = handler
        self._implicit_tls = implicit_tls
        self._smtp_class = smtp_class
        self._smtp_kwargs: dict[str, Any] = {
            "hostname": "smtp.test",
            "tls_context": starttls,
            "require_starttls": starttls is not None,
            "authenticator": authenticator,
            "auth_require_tls": auth_require_tls,
            "auth_required": authenticator is not None,
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    def start(self) -> RunningServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=30)
        return RunningServer("127.0.0.1", self.port, self.handler, self.handler.received)

    async def _start(self) -> int:
        self._server = await self._loop.create_server(
            lambda: self._smtp_class(self.handler, **self._smtp_kwargs),
            host="127.0.0.1",
            port=0,
            ssl=self._implicit_tls,
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        if isinstance(self.handler, ScriptedHandler):
            self.handler.release()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def password_authenticator(username: str, password: str) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting exactly one login (535 otherwise)."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == username.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate
