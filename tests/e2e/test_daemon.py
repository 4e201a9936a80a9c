"""`paperpost daemon` as a real process: real aiosmtpd, SQLite file or PostgreSQL, signals."""

from __future__ import annotations

import email
import hashlib
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeSerializer

from pipeline.cli import main
from pipeline.daemon import default_pid_file, signal_reload
from pipeline.errors import ConfigError
from pipeline.store import Store
from tests.conftest import SAMPLE_SOURCES
from tests.daemon_harness import (
    ADMIN,
    NEW_SECRET,
    RECIPIENTS,
    SUBSCRIBERS,
    CountingHandler,
    DaemonProcess,
    HangOnSecondHandler,
    sample_daemon_config,
    write_daemon_config,
)

pytestmark = pytest.mark.slow


StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon() -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(config: Path, **kwargs: float) -> DaemonProcess:
        daemon = DaemonProcess(config, **kwargs)
        started.append(daemon)
        daemon.wait_for("started: web on")
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def message_to(received: list[tuple[object, bytes]], address: str) -> Message:
    for _, data in received:
        message = email.message_from_bytes(data)
        if address in str(message["To"]):
            return message
    raise AssertionError(f"no message to {address}")


def link_path(message: Message, kind: str) -> str:
    """The path of the first http link to /``kind``/ in the headers or the HTML part (a
    feedback link's whole path: token, position and signal)."""
    texts = [str(message.get("List-Unsubscribe", ""))]
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            texts.append(payload.decode(part.get_content_charset() or "utf-8"))
    for text in texts:
        found = re.search(rf"https?://[^/\s\"'<>]+(/{kind}/[A-Za-z0-9._~/-]+)", text)
        if found:
            return found.group(1)
    raise AssertionError(f"no /{kind}/ link in the message")


def test_daemon_sends_serves_links_and_drains_on_sigterm(
    tmp_path: Path, smtp_server_factory: Callable[..., object], start_daemon: StartDaemon
) -> None:
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    config, port, db_url = sample_daemon_config(tmp_path, server.port)  # type: ignore[attr-defined]
    daemon = start_daemon(config)
    assert default_pid_file(config).read_text().strip() == str(daemon.proc.pid)
    assert handler.wait_for(3), daemon.log()
    daemon.wait_for("3 sent")
    assert Counter(e.rcpt_tos[0] for e, _ in handler.received) == Counter(RECIPIENTS)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
        health = web.get("/healthz")
        assert health.status_code == 200, daemon.log()
        assert health.json()["scheduler_lease"] is True
        assert health.json()["outbox"] == {"sent": 3}
        ada = message_to(handler.received, "ada@lab.example")
        unsubscribe = web.post(
            link_path(ada, "unsubscribe"), data={"List-Unsubscribe": "One-Click"}
        )
        assert unsubscribe.status_code == 200
        assert "You are unsubscribed" in unsubscribe.text
        metrics = web.get("/metrics").text
        assert "paperpost_digests_sent_total 3\n" in metrics
        assert 'paperpost_outbox{state="sent"} 3\n' in metrics
        preview = web.get("/preview/zoe@lab.example", params={"token": ADMIN})
        assert preview.status_code == 200
        assert "<html" in preview.text.lower()
        assert web.get("/preview/zoe@lab.example", params={"token": "wrong"}).status_code == 403

    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    assert "stopped (drained)" in daemon.log()
    assert not default_pid_file(config).exists()
    store = Store.open(db_url)
    try:
        state = store.subscriber_state("ada@lab.example")
        assert state is not None and state.status == "unsubscribed"
        assert store.lease_holder("scheduler", now=datetime.now(UTC)) is None  # released
    finally:
        store.close()


