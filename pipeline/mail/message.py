"""Build the bytes of one digest message: the one MIME builder.

The message is assembled directly as bytes: the header set in a fixed order,
then a multipart/alternative body with a text/plain and a text/html part, both
UTF-8 and base64 with 76-character lines (far below SMTP's 998 octets).
Base64 rather than quoted-printable because it is cheap to produce for these
mostly-ASCII, long-lined parts; with ``charset="utf-8"`` declared it does not
trip spam heuristics aimed at base64-disguised ASCII (SpamAssassin's
MIME_BASE64_TEXT only fires for ASCII or missing charsets).

Why not ``email.message.EmailMessage``: every header value must go through
:mod:`pipeline.mail.headers` (Python before 3.11.10 and 3.12.5 has CVE-2024-6923,
so the ``email`` package's folding is not trusted with outside data), and building
and serialising an ``EmailMessage`` costs more than the rest of composing a digest
(bench/SEND.md has the figures). The ``email`` package is the tests' oracle instead: they
parse the built bytes under ``policy.default`` and compare the structure.
"""

from __future__ import annotations

import hashlib
from binascii import b2a_base64
from email.utils import parseaddr
from functools import lru_cache

from pipeline.domain import MessageHeaders, RenderedDigest
from pipeline.errors import HeaderInjectionError
from pipeline.mail.headers import (
    ascii_addr_spec,
    encode_address,
    encode_phrase,
    encode_unstructured,
    format_date,
    safe_header_url,
    safe_header_value,
)

__all__ = ["build_message", "header_values"]

_ONE_CLICK = "List-Unsubscribe=One-Click"
# RFC 3834: tells vacation responders and other auto-repliers not to answer.
_AUTO_SUBMITTED = "auto-generated"


def header_values(headers: MessageHeaders) -> list[tuple[str, str]]:
    """The checked, still unencoded header values in sending order (MIME headers excluded)."""
    _, from_addr = _split_mailbox(headers.from_addr, field="From")
    ascii_addr_spec(from_addr, field="From")
    ascii_addr_spec(headers.to_addr, field="To")
    if headers.to_name is not None:
        safe_header_value(headers.to_name, field="To")
    message_id = safe_header_value(headers.message_id, field="Message-ID")
    if not (message_id.startswith("<") and message_id.endswith(">") and "@" in message_id):
        raise HeaderInjectionError(f"header Message-ID: {message_id!r} is not <id@domain>")
    values = [
        ("From", headers.from_addr),
        ("To", headers.to_addr),
        ("Subject", safe_header_value(headers.subject, field="Subject")),
        ("Date", format_date(headers.date)),
        ("Message-ID", message_id),
        ("MIME-Version", "1.0"),
        ("List-Id", safe_header_value(headers.list_id, field="List-Id")),
    ]
    targets: list[str] = []
    if headers.unsubscribe_url is not None:
        url = safe_header_url(headers.unsubscribe_url, field="List-Unsubscribe", schemes=("https",))
        targets.append(f"<{url}>")
    if headers.unsubscribe_mailto is not None:
        mailto = safe_header_url(
            headers.unsubscribe_mailto, field="List-Unsubscribe", schemes=("mailto",)
        )
        targets.append(f"<{mailto}>")
    if targets:
        values.append(("List-Unsubscribe", ", ".join(targets)))
    if headers.unsubscribe_url is not None:
        values.append(("List-Unsubscribe-Post", _ONE_CLICK))
    values.append(("Auto-Submitted", _AUTO_SUBMITTED))
    return values


def build_message(headers: MessageHeaders, rendered: RenderedDigest) -> bytes:
    """The message bytes: CRLF line endings, 7-bit, no line over 78 characters in the
    head or 76 in the body, ready for DATA (and for DKIM signing)."""
    lines: list[str] = []
    for name, value in header_values(headers):
        lines.append(f"{name}: {_encode_header(name, value, headers)}")
    boundary = _boundary(headers.message_id)
    lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    lines.append("")
    lines.append("")
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            "\r\n".join(lines).encode("ascii"),
            delimiter,
            _PART_HEADS["plain"],
            _base64_lines(_crlf_utf8(rendered.text)),
            b"\r\n",
            delimiter,
            _PART_HEADS["html"],
            _base64_lines(_crlf_utf8(rendered.html)),
            b"\r\n--",
            boundary.encode("ascii"),
            b"--\r\n",
        )
    )


def _encode_header(name: str, value: str, headers: MessageHeaders) -> str:
    # header_values has already passed every value through safe_header_value; the
    # encodings of values that repeat across a run (sender, list, subjects) are cached.
    if name == "To":
        return encode_address(value, headers.to_name, field="To")
    if name in _CACHED_ENCODINGS:
        return _encode_repeated(name, value)
    if name == "List-Unsubscribe":
        return value.replace(", ", ",\r\n ")
    return value


_CACHED_ENCODINGS = frozenset(("From", "Subject", "List-Id"))


@lru_cache(maxsize=4096)
def _encode_repeated(name: str, value: str) -> str:
    if name == "From":
        from_name, from_addr = _split_mailbox(value, field="From")
        return encode_address(from_addr, from_name, field="From")
    if name == "Subject":
        return encode_unstructured(value, field="Subject")
    phrase, sep, rest = value.rpartition(" <")
    if sep and rest.endswith(">"):
        return f"{encode_phrase(phrase, field='List-Id')} <{rest}"
    return encode_unstructured(value, field="List-Id")


@lru_cache(maxsize=256)
def _split_mailbox(value: str, *, field: str) -> tuple[str | None, str]:
    safe_header_value(value, field=field)
    name, addr = parseaddr(value)
    if not addr:
        raise HeaderInjectionError(f"header {field}: {value!r} is not a mailbox")
    return (name or None), addr


def _boundary(message_id: str) -> str:
    # "=_" never occurs in base64 or quoted-printable output, so the boundary cannot collide.
    return "=_pp_" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:28]


_PART_HEADS = {
    subtype: (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii")
    for subtype in ("plain", "html")
}
_LINE = 76  # base64 characters per line (RFC 2045)


def _crlf_utf8(body: str) -> bytes:
    """``body`` as UTF-8 with CRLF line endings and a final line break.

    Works on the encoded bytes: CR and LF never occur inside a UTF-8 sequence.
    """
    data = body.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    return data.replace(b"\n", b"\r\n")


def _base64_lines(data: bytes) -> bytes:
    """Base64 of ``data`` in lines of 76 characters, each ended by CRLF.

    One ``binascii`` pass over the whole part, then cut into lines (rather than
    ``email.base64mime.body_encode``, which makes one call per line).
    """
    encoded = b2a_base64(data, newline=False)
    lines = [encoded[i : i + _LINE] for i in range(0, len(encoded), _LINE)]
    return b"\r\n".join(lines) + b"\r\n"
