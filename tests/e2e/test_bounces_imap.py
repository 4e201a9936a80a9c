"""The bounce mailbox over IMAP, against a real Dovecot started for the test (its own
config, Maildir and loopback port under a temporary folder; plain IMAP, which Paperpost
allows only to a loopback host). The reports are put in with IMAP APPEND, as a mail
server would deliver them.

Needs Debian's ``dovecot-imapd`` and root. Skipped with the reason otherwise; mandatory
with PAPERPOST_REQUIRE_DOVECOT=1 (CI).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.bounces.mailbox import ImapBox, ImapSettings, MailboxError
from pipeline.config import load_config
from tests.factories import BOUNCE_REPORTS as DATA
from tests.factories import MONDAY_NOON as NOW

PASSWORD = "imap-secret-0123456789"
NOBODY = 65534

DOVECOT_CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={nobody} gid={nobody} home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def _unavailable() -> str | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return "Dovecot is not installed (Debian: apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "a private Dovecot instance needs root"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"there is no {user!r} user (the Debian package creates it)"
    return None


@dataclass
class Dovecot:
    root: Path
    port: int

    def client(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=20)
        imap.login("bounces", PASSWORD)
        return imap

    def append(self, *names: str) -> None:
        imap = self.client()
        try:
            for name in names:
                status, _ = imap.append("INBOX", None, None, (DATA / name).read_bytes())
                assert status == "OK"
        finally:
            imap.logout()

    def flags(self) -> list[str]:
        """Each message's flags, in UID order."""
        imap = self.client()
        try:
            imap.select("INBOX")
            _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            return sorted(
                " ".join(sorted(x.decode().split("FLAGS (", 1)[1].split(")")[0].split()))
                for x in data
                if isinstance(x, bytes)
            )
        finally:
            imap.logout()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    reason = _unavailable()
    if reason:
        if os.environ.get("PAPERPOST_REQUIRE_DOVECOT"):
            pytest.fail(f"{reason}, and PAPERPOST_REQUIRE_DOVECOT is set")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="paperpost-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root, _free_port())
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(d=root, port=server.port, nobody=NOBODY))
    (root / "users").write_text(f"bounces:{{PLAIN}}{PASSWORD}\n")
    (root / "home").mkdir()
    os.chown(root / "home", NOBODY, NOBODY)
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    # Its daemons keep the standard streams open: write them to a file, not a pipe.
    with (root / "start.log").open("w") as out:
        done = subprocess.run([binary, "-c", str(conf)], stdout=out, stderr=out, timeout=60)
    if done.returncode != 0:
        log = (root / "start.log").read_text()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"dovecot did not start: {log}")
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the listener
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"dovecot is not listening: {server.log()}")
                time.sleep(0.1)
        yield server
    finally:
        subprocess.run(
            [binary, "-c", str(conf), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def imap_table(port: int) -> str:
    return (
        f'\n[bounces]\n[bounces.imap]\nhost = "127.0.0.1"\nport = {port}\nuser = "bounces"\n'
        'password_env = "PAPERPOST_TEST_IMAP"\ntls = "none"\n'
    )


def test_reports_are_read_over_imap_and_marked(dovecot: Dovecot, write_config, monkeypatch) -> None:
    monkeypatch.setenv("PAPERPOST_TEST_IMAP", PASSWORD)
    config = load_config(write_config(extra=imap_table(dovecot.port)))
    dovecot.append("hard_dsn.eml", "delayed_dsn.eml", "garbage.eml", "arf_complaint.eml")
    with App(config, clock=lambda: NOW) as app:
        app.sync()
        report = app.process_bounces()
        assert (report.read, report.hard, report.complaints) == (4, 1, 1)
        assert (report.ignored, report.malformed, report.duplicates) == (1, 1, 0)
        assert report.suppressed == ["ada@lab.example"]  # once: the complaint finds it done
        assert app.reader("ada@lab.example").status == "suppressed"
        assert app.status_reasons() == {"ada@lab.example": "hard_bounce"}
        # Processed: \Seen; malformed: \Seen \Flagged. Nothing is read twice.
        assert dovecot.flags() == ["\\Flagged \\Seen", "\\Seen", "\\Seen", "\\Seen"]
        assert app.process_bounces().read == 0
        # A report appended again (a second copy) is read and recorded as a duplicate.
        dovecot.append("hard_dsn.eml")
        again = app.process_bounces()
        assert (again.read, again.duplicates, again.hard) == (1, 1, 0)


def test_a_wrong_password_is_a_clear_error(dovecot: Dovecot) -> None:
    settings = ImapSettings(
        host="127.0.0.1", port=dovecot.port, user="bounces", password="wrong", security="none"
    )
    with pytest.raises(MailboxError, match=rf"imap://127.0.0.1:{dovecot.port}/INBOX: .*"):
        ImapBox(settings)
