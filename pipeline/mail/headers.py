"""Header safety and encoding: the only path outside data takes into a header.

Every value that may carry outside data (paper titles in the subject, display
names, URLs) goes through :func:`safe_header_value` before it is encoded. Python
before 3.11.10 and 3.12.5 is affected by CVE-2024-6923 (the ``email`` package
does not quote newlines when it folds some headers), so the ``email`` package
is not relied on to stop header injection: we reject CR, LF, every other
control character and RFC 2047 encoded-word sequences up front, and encode
the rest ourselves.

Encoding follows RFC 5322 / RFC 2047: ASCII text (a subject, or a display name
as atoms or a quoted-string) is folded at its spaces into lines of at most 78
characters; text that is not ASCII, or that holds a word too long for such a
line, becomes a run of ``=?utf-8?b?...?=`` encoded-words, each at most 75
characters, one per line and holding whole characters only. So no header line
this module writes is longer than 78 characters, whatever the value's length,
except an address (at most 64 + 1 + 253 characters, RFC 5321), which gets a line
of its own when it does not fit after the name. Domains are sent as IDNA 2008
(UTS #46) punycode; a non-ASCII local part would need SMTPUTF8 and is refused,
and so is a local part longer than RFC 5321's 64 octets.
"""

from __future__ import annotations

import hashlib
import re
from base64 import b64encode
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

import idna

from pipeline.domain import Envelope
from pipeline.errors import HeaderInjectionError, PermanentDeliveryError

__all__ = [
    "MAX_LOCAL_PART",
    "encode_address",
    "encode_phrase",
    "encode_unstructured",
    "envelope_addresses",
    "format_date",
    "make_message_id",
    "safe_header_url",
    "safe_header_value",
]

# C0 controls (CR, LF, TAB, NUL ...), DEL, C1 controls (incl. NEL U+0085) and the
# Unicode line/paragraph separators, which some parsers treat as line breaks.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Anything a decoder could take for an RFC 2047 encoded-word. Deliberately broad:
# "=?" followed later by "?=" is refused whatever sits between them.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")

_MAX_LINE = 78  # RFC 5322 SHOULD; the MUST (998) is never approached
MAX_LOCAL_PART = 64  # octets, RFC 5321 section 4.5.3.1.1
_WORD_BYTES = 39  # utf-8 bytes per encoded-word: " =?utf-8?b?" + 52 b64 + "?=" fits in 78


def safe_header_value(value: str, *, field: str) -> str:
    """Return ``value`` unchanged if it may go into header ``field``; raise otherwise.

    Refused: CR, LF and every other C0/C1 control character (TAB included), DEL,
    U+2028/U+2029, and anything that looks like an RFC 2047 encoded-word
    (``=?...?=``). Callers clean their data first (render collapses whitespace in
    titles); whatever is still unsafe here is an error, never silently changed.
    """
    bad = _UNSAFE_CHARS.search(value)
    if bad is not None:
        raise HeaderInjectionError(
            f"header {field}: value {_preview(value)} contains control character "
            f"U+{ord(bad.group()):04X} at offset {bad.start()}; refusing to send it"
        )
    if _ENCODED_WORD.search(value) is not None:
        raise HeaderInjectionError(
            f"header {field}: value {_preview(value)} contains an RFC 2047 "
            f"encoded-word sequence ('=?...?='); refusing to send it"
        )
    return value


def safe_header_url(url: str, *, field: str, schemes: tuple[str, ...]) -> str:
    """Validate a URL bound for ``<...>`` in a header (List-Unsubscribe)."""
    safe_header_value(url, field=field)
    scheme, sep, _rest = url.partition(":")
    if not sep or scheme.lower() not in schemes:
        raise HeaderInjectionError(
            f"header {field}: URL {_preview(url)} must use {' or '.join(schemes)}"
        )
    if _URL_CHARS.fullmatch(url) is None or len(url) > 900:
        raise HeaderInjectionError(
            f"header {field}: URL {_preview(url)} must be ASCII, percent-encoded, "
            f"without spaces or angle brackets, and under 900 characters"
        )
    return url


def encode_unstructured(value: str, *, field: str) -> str:
    """Encode an unstructured header value (Subject) with folding; no CRLF at the end.

    ``field`` is the header name; its length is counted for the first line.
    """
    safe_header_value(value, field=field)
    if value.isascii():
        folded = _fold_ascii(value, first=len(field) + 2)
        if folded is not None:
            return folded
    return _encoded_words(value)


def encode_phrase(value: str, *, field: str) -> str:
    """Encode a display name (RFC 5322 phrase): atoms, a quoted-string or encoded-words.

    An ASCII name is written as atoms when it has no specials and single spaces only
    (so it parses back unchanged), else as a quoted-string; either is folded at its
    spaces. A name that is not ASCII, or has a word too long to fold, is encoded-words.
    """
    safe_header_value(value, field=field)
    if value.isascii():
        if value and _ATEXT_PHRASE.fullmatch(value) and " ".join(value.split()) == value:
            text = value
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            text = f'"{escaped}"'
        folded = _fold_ascii(text, first=len(field) + 2)
        if folded is not None:
            return folded
    return _encoded_words(value)


