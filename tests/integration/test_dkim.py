"""DKIM: digests signed once in the compose step verify with dkimpy's own verifier.

The public key is served by a test resolver (dkimpy's ``dnsfunc``) as the TXT record
docs/deliverability.md tells operators to publish; a tampered body or signed header
fails. Keys are made for each test: Ed25519 with PyNaCl, RSA with the ``openssl``
command (skipped with the reason when it is missing).
"""

from __future__ import annotations

import base64
import email
import email.policy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import nacl.signing
import pytest

from pipeline.app import run_once
from pipeline.config import load_config
from pipeline.domain import MessageHeaders, RenderedDigest
from pipeline.errors import ConfigError
from pipeline.mail import build_message, make_message_id
from pipeline.mail.dkim import DkimError, DkimSigner, load_key, parse_key
from tests.factories import MONDAY_NOON as NOW
from tests.smtpd import RunningServer

DOMAIN = "paperpost.example"
SELECTOR = "pp2026"

Resolver = Callable[..., bytes | None]


def resolver(records: dict[str, str]) -> Resolver:
    """dkimpy's ``dnsfunc``: TXT lookups answered from ``records`` (name -> value)."""

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode("ascii").rstrip("."))
        return None if value is None else value.encode("ascii")

    return txt


def ed25519_key(tmp_path: Path) -> tuple[Path, str]:
    """A key file as ``dknewkey --ktype ed25519`` writes it, and its DNS TXT value."""
    key = nacl.signing.SigningKey.generate()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "ed25519.key"
    path.write_text(base64.b64encode(bytes(key)).decode("ascii") + "\n", encoding="ascii")
    public = base64.b64encode(bytes(key.verify_key)).decode("ascii")
    return path, f"v=DKIM1; k=ed25519; p={public}"


