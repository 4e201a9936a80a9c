"""A sender killed with SIGKILL in the middle of a batch: on restart, nothing accepted is
sent again (beyond the documented ambiguous case) and the rest is sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.smtp import Envelope

from pipeline.app import run_once
from pipeline.config import load_config
from pipeline.store import Store
from tests.smtpd import HANG, ScriptedHandler

# Enough readers that composing is still under way when the sender is killed.
RECIPIENTS = tuple(f"reader{n}@lab.example" for n in range(20))
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


class SignallingHandler(ScriptedHandler):
    """Sets ``second`` as soon as a second message has arrived."""

    def __init__(self) -> None:
        # First message: normal (None); second: recorded, then no reply (HANG).
        super().__init__({"DATA": [None, HANG]})  # type: ignore[list-item]
        self.second = threading.Event()

    def record(self, envelope: Envelope) -> None:
        super().record(envelope)
        if len(self.received) >= 2:
            self.second.set()


def processes_marked(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker`` (the sender's children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ and (entry / "stat").read_text().split()[2] != "Z":
                pids.append(int(entry.name))
    return pids


def test_sigkill_mid_batch_then_restart(write_config, smtp_server_factory) -> None:
    handler = SignallingHandler()
    server = smtp_server_factory(handler)
    extra = (
        "concurrency = 1\n\n"
        f'[mail.smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
    )
    path = write_config(transport="smtp", mail_extra=extra, subscribers=READERS)
    marker = f"PAPERPOST_TEST_RUN={uuid.uuid4().hex}"
    env = {
        **os.environ,
        "PAPERPOST_TEST_SECRET": "test-secret-0123456789abcdef",
        marker.split("=")[0]: marker.split("=")[1],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "-c", str(path), "run", "--once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert handler.second.wait(timeout=60), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        handler.release()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # No compose worker outlives its sender: its pipe closed with the kill.
    deadline = time.monotonic() + 30
    while (left := processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []

    config = load_config(path, env=env)
    store = Store.open(config.database_url)
    assert store.outbox_counts() == {"sent": 1, "sending": 1, "claimed": len(RECIPIENTS) - 2}
    # The restart happens once the dead sender's claims are stale.
    later = datetime.now(UTC) + timedelta(minutes=15)
    import asyncio

    report = asyncio.run(run_once(config, clock=lambda: later, store=store))
    assert (report.deliver.sent, report.deliver.ambiguous) == (len(RECIPIENTS) - 2, 1)
    # Run within 15 minutes of midnight UTC, the restart also opens the next day's period,
    # which records one 'skipped' row per reader (nothing new): not a resend, so not counted.
    counts = {k: v for k, v in store.outbox_counts().items() if k != "skipped"}
    assert counts == {"sent": len(RECIPIENTS) - 1, "ambiguous": 1}
    store.close()
    # The server got each digest exactly once: the hung one was accepted before the kill and
    # is not sent again under the default at-most-once policy.
    assert Counter(e.rcpt_tos[0] for e, _ in server.received) == Counter(RECIPIENTS)
