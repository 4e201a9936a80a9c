"""A real bounce from a real Postfix: a private instance (its own config, queue and
Maildir under tmp_path, listening on loopback ports) relays a digest to an "MX" that
rejects unknown users (``local_recipient_maps``); Postfix returns the DSN to the digest's
VERP return path and delivers it into a Maildir; Paperpost reads it and suppresses the
reader.

The instance has two SMTP listeners: port A takes the digest from Paperpost (accepting
any recipient, like an outbound relay), port B plays the recipient's MX (a different
``myhostname``, and unknown users refused at RCPT). ``transport_maps`` sends the
recipient's domain from A to B.

Needs Debian's ``postfix`` and root (Postfix's master runs as root and drops to the
``postfix`` user). Skipped with the reason otherwise; mandatory with
PAPERPOST_REQUIRE_POSTFIX=1 (CI).
"""

from __future__ import annotations

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
from sqlalchemy import select

from pipeline.app import App
from pipeline.config import load_config
from pipeline.store.rows import BOUNCE_EVENTS
from tests.factories import MONDAY_NOON as NOW

NOBODY = 65534  # the uid and gid the virtual delivery agent writes the Maildir as

MASTER_CF = """\
127.0.0.1:{relay} inet n - n - - smtpd
  -o local_recipient_maps=
  -o smtpd_reject_unlisted_recipient=no
127.0.0.1:{mx} inet n - n - - smtpd
  -o myhostname=mx.dest.example
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
myhostname = relay.paperpost.example
mydomain = paperpost.example
myorigin = relay.paperpost.example
# The recipient's domain is "local" (so local_recipient_maps applies on the MX port) ...
mydestination = dest.example
local_recipient_maps = texthash:{d}/config/local_users
alias_maps =
alias_database =
# ... and is relayed from the relay port to the MX port.
transport_maps = texthash:{d}/config/transport
# The VERP domain: bounces+<token>@paperpost.example lands in {d}/mail/bounces/ (Maildir).
virtual_mailbox_domains = paperpost.example
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = texthash:{d}/config/vmailbox
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nobody}
recipient_delimiter = +
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
smtputf8_enable = no
biff = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
"""


def _unavailable() -> str | None:
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "Postfix is not installed (Debian: apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master process starts as root)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no 'postfix' user (the Debian package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostfix:
    root: Path
    relay_port: int
    mx_port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def bounce_maildir(self) -> Path:
        return self.root / "mail" / "bounces"

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"


def _postfix(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    postfix = shutil.which("postfix") or "/usr/sbin/postfix"
    return subprocess.run(
        [postfix, "-c", str(config_dir), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def postfix() -> Iterator[PrivatePostfix]:
    reason = _unavailable()
    if reason:
        if os.environ.get("PAPERPOST_REQUIRE_POSTFIX"):
            pytest.fail(f"{reason}, and PAPERPOST_REQUIRE_POSTFIX is set")
        pytest.skip(reason)
    # Outside pytest's 0700 tmp folders: Postfix's daemons run as the postfix user.
    root = Path(tempfile.mkdtemp(prefix="paperpost-postfix-"))
    root.chmod(0o755)
    pf = PrivatePostfix(root, _free_port(), _free_port())
    config = pf.config_dir
    config.mkdir(parents=True)
    (config / "main.cf").write_text(MAIN_CF.format(d=root, nobody=NOBODY))
    (config / "master.cf").write_text(MASTER_CF.format(relay=pf.relay_port, mx=pf.mx_port))
    (config / "local_users").write_text("postmaster x\n")
    (config / "transport").write_text(f"dest.example smtp:[127.0.0.1]:{pf.mx_port}\n")
    (config / "vmailbox").write_text("bounces@paperpost.example bounces/\n")
    for sub in ("queue", "data", "mail"):
        (root / sub).mkdir()
    os.chown(root / "data", pwd.getpwnam("postfix").pw_uid, 0)
    os.chown(root / "mail", NOBODY, NOBODY)
    for step in ("check", "start"):
        done = _postfix(config, step)
        if done.returncode != 0:
            log = pf.log()
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"postfix {step} failed: {done.stderr}{done.stdout}\n{log}")
    try:
        yield pf
    finally:
        _postfix(config, "stop")
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_file(folder: Path, pf: PrivatePostfix, *, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir():
            files = [p for p in folder.iterdir() if not p.name.startswith(".")]
            if files:
                return files[0]
        time.sleep(0.2)
    pytest.fail(f"no DSN arrived in {folder} within {timeout:.0f} s; Postfix log:\n{pf.log()}")


SUBSCRIBER = """
[[subscribers]]
email = "nobody-here@dest.example"
timezone = "UTC"
send_at = "00:00"
on_empty = "send"
[subscribers.interests]
query = 'ti:agent*'
"""


async def test_a_digest_to_an_unknown_user_comes_back_and_suppresses(
    postfix: PrivatePostfix, write_config
) -> None:
    smtp = (
        f'[mail.smtp]\nhost = "127.0.0.1"\nport = {postfix.relay_port}\nsecurity = "none"\n'
        "timeout_seconds = 20\n"
    )
    path = write_config(
        transport="smtp",
        mail_extra=smtp,
        subscribers=SUBSCRIBER,
        extra=f'\n[bounces]\nmaildir = "{postfix.bounce_maildir}"\n',
    )
    config = load_config(path)
    with App(config, clock=lambda: NOW) as app:
        report = await app.run_once()
        assert report.deliver.sent == 1, postfix.log()  # the relay accepted it
        [row] = app.outbox(email="nobody-here@dest.example")
        dsn = _wait_for_file(postfix.bounce_maildir / "new", postfix)
        head = dsn.read_bytes().split(b"\n\n", 1)[0]
        assert b"multipart/report" in head and b"delivery-status" in head
        bounces = app.process_bounces()
        assert (bounces.read, bounces.hard, bounces.malformed) == (1, 1, 0)
        assert bounces.suppressed == ["nobody-here@dest.example"]
        assert app.reader("nobody-here@dest.example").status == "suppressed"
        assert app.status_reasons() == {"nobody-here@dest.example": "hard_bounce"}
        with app.store.connect() as conn:
            [event] = conn.execute(select(BOUNCE_EVENTS)).all()
        # The return path's token named the digest; the report's status is Postfix's.
        assert event.delivery_id == row.id
        assert event.kind == "hard" and event.detail.startswith("5.1.1")
        assert "User unknown in local recipient table" in event.detail
        assert not dsn.exists()  # moved to cur/, marked seen
        assert [p.name.rsplit(":2,", 1)[1] for p in (postfix.bounce_maildir / "cur").iterdir()] == [
            "S"
        ]
        # Never planned again.
        assert app.reader("nobody-here@dest.example").id not in app.store.active_schedules()