def encode_address(addr: str, name: str | None, *, field: str) -> str:
    """``Name <local@punycode-domain>`` (or the bare address), every part checked.

    The address goes on a line of its own when it does not fit after the name.
    """
    spec = ascii_addr_spec(addr, field=field)
    if not name:
        return spec
    phrase = encode_phrase(name, field=field)
    last = phrase.rsplit("\r\n", 1)[-1]
    column = len(last) + (len(field) + 2 if "\r\n" not in phrase else 0)
    if column + len(spec) + 3 > _MAX_LINE:
        return f"{phrase}\r\n <{spec}>"
    return f"{phrase} <{spec}>"


def ascii_addr_spec(addr: str, *, field: str) -> str:
    """Return ``local@domain`` with the domain as IDNA 2008 punycode; validate both parts."""
    safe_header_value(addr, field=field)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise HeaderInjectionError(f"header {field}: {_preview(addr)} is not an address")
    if _DOT_ATOM.fullmatch(local) is None:
        raise HeaderInjectionError(
            f"header {field}: local part of {_preview(addr)} is not an ASCII dot-atom "
            f"(non-ASCII local parts need SMTPUTF8, which Paperpost does not use)"
        )
    if len(local) > MAX_LOCAL_PART:
        raise HeaderInjectionError(
            f"header {field}: local part of {_preview(addr)} is {len(local)} octets; "
            f"RFC 5321 allows at most {MAX_LOCAL_PART}"
        )
    return f"{local}@{ascii_domain(domain, field=field)}"


@lru_cache(maxsize=4096)
def ascii_domain(domain: str, *, field: str) -> str:
    """Lower-cased ASCII form of ``domain`` (punycode for internationalised names)."""
    if domain.isascii():
        ascii_form = domain.lower()
        labels_ok = all(_LABEL.fullmatch(label) for label in ascii_form.split("."))
        if not labels_ok:
            raise HeaderInjectionError(
                f"header {field}: domain {_preview(domain)} is not a host name"
            )
        return ascii_form
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise HeaderInjectionError(
            f"header {field}: domain {_preview(domain)} is not a valid IDNA name ({exc})"
        ) from exc


def envelope_addresses(envelope: Envelope) -> tuple[str, str]:
    """SMTP envelope sender and recipient as ASCII addr-specs (punycode domains).

    A bad address is a :class:`PermanentDeliveryError` for that message alone.
    """
    try:
        return (
            ascii_addr_spec(envelope.sender, field="envelope sender"),
            ascii_addr_spec(envelope.recipient, field="envelope recipient"),
        )
    except HeaderInjectionError as exc:
        raise PermanentDeliveryError(f"message {envelope.message_id}: {exc}") from exc


def format_date(value: datetime) -> str:
    """RFC 5322 date in UTC (``Mon, 23 Nov 2026 08:00:00 +0000``); naive datetimes refused."""
    if value.tzinfo is None:
        raise ValueError(f"message date {value.isoformat()} has no time zone")
    return format_datetime(value.astimezone(UTC))


def make_message_id(key: str, domain: str) -> str:
    """Deterministic ``<hash@domain>`` from the outbox key: a retry reuses the same id."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}.paperpost@{ascii_domain(domain, field='Message-ID')}>"


def _fold_ascii(value: str, *, first: int) -> str | None:
    """``value`` folded at its spaces into lines of at most 78 characters (``first``:
    the columns taken before it on the first line), or None when a word is too long.

    A fold puts CRLF before one of the value's own spaces, so unfolding (removing the
    CRLF) gives back exactly ``value``.
    """
    words = value.split(" ")
    lines: list[str] = []
    current = words[0]
    used = first
    for word in words[1:]:
        if used + len(current) + 1 + len(word) > _MAX_LINE and current.strip():
            lines.append(current)
            current = word
            used = 1  # the folding space
        else:
            current = f"{current} {word}"
    lines.append(current)
    if first + len(lines[0]) > _MAX_LINE or any(len(line) + 1 > _MAX_LINE for line in lines[1:]):
        return None
    return "\r\n ".join(lines)


def _encoded_words(value: str) -> str:
    data = value.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # never split a character across encoded-words
        words.append(_b_word(data[start:end]))
        start = end
    return "\r\n ".join(words or [_b_word(b"")])


def _b_word(data: bytes) -> str:
    return f"=?utf-8?b?{b64encode(data).decode('ascii')}?="


def _preview(value: str) -> str:
    shown = value if len(value) <= 60 else value[:57] + "..."
    return repr(shown)
