"""Hostile-XML defence and charset repair, applied before any XML parser sees a document.

feedparser (and expat behind it) does not bound entity expansion on its own: a 1 KB
"billion laughs" document costs feedparser seconds before it gives up, and a "quadratic
blowup" (one large entity used thousands of times) is only stopped by expat's
amplification limit, after which feedparser's lenient parser carries on (bench/INGEST.md
has the figures). So every document goes through :func:`prepare_xml` first:

* The bytes are decoded once, choosing the charset the bytes actually allow (BOM, then
  UTF-8 when the bytes are valid UTF-8, then the HTTP and XML declarations, then
  windows-1252), and re-encoded as UTF-8 with a matching XML declaration. A server that
  says ``iso-8859-1`` for UTF-8 bytes (or the reverse) therefore still decodes correctly.
* Any entity declaration (``<!ENTITY``) anywhere is refused: no feed needs one, and all
  entity-expansion attacks (nested, one huge entity repeated, external, parameter
  entities) need one. Every DOCTYPE is removed, so no DTD is ever read, fetched or
  applied, and the parsers after this step never see a DTD at all.

The scan is linear in the document size and touches neither the file system nor the
network.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from pipeline.errors import SourceError

_XML_DECL = re.compile(r"^\s*<\?xml\s[^>]*?\?>", re.IGNORECASE)
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._\-]+)""", re.IGNORECASE)
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# XML 1.0 appendix F: '<?' or '<' in a BOM-less UTF-16/32 document.
_SNIFF: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the codec that decoded the bytes
    declared: str | None  # what the server or document claimed, if anything


def charset_of(content_type: str | None) -> str | None:
    if not content_type:
        return None
    found = _CHARSET_PARAM.search(content_type)
    return found.group(1).lower() if found else None


def _known(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_document(body: bytes, content_type: str | None = None) -> Decoded:
    """Decode ``body`` with the first charset its bytes allow (see the module docstring)."""
    declared_http = charset_of(content_type)
    head = body[:512]
    found = _DECL_ENCODING.match(head)
    declared_xml = found.group(1).decode("ascii").lower() if found else None
    declared = declared_http or declared_xml
    for bom, name in _BOMS:
        if body.startswith(bom):
            return Decoded(body[len(bom) :].decode(name, errors="replace"), name, declared)
    for prefix, name in _SNIFF:
        if body.startswith(prefix):
            return Decoded(body.decode(name, errors="replace"), name, declared)
    try:
        return Decoded(body.decode("utf-8"), "utf-8", declared)
    except UnicodeDecodeError:
        pass
    for candidate in (declared_http, declared_xml):
        codec = _known(candidate)
        if codec is None or codec.startswith(("utf-16", "utf-32", "utf-8")):
            continue
        try:
            return Decoded(body.decode(codec), codec, declared)
        except UnicodeDecodeError:
            continue
    try:
        return Decoded(body.decode("cp1252"), "cp1252", declared)
    except UnicodeDecodeError:
        return Decoded(body.decode("latin-1"), "latin-1", declared)


_MARKUP = re.compile(r"<!--|<!\[CDATA\[|<\?|<!DOCTYPE", re.IGNORECASE)
_MARKUP_END = {"<!--": "-->", "<![CDATA[": "]]>", "<?": "?>"}


def _doctype_end(text: str, start: int) -> int:
    """Index just past the DOCTYPE starting at ``start`` (internal subset included)."""
    depth = 0
    quote = ""
    for i in range(start + 2, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ">" and depth <= 0:
            return i + 1
    return len(text)


def neutralise(text: str, *, source: str) -> str:
    """Refuse entity declarations; remove every DOCTYPE. Raises SourceError.

    Any ``<!ENTITY`` anywhere is refused, even inside CDATA or a comment: feedparser
    re-reads entity declarations found at the start of any line, wherever they are, so
    only refusing all of them is safe. DOCTYPEs are found the way an XML parser would,
    skipping comments, CDATA sections and processing instructions, and removed.
    """
    if _ENTITY_DECL.search(text):
        raise SourceError(
            source,
            "the document declares XML entities (<!ENTITY ...>), which can expand "
            "without bound; refused before parsing",
        )
    if "<!" not in text:
        return text
    pieces: list[str] = []
    pos = scan = 0
    while True:
        found = _MARKUP.search(text, scan)
        if found is None:
            break
        token = found.group(0)
        if token.upper() == "<!DOCTYPE":
            pieces.append(text[pos : found.start()])
            pos = scan = _doctype_end(text, found.start())
            continue
        closing = text.find(_MARKUP_END[token.upper()], found.end())
        if closing < 0:
            break
        scan = closing + len(_MARKUP_END[token.upper()])
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def prepare_xml(body: bytes, *, source: str, content_type: str | None = None) -> bytes:
    """``body`` as safe UTF-8 XML bytes: charset repaired, DTDs removed, entities refused."""
    decoded = decode_document(body, content_type)
    text = neutralise(decoded.text, source=source)
    declaration = _XML_DECL.match(text)
    if declaration:
        text = text[declaration.end() :]
    return ('<?xml version="1.0" encoding="utf-8"?>' + text.lstrip("\ufeff")).encode(
        "utf-8", errors="replace"
    )
