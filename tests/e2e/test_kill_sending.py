"""No digest lost when a sender dies: a sender killed (SIGKILL) or stopped (SIGTERM) while
it waits for the server before DATA leaves nothing ambiguous, and a restart sends every
digest exactly once; the claims of a dead process of this host come back at once.

Real processes (``paperpost run --once``, ``paperpost daemon``), a real aiosmtpd, a SQLite
file. The control: killed after the final "." went out, the digest *is* ambiguous.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from pipeline.app import run_once
from pipeline.config import Config, load_config
from pipeline.store import Store
from tests.conftest import SAMPLE_SOURCES, ConfigFactory
from tests.conftest_smtp import StartServer
from tests.daemon_harness import ENV, DaemonProcess, write_daemon_config
from tests.factories import MONDAY_NOON as NOW  # no reader's midnight within minutes
from tests.smtpd import HANG, RecordingHandler, ScriptedHandler

pytestmark = pytest.mark.slow

WAIT = 120.0  # seconds: a safety net against hangs, never a timing assertion
SECRET = {"PAPERPOST_TEST_SECRET": "test-secret-0123456789abcdef"}
RECIPIENTS = tuple(f"reader{n}@lab.example" for n in range(10))
READERS = "".join(
    f"""
[[subscribers]]
email = "{email}"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR ti:"preference optimization" OR abs:"reward model" OR ti:agent*'
"""
    for email in RECIPIENTS
)
CONCURRENCY = 4  # sending tasks, and the SMTP pool's default four connections


class HeldAtRcpt(RecordingHandler):
    """A server that answers RCPT only once ``open()`` is called: every sender's exchange
    is stuck before DATA, where no message can have been accepted."""

    def __init__(self) -> None:
        super().__init__()
        self._open = threading.Event()
        self._changed = threading.Condition()
        self.held = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("RCPT")
        if not self._open.is_set():
            with self._changed:
                self.held += 1
                self._changed.notify_all()
            await asyncio.get_running_loop().run_in_executor(None, self._open.wait)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def wait_held(self, n: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= n, WAIT)

    def open(self) -> None:
        self._open.set()


class HangsAfterTheDot(ScriptedHandler):
    """Takes the first message (the final "." arrived), then never answers it until
    ``release()``; ``hung`` is set once it has the message."""

    def __init__(self) -> None:
        super().__init__({"DATA": [HANG]})
        self.hung = threading.Event()

    def record(self, envelope: Envelope) -> None:
        super().record(envelope)
        self.hung.set()


def smtp_mail(port: int, *, concurrency: int = CONCURRENCY, extra: str = "") -> str:
    return (
        f"concurrency = {concurrency}\n{extra}\n"
        f'[mail.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )


def run_once_process(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "-c", str(path), "run", "--once"],
        env={**os.environ, **SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        return "(still running)"
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def counts(config: Config) -> dict[str, int]:
    store = Store.open(config.database_url)
    try:
        return store.outbox_counts()
    finally:
        store.close()


def restart(config: Config) -> tuple[int, int]:
    """A new run now, in this process (another pid): (sent, ambiguous)."""
    report = asyncio.run(run_once(config))
    assert report.deliver.aborted is None
    return report.deliver.sent, report.deliver.ambiguous


def recipients(received: list[tuple[Any, bytes]]) -> Counter[str]:
    return Counter(envelope.rcpt_tos[0] for envelope, _ in received)


def test_sigkill_while_waiting_for_the_server_loses_nothing(
    write_config: ConfigFactory, smtp_server_factory: StartServer
) -> None:
    handler = HeldAtRcpt()
    server = smtp_server_factory(handler)
    path = write_config(transport="smtp", mail_extra=smtp_mail(server.port), subscribers=READERS)
    proc = run_once_process(path)
    try:
        # Every sending task is inside the SMTP exchange, stuck at RCPT; the rest wait.
        assert handler.wait_held(CONCURRENCY), stderr_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        handler.open()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL
    config = load_config(path, env=SECRET)
    # Nothing reached DATA: every row is still only claimed (by a dead process), none
    # "sending", so none can turn ambiguous.
    assert counts(config) == {"claimed": len(RECIPIENTS)}
    assert server.received == []
    # The restart does not wait for the stale-claim limit: the claimer is dead.
    assert restart(config) == (len(RECIPIENTS), 0)
    assert counts(config) == {"sent": len(RECIPIENTS)}
    assert recipients(server.received) == Counter(RECIPIENTS)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def test_sigterm_past_the_grace_period_gives_every_claimed_row_back(
    tmp_path: Path, smtp_server_factory: StartServer, daemons: list[DaemonProcess]
) -> None:
    handler = HeldAtRcpt()
    server = smtp_server_factory(handler)
    db_url = f"sqlite:///{tmp_path / 'paperpost.db'}"
    path, _ = write_daemon_config(
        tmp_path, db_url=db_url, smtp_port=server.port, sources=SAMPLE_SOURCES, subscribers=READERS
    )
    text = path.read_text(encoding="utf-8")
    assert "concurrency = 1\n" in text
    path.write_text(text.replace("concurrency = 1\n", f"concurrency = {CONCURRENCY}\n"))
    daemon = DaemonProcess(path, grace=1)
    daemons.append(daemon)
    try:
        daemon.wait_for("started: web on")
        assert handler.wait_held(CONCURRENCY), daemon.log()
        daemon.send(signal.SIGTERM)
        # The grace period runs out with every send still stuck: they are cancelled.
        assert daemon.wait() == 0, daemon.log()
    finally:
        handler.open()
    assert "in-flight work cancelled after the grace period" in daemon.log()
    config = load_config(path, env=ENV)
    # Given back on the way out: nothing left claimed (nor "sending": nothing reached DATA).
    assert counts(config) == {"pending": len(RECIPIENTS)}
    assert server.received == []
    assert restart(config) == (len(RECIPIENTS), 0)
    assert counts(config) == {"sent": len(RECIPIENTS)}
    assert recipients(server.received) == Counter(RECIPIENTS)


def test_control_sigkill_after_the_final_dot_is_ambiguous_and_not_resent(
    write_config: ConfigFactory, smtp_server_factory: StartServer
) -> None:
    handler = HangsAfterTheDot()
    server = smtp_server_factory(handler)
    mail = smtp_mail(server.port, concurrency=1)
    path = write_config(transport="smtp", mail_extra=mail, subscribers=READERS)
    proc = run_once_process(path)
    try:
        assert handler.hung.wait(timeout=WAIT), stderr_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        handler.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL
    config = load_config(path, env=SECRET)
    assert counts(config) == {"sending": 1, "claimed": len(RECIPIENTS) - 1}
    # The server has that message; under the default at-most-once policy it is ambiguous
    # at once (its sender is dead) and not sent again.
    assert restart(config) == (len(RECIPIENTS) - 1, 1)
    assert counts(config) == {"sent": len(RECIPIENTS) - 1, "ambiguous": 1}
    assert recipients(server.received) == Counter(RECIPIENTS)


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=WAIT)


def planned_and_pending(write_config: ConfigFactory, closed_port: int) -> Store:
    """Three digests planned and pending: a first run whose server refuses connections."""
    refused = load_config(
        write_config(transport="smtp", mail_extra=smtp_mail(closed_port), name="refused.toml")
    )
    report = asyncio.run(run_once(refused, clock=lambda: NOW))
    assert report.deliver.aborted is not None
    store = Store.open(refused.database_url)
    assert store.outbox_counts() == {"pending": 3}
    return store


def test_claims_of_a_dead_process_of_this_host_come_back_at_once(
    write_config: ConfigFactory,
    smtp_server_factory: StartServer,
    closed_port: int,
    live_process: subprocess.Popen[bytes],
) -> None:
    server = smtp_server_factory()
    store = planned_and_pending(write_config, closed_port)
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(timeout=WAIT)
        host = socket.gethostname()
        [dead_claim] = store.claim(limit=1, holder=f"{host}:{gone.pid}", now=NOW)
        [live_claim] = store.claim(limit=1, holder=f"{host}:{live_process.pid}", now=NOW)
        config = load_config(
            write_config(transport="smtp", mail_extra=smtp_mail(server.port), name="ok.toml")
        )
        report = asyncio.run(run_once(config, store=store, clock=lambda: NOW))
        # Minutes before the stale-claim limit: the dead process's claim was sent with the
        # pending row; the live process's claim is its own business.
        assert (report.deliver.sent, report.deliver.ambiguous) == (2, 0)
        assert store.load_delivery(dead_claim).status == "sent"
        assert store.load_delivery(live_claim).status == "claimed"
        assert store.outbox_counts() == {"sent": 2, "claimed": 1}
        assert len(server.received) == 2
    finally:
        store.close()


def test_stale_claim_minutes_is_the_limit_for_other_claims(
    write_config: ConfigFactory, smtp_server_factory: StartServer, closed_port: int
) -> None:
    server = smtp_server_factory()
    store = planned_and_pending(write_config, closed_port)
    try:
        [elsewhere] = store.claim(limit=1, holder="other-host:4242", now=NOW)
        path = write_config(
            transport="smtp",
            mail_extra=smtp_mail(server.port, extra="stale_claim_minutes = 2"),
            name="ok.toml",
        )
        config = load_config(path)
        assert config.file.mail.stale_claim_minutes == 2
        soon = asyncio.run(run_once(config, store=store, clock=lambda: NOW + timedelta(minutes=1)))
        assert soon.deliver.sent == 2
        assert store.load_delivery(elsewhere).status == "claimed"  # maybe still at work
        later = asyncio.run(run_once(config, store=store, clock=lambda: NOW + timedelta(minutes=3)))
        assert later.deliver.sent == 1
        assert store.outbox_counts() == {"sent": 3}
        assert len(server.received) == 3
    finally:
        store.close()