@pytest.mark.parametrize(
    ("backend", "stop"),
    [("sqlite", signal.SIGTERM), ("postgres", signal.SIGTERM), ("sqlite", signal.SIGKILL)],
    ids=["sqlite-clean-stop-releases", "postgres-clean-stop-releases", "sqlite-killed-expires"],
)
def test_two_daemons_on_one_database_send_each_digest_once(
    tmp_path: Path,
    backend: str,
    stop: signal.Signals,
    request: pytest.FixtureRequest,
    smtp_server_factory: Callable[..., object],
    start_daemon: StartDaemon,
) -> None:
    if backend == "postgres":
        db_url: str = request.getfixturevalue("pg_url")
        Store.open(db_url, auto_upgrade=True).close()
    else:
        db_url = f"sqlite:///{tmp_path / 'shared.db'}"
        Store.open(db_url).close()
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    configs = [
        write_daemon_config(
            tmp_path / name,
            db_url=db_url,
            smtp_port=server.port,  # type: ignore[attr-defined]
            sources=SAMPLE_SOURCES,
            subscribers=SUBSCRIBERS,
        )[0]
        for name in ("first", "second")
    ]
    first = start_daemon(configs[0])
    first.wait_for("holds the scheduler lease")
    second = start_daemon(configs[1])
    second.wait_for("another instance (")  # logs who holds the lease, stands by
    assert handler.wait_for(3), first.log()
    first.wait_for("3 sent")

    mark = second.mark()
    first.send(stop)
    assert first.wait() == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
    # Released by a clean stop: taken at the next renewal; a killed holder's lease expires.
    second.wait_for("holds the scheduler lease; running jobs", after=mark)
    second.wait_for("dispatch tick by", after=mark)  # the take-over dispatched at once
    assert Counter(e.rcpt_tos[0] for e, _ in handler.received) == Counter(RECIPIENTS)
    second.send(signal.SIGTERM)
    assert second.wait() == 0
    store = Store.open(db_url)
    try:
        assert store.outbox_counts() == {"sent": 3}
    finally:
        store.close()


def test_two_daemons_started_together_on_a_fresh_postgres_schema_both_stay_up(
    tmp_path: Path,
    pg_url: str,
    smtp_server_factory: Callable[..., object],
    start_daemon: StartDaemon,
) -> None:
    """Both sync the config into an empty schema at the same moment. Before, one of them
    died with UniqueViolation uq_subscribers_email (the sync had no conflict handling)."""
    Store.open(pg_url, auto_upgrade=True).close()
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    many = SUBSCRIBERS + "".join(
        f'\n[[subscribers]]\nemail = "reader{n}@lab.example"\nsend_at = "00:00"\n'
        'on_empty = "send"\n'
        for n in range(60)
    )
    recipients = [*RECIPIENTS, *(f"reader{n}@lab.example" for n in range(60))]
    configs = [
        write_daemon_config(
            tmp_path / name,
            db_url=pg_url,
            smtp_port=server.port,  # type: ignore[attr-defined]
            sources=SAMPLE_SOURCES,
            subscribers=many,
        )[0]
        for name in ("first", "second")
    ]
    daemons = [start_daemon(c) for c in configs]  # no wait in between
    for daemon in daemons:
        daemon.wait_for("daemon ")  # "daemon <holder> started: ..."
    assert handler.wait_for(len(recipients)), daemons[0].log() + daemons[1].log()
    holder = next(d for d in daemons if "holding the scheduler lease" in d.log())
    holder.wait_for(" sent, ")
    assert all(d.proc.poll() is None for d in daemons), [d.log() for d in daemons]
    for daemon in daemons:
        daemon.send(signal.SIGTERM)
    assert [d.wait() for d in daemons] == [0, 0]
    assert not any("UniqueViolation" in d.log() or "Traceback" in d.log() for d in daemons)
    assert Counter(e.rcpt_tos[0] for e, _ in handler.received) == Counter(recipients)
    store = Store.open(pg_url)
    try:
        assert store.outbox_counts() == {"sent": len(recipients)}
        assert {r.version for r in store.list_readers()} == {1}
    finally:
        store.close()


def test_sigterm_mid_batch_finishes_the_send_in_flight_and_exits_0(
    tmp_path: Path, smtp_server_factory: Callable[..., object], start_daemon: StartDaemon
) -> None:
    handler = HangOnSecondHandler()
    server = smtp_server_factory(handler)
    config, _, db_url = sample_daemon_config(tmp_path, server.port)  # type: ignore[attr-defined]
    daemon = start_daemon(config, grace=60)
    assert handler.second.wait(timeout=120), daemon.log()
    mark = daemon.mark()
    daemon.send(signal.SIGTERM)
    daemon.wait_for("SIGTERM received: draining", after=mark)
    handler.release()  # the in-flight send now completes, inside the grace period
    assert daemon.wait() == 0
    assert "stopped (drained)" in daemon.log()
    store = Store.open(db_url)
    try:
        counts = store.outbox_counts()
    finally:
        store.close()
    # Every message the server accepted is recorded as sent; nothing is left half-done.
    assert counts.get("sent") == len(handler.received) >= 2
    assert "sending" not in counts and "claimed" not in counts
    assert sum(counts.values()) == 3
    assert len({e.rcpt_tos[0] for e, _ in handler.received}) == len(handler.received)