def rsa_key(tmp_path: Path) -> tuple[Path, str]:
    """A 2048-bit RSA key file (PEM from ``openssl genrsa``) and its DNS TXT value."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make an RSA key)")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rsa.key"
    subprocess.run([openssl, "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        [openssl, "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return path, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


KEYS = {"ed25519": ed25519_key, "rsa": rsa_key}


def one_byte_changed(body: bytes, *, at: int) -> bytes:
    """``body`` with the base64 character at ``at`` swapped for another (still valid MIME)."""
    while body[at : at + 1] in (b"\r", b"\n", b"-", b"="):
        at += 1
    swapped = b"B" if body[at : at + 1] == b"A" else b"A"
    return body[:at] + swapped + body[at + 1 :]


def message() -> bytes:
    headers = MessageHeaders(
        from_addr=f"Paperpost <digest@{DOMAIN}>",
        to_addr="ada@lab.example",
        to_name="Ada Lovelace " * 12,  # a folded To line
        subject="Paperpost — 3 new papers: Débruitage Ω",
        message_id=make_message_id("dkim", DOMAIN),
        date=NOW,
        list_id=f"Paperpost <paperpost.{DOMAIN}>",
        unsubscribe_url="https://digest.paperpost.example/u/tok",
        unsubscribe_mailto=f"mailto:unsubscribe@{DOMAIN}?subject=unsubscribe",
    )
    rendered = RenderedDigest(subject=headers.subject, html="<p>Hello</p>\n" * 50, text="Hi\n")
    return build_message(headers, rendered)


def signer(path: Path, headers: list[str] | None = None) -> DkimSigner:
    from pipeline.config.models import DKIM_HEADERS

    return DkimSigner(
        domain=DOMAIN,
        selector=SELECTOR,
        key=load_key(path),
        headers=headers or list(DKIM_HEADERS),
    )


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_signed_digest_verifies_and_tampering_fails(tmp_path: Path, kind: str) -> None:
    path, record = KEYS[kind](tmp_path)
    dns = resolver({f"{SELECTOR}._domainkey.{DOMAIN}": record})
    signed = signer(path).sign(message())

    assert signed.startswith(b"DKIM-Signature: ")
    assert dkim.verify(signed, dnsfunc=dns) is True
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    tags = dict(
        t.strip().split("=", 1) for t in str(parsed["DKIM-Signature"]).split(";") if "=" in t
    )
    assert tags["a"] == ("ed25519-sha256" if kind == "ed25519" else "rsa-sha256")
    assert (tags["d"], tags["s"], tags["c"]) == (DOMAIN, SELECTOR, "relaxed/relaxed")
    signed_names = [h.strip().lower() for h in tags["h"].replace(" ", "").split(":")]
    for name in ("from", "to", "subject", "date", "message-id", "list-unsubscribe"):
        assert name in signed_names
    assert "list-unsubscribe-post" in signed_names

    head, sep, body = signed.partition(b"\r\n\r\n")
    tampered_body = head + sep + one_byte_changed(body, at=len(body) // 2)
    assert dkim.verify(tampered_body, dnsfunc=dns) is False
    tampered_subject = signed.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert dkim.verify(tampered_subject, dnsfunc=dns) is False
    other_record = KEYS[kind](tmp_path / "other")[1]
    wrong_key = resolver({f"{SELECTOR}._domainkey.{DOMAIN}": other_record})
    assert dkim.verify(signed, dnsfunc=wrong_key) is False


def test_a_short_rsa_key_is_refused(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make an RSA key)")
    path = tmp_path / "short.key"
    subprocess.run([openssl, "genrsa", "-out", str(path), "512"], check=True, capture_output=True)
    with pytest.raises(DkimError, match=f"DKIM key file {path}: the RSA key has 512 bits"):
        load_key(path)


def test_unknown_selector_does_not_verify(tmp_path: Path) -> None:
    path, record = ed25519_key(tmp_path)
    signed = signer(path).sign(message())
    assert dkim.verify(signed, dnsfunc=resolver({f"other._domainkey.{DOMAIN}": record})) is False


def test_key_formats(tmp_path: Path) -> None:
    seed = nacl.signing.SigningKey.generate()
    # PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it
    der = bytes.fromhex("302e020100300506032b657004220420") + bytes(seed)
    pem = (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"
    )
    key = parse_key(pem)
    assert key.algorithm == b"ed25519-sha256"
    assert base64.b64decode(key.private) == bytes(seed)
    assert parse_key(base64.b64encode(bytes(seed)) + b"\n").private == key.private
    for bad, match in (
        (b"", "decoded 0 bytes"),
        (b"not a key at all", "not a PEM private key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PUBLIC KEY"),
        (b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "RSA"),
    ):
        with pytest.raises(DkimError, match=match):
            parse_key(bad)


# -- the config check and the whole cycle -----------------------------------------------
def dkim_table(path: Path, extra: str = "") -> str:
    return f'\n[mail.dkim]\nselector = "{SELECTOR}"\nkey_file = "{path}"\n{extra}'


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read it"),
        (b"garbage", "not a PEM private key"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "CERTIFICATE"),
    ],
    ids=["missing", "garbage", "certificate"],
)
def test_check_names_the_key_file(
    write_config, tmp_path: Path, content: bytes | None, match: str
) -> None:
    key = tmp_path / "keys" / "pp2026.key"
    if content is not None:
        key.parent.mkdir()
        key.write_bytes(content)
    path = write_config(mail_extra=dkim_table(key))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert "mail.dkim.key_file: DKIM key file " + str(key) in problem
    assert match in problem
    # read-only commands (status, outbox) do not need the key, like the other secrets
    assert load_config(path, secrets=False).dkim_key_file == key


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('headers = ["To", "Subject"]', "must include 'From'"),
        ('headers = ["From", "Bad Name:"]', "expected header names"),
        ('domain = "not a domain"', "expected a DNS name"),
    ],
)
def test_check_refuses_bad_dkim_settings(
    write_config, tmp_path: Path, extra: str, match: str
) -> None:
    path, _ = ed25519_key(tmp_path)
    with pytest.raises(ConfigError, match=match):
        load_config(write_config(mail_extra=dkim_table(path, extra)))


async def test_every_digest_of_a_cycle_is_signed_once_and_verifies(
    write_config, tmp_path: Path, smtp_server: RunningServer
) -> None:
    key, record = ed25519_key(tmp_path)
    smtp = f'\n[mail.smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
    config = load_config(write_config(transport="smtp", mail_extra=dkim_table(key) + smtp))
    assert config.dkim_key_file == key
    report = await run_once(config, clock=lambda: NOW)
    assert report.deliver.sent == 3
    # d= defaults to the From address's domain
    dns = resolver({f"{SELECTOR}._domainkey.{DOMAIN}": record})
    for _envelope, data in smtp_server.received:
        assert data.count(b"DKIM-Signature:") == 1
        assert dkim.verify(data, dnsfunc=dns) is True
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert parsed["Auto-Submitted"] == "auto-generated"
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        head, sep, body = data.partition(b"\r\n\r\n")
        assert dkim.verify(head + sep + one_byte_changed(body, at=200), dnsfunc=dns) is False
