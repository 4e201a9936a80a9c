"""Run `paperpost daemon` in a subprocess and wait on its log lines (no sleeps, no polling)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import SAMPLE_SOURCES
from tests.conftest import SUBSCRIBERS as _CONFTEST_SUBSCRIBERS
from tests.factories import SECRET
from tests.smtpd import HANG, RecordingHandler, ScriptedHandler

ROOT = Path(__file__).resolve().parent.parent
NEW_SECRET = "rotated-secret-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
ENV = {
    **os.environ,
    "PAPERPOST_TEST_SECRET": SECRET,
    "PAPERPOST_TEST_SECRET2": NEW_SECRET,
    "PAPERPOST_TEST_ADMIN": ADMIN,
}
WAIT = 120.0  # seconds: a safety net against hangs, never a timing assertion

DAEMON_CONFIG = """
[database]
url = "{db_url}"

[mail]
from = "Paperpost test <digest@paperpost.example>"
transport = "smtp"
list_name = "Paperpost test"
unsubscribe_mailto = "unsubscribe@paperpost.example"
concurrency = 1

[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[web]
base_url = "http://127.0.0.1:{web_port}"
allow_insecure_links = true
listen_port = {web_port}
secret_env = "PAPERPOST_TEST_SECRET"
admin_token_env = "PAPERPOST_TEST_ADMIN"

[render]
preview_dir = "{directory}/previews"
"""


# The shared subscribers, at a domain email-validator accepts (".test" is special-use).
SUBSCRIBERS = _CONFTEST_SUBSCRIBERS.replace("@lab.test", "@lab.example")
RECIPIENTS = ("ada@lab.example", "grace@lab.example", "zoe@lab.example")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_daemon_config(
    directory: Path, *, db_url: str, smtp_port: int, sources: str, subscribers: str
) -> tuple[Path, int]:
    directory.mkdir(parents=True, exist_ok=True)
    web_port = free_port()
    text = DAEMON_CONFIG.format(
        db_url=db_url, smtp_port=smtp_port, web_port=web_port, directory=directory
    )
    path = directory / "paperpost.toml"
    path.write_text(text + sources + subscribers, encoding="utf-8")
    return path, web_port


def sample_daemon_config(tmp_path: Path, smtp_port: int) -> tuple[Path, int, str]:
    """The common set-up: one SQLite file, the sample sources and three subscribers.
    Returns (config path, web port, database URL)."""
    db_url = f"sqlite:///{tmp_path / 'paperpost.db'}"
    config, web_port = write_daemon_config(
        tmp_path / "a",
        db_url=db_url,
        smtp_port=smtp_port,
        sources=SAMPLE_SOURCES,
        subscribers=SUBSCRIBERS,
    )
    return config, web_port, db_url


class CountingHandler(RecordingHandler):
    """Records messages and lets a test wait until ``n`` have arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def record(self, envelope: object) -> None:
        super().record(envelope)  # type: ignore[arg-type]
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.received) >= n, timeout)


class HangOnSecondHandler(ScriptedHandler):
    """Accepts the first message; records the second, then replies only after ``release()``."""

    def __init__(self) -> None:
        super().__init__({"DATA": [None, HANG]})  # type: ignore[list-item]
        self.second = threading.Event()

    def record(self, envelope: object) -> None:
        super().record(envelope)  # type: ignore[arg-type]
        if len(self.received) >= 2:
            self.second.set()


class DaemonProcess:
    """A daemon subprocess; its stderr lines are collected by a reader thread."""

    def __init__(self, config: Path, *, grace: float = 20.0, lease_seconds: float = 6.0) -> None:
        self.config = config
        code = (
            "import sys\n"
            "from datetime import timedelta\n"
            "from pipeline.logs import configure_logging\n"
            "from pipeline.daemon import DaemonOptions, run_daemon\n"
            "configure_logging(verbose=True)\n"
            f"options = DaemonOptions(grace_seconds={grace}, "
            f"lease_ttl=timedelta(seconds={lease_seconds}))\n"
            f"sys.exit(run_daemon({str(config)!r}, options=options))\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<process output ended>")
            self._changed.notify_all()

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def wait_for(self, text: str, *, after: int = 0, timeout: float = WAIT) -> str:
        """The first log line from index ``after`` on that contains ``text``."""

        def found() -> str | None:
            return next((line for line in self.lines[after:] if text in line), None)

        def ended() -> bool:
            return bool(self.lines) and self.lines[-1] == "<process output ended>"

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or ended(), timeout)
            line = found()
        assert line is not None, f"no log line with {text!r}; log:\n" + "\n".join(self.lines)
        return line

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return code

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> int | None:
        """SIGTERM and wait; kill if it does not go. For fixture teardown."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)
        return self.proc.returncode