def test_a_send_outliving_the_grace_period_is_cancelled_and_the_daemon_still_exits_0(
    tmp_path: Path, smtp_server_factory: Callable[..., object], start_daemon: StartDaemon
) -> None:
    handler = HangOnSecondHandler()
    server = smtp_server_factory(handler)
    config, _, db_url = sample_daemon_config(tmp_path, server.port)  # type: ignore[attr-defined]
    daemon = start_daemon(config, grace=1)
    assert handler.second.wait(timeout=120), daemon.log()
    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    assert "in-flight work cancelled after the grace period" in daemon.log()
    store = Store.open(db_url)
    try:
        counts = store.outbox_counts()
    finally:
        store.close()
    # The cancelled send stays "sending" (its final "." went out): the next run treats it as
    # ambiguous (README). The digest not yet handed over went back to the queue on the way out.
    assert counts == {"sent": 1, "sending": 1, "pending": 1}


def test_sighup_rejects_an_invalid_config_and_applies_a_valid_one(
    tmp_path: Path,
    smtp_server_factory: Callable[..., object],
    start_daemon: StartDaemon,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    config, port, db_url = sample_daemon_config(tmp_path, server.port)  # type: ignore[attr-defined]
    original = config.read_text()
    daemon = start_daemon(config)
    assert handler.wait_for(3), daemon.log()
    daemon.wait_for("3 sent")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
        ada = message_to(handler.received, "ada@lab.example")
        assert web.post(link_path(ada, "unsubscribe")).status_code == 200

        mark = daemon.mark()
        config.write_text(original.replace('send_at = "00:00"', 'frequency = "fortnightly"', 1))
        # `paperpost reload` checks first: an invalid config exits 1 and signals nothing ...
        assert main(["-c", str(config), "reload"]) == 1
        assert "fortnightly" in capsys.readouterr().err
        with pytest.raises(ConfigError, match="fortnightly"):
            signal_reload(config)
        # ... and a SIGHUP sent anyway is rejected by the daemon, which keeps its config.
        daemon.send(signal.SIGHUP)
        rejected = daemon.wait_for("reload rejected", after=mark)
        assert "fortnightly" in daemon.log()
        assert "running config stays in force" in rejected
        assert web.get("/healthz").status_code == 200

        # A link signed with the new key (an old-format one: its GET needs no outbox row).
        rotated = URLSafeSerializer(
            NEW_SECRET, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
        ).dumps({"s": "zoe@lab.example", "a": "unsubscribe", "e": 4102444800})
        assert web.get(f"/unsubscribe/{rotated}").status_code == 400  # key not configured yet

        mark = daemon.mark()
        extra = '\n[[subscribers]]\nemail = "new@lab.example"\ntimezone = "UTC"\n'
        keys = 'secret_env = ["PAPERPOST_TEST_SECRET2", "PAPERPOST_TEST_SECRET"]'
        config.write_text(original.replace('secret_env = "PAPERPOST_TEST_SECRET"', keys) + extra)
        assert signal_reload(config) == 0
        daemon.wait_for("config reloaded from", after=mark)
        assert web.get("/healthz").status_code == 200
        assert web.get(f"/unsubscribe/{rotated}").status_code == 200  # the new key verifies
        assert web.get(link_path(ada, "unsubscribe")).status_code == 200  # old links still work

    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    store = Store.open(db_url)
    try:
        states = store.subscriber_states()
    finally:
        store.close()
    assert states["new@lab.example"].status == "active"
    assert states["ada@lab.example"].status == "unsubscribed"  # a reload never re-activates


def test_reload_without_a_running_daemon_says_so(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config()
    assert signal_reload(config) == 1
    assert "no running daemon found" in capsys.readouterr().err
    pid_file = default_pid_file(config)
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("999999999\n")
    assert signal_reload(config) == 1
    assert "is not running" in capsys.readouterr().err
