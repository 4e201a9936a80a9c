"""Security audit, end to end: hostile feeds, config and web requests through the real path.

Hostile data enters as real listings (an RSS 2.0 file, an Atom file and a Hugging Face
Daily Papers JSON file written into ``tmp_path``, configured as sources), goes through
``pipeline.app.run_once`` (ingest -> store -> match -> render -> build -> SMTP), and the
exact bytes the aiosmtpd server received are parsed back with both ``email`` policies
(``default`` and ``compat32``). The reader-facing web app is the daemon's own
(``Daemon(config).app``, its ``DaemonWebBackend`` over the same store), driven with httpx.

Tests marked ``xfail(strict=True)`` document real bugs found by this audit; each reason
names the function and the input.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape as xml_escape

import httpx
import pytest
from itsdangerous import URLSafeSerializer

from pipeline.app import CycleReport, run_once
from pipeline.config import Config, load_config
from pipeline.daemon import Daemon
from pipeline.errors import ConfigError
from pipeline.store import Store
from pipeline.web.tokens import TokenSigner
from tests.conftest import ConfigFactory
from tests.factories import BASE_URL, DIGEST_HEADERS, SECRET, smtp_extra
from tests.factories import MONDAY_NOON as NOW
from tests.smtpd import RunningServer

SENDER = "digest@paperpost.example"
ADA = "ada@lab.example"  # reads the hostile listings: query ti:zebrafish
GRACE = "grace@lab.example"  # reads a benign listing: query ti:wombat
EVE = "eve@lab.example"  # reads the listings whose title cannot go into a Subject as is
OBRIEN = "o'brien&co@lab.example"  # a valid address that HTML must escape

EXPECTED_HEADERS = Counter(DIGEST_HEADERS)  # each exactly once
# Where a link in a digest may point: our own web app and the hosts the listings name.
ALLOWED_HOSTS = {
    "digest.paperpost.example",
    "arxiv.org",
    "huggingface.co",
    "github.com",
    "doi.org",
    "ok.example",
}
# Every tag the shipped templates emit; anything else in a digest came from data.
TEMPLATE_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "div", "p", "h1", "a", "span"),
    *("ol", "li", "strong"),  # the summary at the top, "TL;DR"
}
URL_ATTRIBUTES = {
    "href",
    "src",
    "action",
    "formaction",
    "background",
    "poster",
    "srcset",
    "xlink:href",
    "data",
    "cite",
    "longdesc",
    "lowsrc",
    "dynsrc",
}
LINE_BREAKERS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clock(at: datetime = NOW) -> Callable[[], datetime]:
    return lambda: at


# ------------------------------------------------------------------------ hostile listings


def x(text: str) -> str:
    """XML character data: markup escaped, line breaks and non-ASCII as character references
    (so the parser hands them to the application exactly, CR included)."""
    out = xml_escape(text, {'"': "&quot;"})
    return "".join(c if " " <= c < "\x7f" else f"&#x{ord(c):X};" for c in out)


@dataclass(frozen=True)
class Item:
    title: str
    link: str | None = None
    link_xml: str | None = None  # raw XML for the link, when the test needs entity tricks
    author: str | None = None
    category: str | None = None
    description: str | None = None


BCC = "Bcc: victim@evil.example"

# Titles: each reaches the Subject (when it ranks first), the HTML and the text part.
RSS_TITLES = [
    "zebrafish <script>alert('title')</script> scripted",
    'zebrafish "><img src=x onerror=alert(1)> attribute break-out',
    "zebrafish <img/src=x/onerror=alert(2)> slash-separated attributes",
    "zebrafish <svg onload=alert(3)> unknown tag",
    "zebrafish &lt;script&gt;alert(4)&lt;/script&gt; double-encoded",
    f"zebrafish crlf\r\n{BCC}\r\nX-Injected: yes",
    f"zebrafish lf only\n{BCC}",
    f"zebrafish cr only\r{BCC}",
    f"zebrafish separators\u2028{BCC}\u2029X-Injected: 1\u0085Cc: victim@evil.example",
    "zebrafish bidi \u202eexe.tseb\u202c and \u2066isolated\u2069",
    "zebrafish " + "A" * 1500,  # past the title cap, one unbreakable word
]
# Links: none of these may become an href (or a link line in the text part).
HOSTILE_LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(2)",
    "  javascript:alert(3)",
    "\n\tjavascript:alert(4)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCg1KTwvc2NyaXB0Pg==",
    "vbscript:msgbox(6)",
    "//evil.example/protocol-relative",
    "http://user@evil.example/user-info",
    "http://user:password@evil.example/user-info",
    "https://ok.example@evil.example/looks-ok",
    "http://evil.example\\@ok.example/backslash",
    "file:///etc/passwd",
    "https:evil.example/no-slashes",
]
# The same attacks spelt with XML character references the parser decodes.
HOSTILE_LINKS_XML = [
    "&#106;avascript:alert(7)",
    "&#x6A;avascript:alert(8)",
    "java&#9;script:alert(9)",
    "&amp;#106;avascript:alert(10)",
    "&#32;javascript:alert(11)",
]
# Allowed (https) links whose characters must stay inside the attribute.
QUOTING_LINKS = [
    'https://ok.example/q?a="><script>alert(12)</script>',
    "https://ok.example/q?a='onmouseover='alert(13)",
    "https://ok.example/ onmouseover=alert(14)",
]
HOSTILE_AUTHORS = [
    '<b onmouseover="alert(1)">Mallory</b>',
    "Eve <script>alert(2)</script>",
    "=?utf-8?q?Admin=0D=0ABcc:_victim@evil.example?=",
    f"Trudy\r\n{BCC}",
    '"><img src=x onerror=alert(3)>',
]
HOSTILE_CATEGORIES = [
    'cs.LG"><script>alert(1)</script>',
    "cs.AI\u202e",
    "<img src=x onerror=alert(2)>",
]
HOSTILE_ABSTRACT = (
    '<p onclick="alert(1)">zebrafish abstract</p><script>alert(2)</script>'
    '<a href="javascript:alert(3)">click</a> &lt;img src=x onerror=alert(4)&gt; '
    '<iframe src="javascript:alert(5)"></iframe><style>body{background:url(javascript:x)}</style>'
    "=?utf-8?q?=0D=0ABcc:_victim@evil.example?= text\u2028after"
)


def rss_items() -> list[Item]:
    items = [
        Item(
            title=t,
            link=f"https://ok.example/rss/{i}",
            author=HOSTILE_AUTHORS[i % len(HOSTILE_AUTHORS)],
            category=HOSTILE_CATEGORIES[i % len(HOSTILE_CATEGORIES)],
            description=HOSTILE_ABSTRACT,
        )
        for i, t in enumerate(RSS_TITLES)
    ]
    items += [
        Item(title=f"zebrafish hostile link {i}", link=link, description="zebrafish")
        for i, link in enumerate(HOSTILE_LINKS)
    ]
    items += [
        Item(title=f"zebrafish entity link {i}", link_xml=link, description="zebrafish")
        for i, link in enumerate(HOSTILE_LINKS_XML)
    ]
    items += [
        Item(title=f"zebrafish quoting link {i}", link=link, description="zebrafish")
        for i, link in enumerate(QUOTING_LINKS)
    ]
    return items


def rss(items: Iterable[Item]) -> str:
    entries = []
    for n, item in enumerate(items):
        fields = [f"<title>{x(item.title)}</title>", f"<guid isPermaLink='false'>item-{n}</guid>"]
        if item.link_xml is not None:
            fields.append(f"<link>{item.link_xml}</link>")
        elif item.link is not None:
            fields.append(f"<link>{x(item.link)}</link>")
        if item.author:
            fields.append(f"<dc:creator>{x(item.author)}</dc:creator>")
        if item.category:
            fields.append(f"<category>{x(item.category)}</category>")
        if item.description:
            fields.append(f"<description>{x(item.description)}</description>")
        fields.append("<pubDate>Sun, 22 Nov 2026 20:00:00 GMT</pubDate>")
        entries.append("<item>" + "".join(fields) + "</item>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        "<title>Hostile feed</title><link>https://ok.example/</link>"
        "<description>hostile</description>" + "\n".join(entries) + "</channel></rss>\n"
    )


def atom() -> str:
    """Atom: HTML-typed titles, xhtml summaries, PDF links (a path RSS lacks), author names."""
    entries = [
        (
            '<title type="html">zebrafish atom &lt;img src=x onerror=alert(1)&gt; html title'
            "</title>"
            '<link rel="alternate" href="javascript:alert(1)"/>'
            '<link rel="related" type="application/pdf" href="javascript:alert(2)"/>'
        ),
        (
            '<title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">zebrafish atom '
            '<script>alert(3)</script><b onclick="alert(4)">xhtml</b> title</div></title>'
            '<link rel="alternate" href="data:text/html,&lt;script&gt;alert(5)&lt;/script&gt;"/>'
            '<link rel="related" type="application/pdf" href="vbscript:msgbox(6)"/>'
        ),
        (
            "<title>zebrafish atom pdf to an evil host</title>"
            '<link rel="alternate" href="https://ok.example/atom/3"/>'
            '<link rel="related" type="application/pdf" href="http://user@evil.example/x.pdf"/>'
        ),
    ]
    body = []
    for n, entry in enumerate(entries):
        body.append(
            f"<entry><id>tag:ok.example,2026:atom-{n}</id>{entry}"
            "<updated>2026-11-22T20:00:00Z</updated>"
            "<author><name>&lt;img src=x onerror=alert(7)&gt;Mallory</name></author>"
            '<summary type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">zebrafish '
            '<script>alert(8)</script><a href="javascript:alert(9)">x</a></div></summary>'
            "</entry>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>Hostile Atom</title>'
        "<id>tag:ok.example,2026:feed</id><updated>2026-11-22T20:00:00Z</updated>"
        + "".join(body)
        + "</feed>\n"
    )


def hf_paper(ident: str, title: str, **extra: Any) -> dict[str, Any]:
    paper: dict[str, Any] = {
        "id": ident,
        "title": title,
        "summary": extra.pop("summary", "zebrafish " + HOSTILE_ABSTRACT),
        "authors": extra.pop("authors", [{"name": a} for a in HOSTILE_AUTHORS]),
        "publishedAt": "2026-11-22T00:00:00.000Z",
        "upvotes": 7,
    }
    paper.update(extra)
    return {"paper": paper, "title": title}


def hf_listing() -> list[dict[str, Any]]:
    """JSON can carry what XML cannot: NUL and every other C0 control."""
    return [
        hf_paper(
            "2611.00001",
            "zebrafish controls nul\x00 bel\x07 esc\x1b[31m del\x7f vt\x0b ff\x0c bs\x08 end",
            githubRepo="javascript:alert(1)",
        ),
        hf_paper(
            "2611.00002",
            f"zebrafish hf separators\u2028{BCC}\u2029X-Injected: 1\u0085Cc: x@evil.example",
            githubRepo="https://evil.example@github.com/owner/repo",
        ),
        hf_paper(
            'x" onmouseover="alert(1)',
            "zebrafish hf hostile id",
            githubRepo="//evil.example/owner/repo",
        ),
        hf_paper(
            "2611.00004",
            "zebrafish hf <script>alert(1)</script> markup",
            authors=[{"name": "\u202eMallory"}, {"name": "Zoë\r\nX-Injected: 1"}],
        ),
    ]


BENIGN_RSS = rss(
    [Item(title="Wombat burrows as a model of soil engineering", link="https://ok.example/w/1")]
)
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + ']>\n<rss version="2.0"><channel><title>&lol9;</title><item><title>zebrafish &lol9;</title>'
    "<link>https://ok.example/lol</link></item></channel></rss>\n"
)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def source(name: str, kind: str, path: str) -> str:
    return f'\n[[sources]]\nname = "{name}"\nkind = "{kind}"\nurl = "{path}"\n'


def subscriber(email_: str, query: str, *, name: str | None = None, extra: str = "") -> str:
    named = f"name = {json.dumps(name)}\n" if name is not None else ""
    return (
        f'\n[[subscribers]]\nemail = "{email_}"\n{named}timezone = "UTC"\n'
        f'send_at = "00:00"\nmax_items = 100\n{extra}'
        f"[subscribers.interests]\nquery = '{query}'\n"
    )


def hostile_sources(tmp_path: Path) -> str:
    return (
        source("hostile-rss", "feed", write(tmp_path / "hostile.rss", rss(rss_items())))
        + source("hostile-atom", "feed", write(tmp_path / "hostile.atom", atom()))
        + source(
            "hostile-hf", "hf-daily", write(tmp_path / "hostile.json", json.dumps(hf_listing()))
        )
        + source("benign", "feed", write(tmp_path / "benign.rss", BENIGN_RSS))
    )


EXPECTED_ZEBRAFISH = len(rss_items()) + 3 + len(hf_listing())  # rss + atom + hf entries


# ------------------------------------------------------------------------ received messages


@dataclass(frozen=True)
class Received:
    recipients: tuple[str, ...]
    sender: str
    raw: bytes
    modern: EmailMessage
    legacy: Message

    @property
    def text(self) -> str:
        part = self.modern.get_body(("plain",))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")

    @property
    def html(self) -> str:
        part = self.modern.get_body(("html",))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")


def received(server: RunningServer) -> dict[str, Received]:
    """Every message the server accepted, by envelope recipient, parsed both ways."""
    out: dict[str, Received] = {}
    for envelope, data in server.received:
        modern = email.message_from_bytes(data, policy=email.policy.default)
        legacy = email.message_from_bytes(data, policy=email.policy.compat32)
        assert isinstance(modern, EmailMessage)
        key = envelope.rcpt_tos[0]
        assert key not in out, f"two messages for {key}"
        out[key] = Received(tuple(envelope.rcpt_tos), envelope.mail_from, data, modern, legacy)
    return out


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def parse_html(html: str) -> TagCollector:
    parser = TagCollector()
    parser.feed(html)
    parser.close()
    return parser


def anchors(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """(href, all attributes) of every <a>, as a browser's parser reads them."""
    return [
        (str(dict(attrs).get("href")), dict(attrs))
        for tag, attrs in parse_html(html).tags
        if tag == "a"
    ]


def check_link(url: str, where: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https"), f"{where}: non-http(s) link {url!r}"
    assert "@" not in parts.netloc and "\\" not in parts.netloc, f"{where}: user-info in {url!r}"
    assert parts.hostname in ALLOWED_HOSTS, f"{where}: link to {parts.hostname!r}: {url!r}"
    assert not any(unicodedata.category(c) in ("Cc", "Co", "Zl", "Zp") for c in url), (
        f"{where}: control, private-use or separator character in {url!r}"
    )


def check_html(html: str) -> list[str]:
    """Assert the HTML part is only what the templates emit; return its hrefs.

    Checked on the parsed document (tags and attributes as a browser sees them): a
    ``<script`` inside a quoted attribute value is text there (see the mXSS test).
    """
    parser = parse_html(html)
    hrefs: list[str] = []
    for tag, attrs in parser.tags:
        assert tag in TEMPLATE_TAGS, f"tag <{tag}> is not one the templates emit"
        for name, value in attrs:
            assert not name.startswith("on"), f"event handler {name}={value!r} on <{tag}>"
            assert name in ("href", "class", "style", "lang", "charset", "name", "content", "id"), (
                f"unexpected attribute {name}={value!r} on <{tag}>"
            )
            if name == "id":  # the anchors the summary links to, numbered by the renderer
                assert re.fullmatch(r"paper-\d+", value or ""), f"id={value!r} on <{tag}>"
            if name == "href" and (value or "").startswith("#"):  # the summary's anchors
                assert re.fullmatch(r"#paper-\d+", value or ""), f"href={value!r} on <{tag}>"
            elif name in URL_ATTRIBUTES:
                assert value is not None
                check_link(value, f"<{tag} {name}>")
                hrefs.append(value)
            if name == "style" and value:
                assert not re.search(r"url\(|expression|javascript", value, re.I), value
    for comment in parser.comments:  # a slot left over means data forged one
        assert not comment.startswith("pp:"), f"unfilled slot <!--{comment}-->"
    return hrefs


def check_text(text: str) -> None:
    body = text.replace("\r\n", "\n")
    bad = sorted(
        {f"U+{ord(c):04X}" for c in body if unicodedata.category(c) == "Cc"} - {"U+000A", "U+0009"}
    )
    assert not bad, f"control characters in the text part: {bad}"
    others = sorted(
        {f"U+{ord(c):04X}" for c in body if c in "\u2028\u2029" or "\ue000" <= c <= "\uf8ff"}
    )
    assert not others, f"line separators or private-use characters in the text part: {others}"
    assert "\x00" not in body
    for label, url in re.findall(
        r"(Abstract|PDF|Hugging Face|DOI|Code|More like this|Less like this|"
        r"Search arXiv for this title|Unsubscribe \(opens a page where you confirm\)):\s+(\S+)",
        body,
    ):
        check_link(url, f"text part {label}")
    assert not re.search(r"(?:java|vb)script\s*:", body, re.I), "script URL in the text part"


def check_headers(message: Received, recipient: str, display_name: str | None = None) -> None:
    """The exact header set on the wire and as both parsers see it; one recipient."""
    head, sep, _ = message.raw.partition(b"\r\n\r\n")
    assert sep, "no header/body separator"
    names: list[str] = []
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, f"bare CR or LF in header line {line!r}"
        if line[:1] in (b" ", b"\t"):
            assert names, "the header block starts with a continuation line"
            continue
        found = re.match(rb"([!-9;-~]+):", line)
        assert found, f"header line that is neither a field nor a continuation: {line!r}"
        names.append(found.group(1).decode("ascii"))
    assert Counter(names) == EXPECTED_HEADERS, f"header set on the wire: {names}"
    for parsed in (message.modern, message.legacy):
        assert Counter(parsed.keys()) == EXPECTED_HEADERS, f"parsed header set: {parsed.keys()}"
        assert parsed.defects == [], parsed.defects
    assert message.recipients == (recipient,), message.recipients
    assert message.sender == SENDER
    to = message.modern["To"]
    assert len(to.addresses) == 1, to.addresses
    assert to.addresses[0].addr_spec == recipient
    if display_name is not None:
        assert to.addresses[0].display_name == display_name
    legacy_to = email.utils.getaddresses([str(message.legacy["To"])])
    assert [addr for _, addr in legacy_to] == [recipient], legacy_to
    for name in EXPECTED_HEADERS:
        value = str(message.modern[name])
        assert not any(c in value for c in LINE_BREAKERS), f"{name} decodes to a line break"
        assert not any(unicodedata.category(c) == "Cc" for c in value), f"control char in {name}"
        assert not re.search(r"=\?[^?]*\?[bqBQ]\?", value), f"{name} decodes to an encoded-word"
        header = message.modern[name]
        assert not getattr(header, "defects", ()), f"{name}: {header.defects}"
    subject = str(message.modern["Subject"])
    legacy_subject = str(
        email.header.make_header(email.header.decode_header(message.legacy["Subject"]))
    )
    assert subject == legacy_subject
    for line in message.raw.split(b"\r\n"):
        assert len(line) <= 998, f"line of {len(line)} octets on the wire"
    assert b"\n" not in message.raw.replace(b"\r\n", b""), "bare LF on the wire"
    assert b"\r" not in message.raw.replace(b"\r\n", b""), "bare CR on the wire"
    assert message.raw.isascii(), "8-bit data in a message declared 7-bit"


def check_message(message: Received, recipient: str, display_name: str | None = None) -> list[str]:
    check_headers(message, recipient, display_name)
    assert message.modern.get_content_type() == "multipart/alternative"
    legacy_parts = [p for p in message.legacy.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in legacy_parts] == ["text/plain", "text/html"]
    legacy_text = legacy_parts[0].get_payload(decode=True)
    legacy_html = legacy_parts[1].get_payload(decode=True)
    assert isinstance(legacy_text, bytes) and isinstance(legacy_html, bytes)
    check_text(message.text)
    check_text(legacy_text.decode("utf-8"))
    assert legacy_text.decode("utf-8").replace("\r\n", "\n") == message.text.replace("\r\n", "\n")
    hrefs = check_html(message.html)
    assert check_html(legacy_html.decode("utf-8")) == hrefs
    return hrefs


def delivery_error(config: Config, address: str) -> str:
    """The outbox's recorded error for ``address``'s only digest."""
    from sqlalchemy import create_engine, text

    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            [error] = conn.execute(
                text(
                    "SELECT d.last_error FROM deliveries d JOIN subscribers s "
                    "ON s.id = d.subscriber_id WHERE s.email = :email"
                ),
                {"email": address},
            ).scalars()
    finally:
        engine.dispose()
    return str(error)


def flat(text: str) -> str:
    return " ".join(text.split())


async def run(config: Config) -> CycleReport:
    return await run_once(config, clock=clock())


def outcome(report: CycleReport, name: str) -> Any:
    [found] = [o for o in report.sources if o.name == name]
    return found


# ------------------------------------------------------------------------ the digest


@pytest.fixture
async def hostile_run(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer
) -> tuple[Config, CycleReport, dict[str, Received]]:
    config = load_config(
        write_config(
            transport="smtp",
            mail_extra=smtp_extra(smtp_server),
            sources=hostile_sources(tmp_path),
            subscribers=(
                subscriber(ADA, "ti:zebrafish")
                + subscriber(GRACE, "ti:wombat")
                + subscriber(OBRIEN, "ti:wombat")
            ),
        )
    )
    report = await run(config)
    return config, report, received(smtp_server)


async def test_hostile_listings_are_ingested_and_delivered(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    """The hostile entries are not silently dropped (that would make every check below
    vacuous): each source parses, and every zebrafish entry reaches Ada's digest."""
    _config, report, messages = hostile_run
    assert all(o.ok for o in report.sources), [(o.name, o.error) for o in report.sources]
    assert report.plan.items[ADA] == EXPECTED_ZEBRAFISH
    assert (report.deliver.sent, report.deliver.failed) == (3, 0)
    assert sorted(messages) == sorted([ADA, GRACE, OBRIEN])
    text = flat(messages[ADA].text)
    for fragment in (
        "zebrafish crlf Bcc: victim@evil.example X-Injected: yes",
        "zebrafish hostile link 0",
    ):
        assert fragment in text


async def test_digest_headers_are_exactly_the_expected_set(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    _config, _report, messages = hostile_run
    for recipient, message in messages.items():
        check_headers(message, recipient)
    assert "zebrafish" in str(messages[ADA].modern["Subject"])  # a hostile title is the top one


async def test_digest_bodies_carry_no_markup_scripts_or_foreign_links(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    _config, _report, messages = hostile_run
    hrefs = check_message(messages[ADA], ADA)
    hosts = Counter(urlsplit(h).hostname for h in hrefs)
    assert hosts["digest.paperpost.example"] >= 2 * EXPECTED_ZEBRAFISH  # more/less per entry
    assert hosts["ok.example"] >= len(RSS_TITLES)  # the benign links did survive
    check_message(messages[GRACE], GRACE)
    check_message(messages[OBRIEN], OBRIEN)


async def test_markup_in_feed_text_is_shown_as_text(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    """Markup that survives ingest cleaning is escaped, never interpreted."""
    _config, _report, messages = hostile_run
    html = messages[ADA].html
    assert "zebrafish &lt;img/src=x/onerror=alert(2)&gt; slash-separated attributes" in html
    assert "zebrafish &lt;svg onload=alert(3)&gt; unknown tag" in html
    text = flat(messages[ADA].text)
    assert "zebrafish <svg onload=alert(3)> unknown tag" in text


@pytest.mark.parametrize(
    "link",
    [*HOSTILE_LINKS, *(f"xml:{link}" for link in HOSTILE_LINKS_XML)],
    ids=[
        *(f"link-{i}" for i in range(len(HOSTILE_LINKS))),
        *(f"xml-{i}" for i in range(len(HOSTILE_LINKS_XML))),
    ],
)
async def test_a_hostile_link_never_becomes_an_href(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]], link: str
) -> None:
    """Each entry keeps its title (so it is in the digest) but shows no link of its own:
    only our feedback links and the labelled arXiv search for its exact title."""
    _config, _report, messages = hostile_run
    if link.startswith("xml:"):
        title = f"zebrafish entity link {HOSTILE_LINKS_XML.index(link[4:])}"
    else:
        title = f"zebrafish hostile link {HOSTILE_LINKS.index(link)}"
    html = messages[ADA].html
    entry = re.search(
        rf'<div class="item"[^>]*>(?:(?!<div class="item").)*?{title}<(?:(?!<div class="item").)*',
        html,
        re.S,
    )
    assert entry, f"{title} missing from the digest"
    links = [html_unescape(h) for h in re.findall(r'href="([^"]*)"', entry.group(0))]
    search = "https://arxiv.org/search/?" + urlencode(
        {"query": f'"{title}"', "searchtype": "title"}, quote_via=quote
    )
    assert all(
        urlsplit(unquote(h)).hostname == "digest.paperpost.example" or h == search for h in links
    ), links
    text = messages[ADA].text.split(f"{title}\n", 1)[1].split("\n\n", 1)[0]
    assert "Abstract:" not in text and "PDF:" not in text, text


async def test_quoting_links_stay_inside_the_attribute(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    """Each URL is one attribute value as a browser parses it: no attribute or tag escapes.
    Links with characters a URL may not carry raw (quotes, angle brackets) are dropped at
    ingest; an apostrophe is legal and stays inside its attribute."""
    _config, _report, messages = hostile_run
    found = dict(anchors(messages[ADA].html))
    for url in [
        "https://ok.example/q?a='onmouseover='alert(13)",
        "https://ok.example/onmouseover=alert(14)",  # whitespace removed at ingest
    ]:
        assert url in found, url
        assert set(found[url]) == {"href", "style"}, found[url]
    assert not [u for u in found if "<" in u or '"' in u or ">" in u]


async def test_no_raw_angle_brackets_inside_attribute_values(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> None:
    _config, _report, messages = hostile_run
    raw_attributes = re.findall(r'=\s*"([^"]*)"', messages[ADA].html)
    assert raw_attributes
    bad = [value for value in raw_attributes if "<" in value or ">" in value]
    assert not bad, bad
    assert "<script" not in messages[ADA].html.lower()


# ------------------------------------------------------------------------ Subject policy

UNSENDABLE_TITLES = [
    "quokka =?utf-8?q?=0D=0ABcc:_victim@evil.example?= q-word",
    "quokka =?utf-8?b?QmNjOg==?= b-word",
    "quokka c1 csi \u009b31m control",
]
UNSENDABLE_IDS = ["encoded-word-q", "encoded-word-b", "c1-control"]


async def run_with_top_title(
    tmp_path: Path, write_config: ConfigFactory, server: RunningServer, title: str
) -> tuple[Config, CycleReport, dict[str, Received]]:
    listing = [hf_paper("2611.09001", title, summary="quokka", authors=[{"name": "A"}])]
    config = load_config(
        write_config(
            transport="smtp",
            mail_extra=smtp_extra(server),
            sources=(
                source("quokka", "hf-daily", write(tmp_path / "q.json", json.dumps(listing)))
                + source("benign", "feed", write(tmp_path / "benign.rss", BENIGN_RSS))
            ),
            subscribers=subscriber(EVE, "ti:quokka") + subscriber(GRACE, "ti:wombat"),
        )
    )
    report = await run(config)
    return config, report, received(server)


@pytest.mark.parametrize("title", UNSENDABLE_TITLES, ids=UNSENDABLE_IDS)
async def test_title_unfit_for_a_subject_never_reaches_a_header(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer, title: str
) -> None:
    """Fail closed at least: whatever Eve gets (today: nothing), no header carries an
    encoded-word or a control from the title, and Grace's digest is unaffected."""
    config, report, messages = await run_with_top_title(tmp_path, write_config, smtp_server, title)
    assert report.plan.items[EVE] == 1
    check_message(messages[GRACE], GRACE)
    if EVE in messages:
        check_message(messages[EVE], EVE)
        assert "=?" not in str(messages[EVE].modern["Subject"])
    else:
        error = delivery_error(config, EVE)
        assert "header Subject" in error and "refusing to send it" in error, error


@pytest.mark.parametrize("title", UNSENDABLE_TITLES, ids=UNSENDABLE_IDS)
async def test_title_unfit_for_a_subject_does_not_block_the_digest(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer, title: str
) -> None:
    config, report, messages = await run_with_top_title(tmp_path, write_config, smtp_server, title)
    assert report.deliver.failed == 0, delivery_error(config, EVE)
    assert EVE in messages
    check_message(messages[EVE], EVE)


# ------------------------------------------------------------------------ placeholder forgery


async def test_feed_link_cannot_forge_a_personal_placeholder(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer
) -> None:
    items = [
        Item(title="zebrafish steals more", link="https://ok.example/c?t=\ue002"),
        Item(title="zebrafish steals less", link="https://ok.example/c?t=\ue003&r=\ue001"),
    ]
    config = load_config(
        write_config(
            transport="smtp",
            mail_extra=smtp_extra(smtp_server),
            sources=source("forge", "feed", write(tmp_path / "forge.rss", rss(items))),
            subscribers=subscriber(ADA, "ti:zebrafish"),
        )
    )
    report = await run(config)
    assert report.plan.items[ADA] == 2
    message = received(smtp_server)[ADA]
    for href in re.findall(r'href="([^"]*)"', message.html):
        if urlsplit(href).hostname == "ok.example":
            assert "/feedback/" not in href and "digest.paperpost.example" not in href, href
    for line in message.text.splitlines():
        if "ok.example" in line:
            assert "/feedback/" not in line, line
    check_message(message, ADA)


# ------------------------------------------------------------------------ bidi controls


async def test_bidi_controls_from_feeds_do_not_reach_the_reader(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer
) -> None:
    items = [Item(title="zebrafish \u202egnp.exe\u202c bidi", link="https://ok.example/b")]
    config = load_config(
        write_config(
            transport="smtp",
            mail_extra=smtp_extra(smtp_server),
            sources=source("bidi", "feed", write(tmp_path / "bidi.rss", rss(items))),
            subscribers=subscriber(ADA, "ti:zebrafish"),
        )
    )
    await run(config)
    message = received(smtp_server)[ADA]
    for where, value in (
        ("Subject", str(message.modern["Subject"])),
        ("text", message.text),
        ("html", message.html),
    ):
        found = BIDI_CONTROLS & set(value)
        assert not found, f"{where} carries {sorted(f'U+{ord(c):04X}' for c in found)}"


# ------------------------------------------------------------------------ subscriber names

NAMES = [
    pytest.param('Doe, John "JD"', id="comma-and-quotes"),
    pytest.param("Mallory <mallory@evil.example>", id="angle-address"),
    pytest.param("Zoë Ωmega", id="non-ascii"),
    pytest.param("Eve (comment) ; group:", id="specials"),
    pytest.param(f"Eve\r\n{BCC}", id="crlf"),
    pytest.param(f"Eve\n{BCC}", id="lf"),
    pytest.param("=?utf-8?q?Admin=0D=0ABcc:_victim@evil.example?=", id="encoded-word"),
    pytest.param(f"Eve\u2028{BCC}", id="u2028"),
    pytest.param("Eve\u0000", id="nul"),
]


def named_config(
    tmp_path: Path, write_config: ConfigFactory, server: RunningServer, name: str
) -> Path:
    return write_config(
        transport="smtp",
        mail_extra=smtp_extra(server),
        sources=source("benign", "feed", write(tmp_path / "benign.rss", BENIGN_RSS)),
        subscribers=(subscriber(GRACE, "ti:wombat") + subscriber(EVE, "ti:wombat", name=name)),
    )


@pytest.mark.parametrize("name", NAMES)
async def test_hostile_subscriber_name_is_rejected_at_load_or_neutralised(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer, name: str
) -> None:
    """The config's display name goes into the To header and the greeting.

    Acceptable: ``load_config`` refuses it naming ``subscribers[1].name``, or the digest
    is sent with the name neutralised (one To address, the right one). Names with CR, LF,
    NUL, U+2028 or an encoded-word are refused at load (SubscriberConfig runs the header
    safety function); ordinary punctuation and non-ASCII names are sent, properly encoded.
    """
    path = named_config(tmp_path, write_config, smtp_server, name)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert any("subscribers[1].name" in p for p in exc.problems), exc.problems
        return
    report = await run(config)
    messages = received(smtp_server)
    assert report.deliver.failed == 0
    assert sorted(messages) == [EVE, GRACE]
    check_message(messages[GRACE], GRACE)
    check_message(messages[EVE], EVE, display_name=name)
    assert ADA not in messages


@pytest.mark.parametrize(
    "name",
    [
        f"Eve\r\n{BCC}",
        f"Eve\n{BCC}",
        "=?utf-8?q?Admin=0D=0ABcc:_victim@evil.example?=",
        f"Eve\u2028{BCC}",
        "Eve\u0000",
    ],
    ids=["crlf", "lf", "encoded-word", "u2028", "nul"],
)
async def test_hostile_subscriber_name_is_refused_by_check(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer, name: str
) -> None:
    """The operator learns about it from ``paperpost check``, before any send."""
    with pytest.raises(ConfigError, match=r"subscribers\[1\]\.name: not usable in an email header"):
        load_config(named_config(tmp_path, write_config, smtp_server, name))


# ------------------------------------------------------------------------ hostile XML


async def test_billion_laughs_feed_fails_alone_and_the_others_deliver(
    tmp_path: Path, write_config: ConfigFactory, smtp_server: RunningServer
) -> None:
    config = load_config(
        write_config(
            transport="smtp",
            mail_extra=smtp_extra(smtp_server),
            sources=(
                source("lol", "feed", write(tmp_path / "lol.rss", BILLION_LAUGHS))
                + source("benign", "feed", write(tmp_path / "benign.rss", BENIGN_RSS))
            ),
            subscribers=subscriber(ADA, "ti:zebrafish") + subscriber(GRACE, "ti:wombat"),
        )
    )
    report = await run(config)
    lol = outcome(report, "lol")
    assert not lol.ok and lol.new == 0
    assert "entities" in (lol.error or ""), lol.error
    assert outcome(report, "benign").ok
    messages = received(smtp_server)
    assert sorted(messages) == [GRACE]
    check_message(messages[GRACE], GRACE)
    store = Store.open(config.database_url)
    try:
        assert store.papers_seen_between(datetime(2026, 1, 1, tzinfo=UTC), NOW)
        assert not any(
            "lol" in p.title
            for p in store.papers_seen_between(datetime(2026, 1, 1, tzinfo=UTC), NOW)
        )
    finally:
        store.close()


# ------------------------------------------------------------------------ web


@dataclass
class Web:
    client: httpx.AsyncClient
    store: Store
    messages: dict[str, Received]
    signer: TokenSigner


@pytest.fixture
async def web(
    hostile_run: tuple[Config, CycleReport, dict[str, Received]],
) -> AsyncIterator[Web]:
    config, _report, messages = hostile_run
    daemon = Daemon(config, clock=clock())
    transport = httpx.ASGITransport(app=daemon.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield Web(client, daemon.store, messages, TokenSigner([SECRET]))
    finally:
        daemon.store.close()


def links(message: Received, kind: str) -> list[str]:
    return re.findall(rf"{re.escape(BASE_URL)}(/{kind}/[A-Za-z0-9._~%/-]+)", message.html)


def status_of(store: Store, address: str) -> str:
    state = store.subscriber_state(address)
    assert state is not None
    return state.status


def assert_page_safe(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "set-cookie" not in response.headers
    check_html_page(response.text)


def check_html_page(html: str) -> None:
    assert not re.search(r"<\s*/?\s*(script|iframe|img|svg|object|embed)\b", html, re.I), html
    parser = TagCollector()
    parser.feed(html)
    for tag, attrs in parser.tags:
        for name, _value in attrs:
            assert not name.startswith("on"), f"event handler {name} on <{tag}>"


async def test_feedback_page_escapes_the_paper_id_from_a_hostile_feed(web: Web) -> None:
    """Non-arXiv papers are identified by their link ("url:..."), which a feed chose. Ingest
    no longer lets markup into links, so sign an old-format (v1) link, which names the
    paper itself, for such an id directly: the pages (GET asks, POST notes) name a paper by
    its title and never show a link id, so none of it reaches the page, escaped or not
    (titles are escaped: test_render_wording)."""
    hostile = 'url:https://ok.example/q?a="><script>alert(12)</script>'
    v1 = URLSafeSerializer(
        SECRET, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
    )
    for action in ("more", "less"):
        token = v1.dumps({"s": ADA, "a": action, "e": 4102444800, "p": hostile})
        assert isinstance(token, str)
        for method in ("GET", "POST"):
            response = await web.client.request(method, f"/feedback/{quote(token, safe='')}")
            assert response.status_code == 200, response.text
            assert_page_safe(response)
            assert "this paper" in response.text and "alert(12)" not in response.text


async def test_unsubscribe_pages_escape_the_address(web: Web) -> None:
    path = links(web.messages[OBRIEN], "unsubscribe")[0]
    for method in ("GET", "POST"):
        response = await web.client.request(method, path)
        assert response.status_code == 200
        assert_page_safe(response)
        assert "o&#x27;brien&amp;co@lab.example" in response.text
        assert OBRIEN not in response.text
    assert status_of(web.store, OBRIEN) == "unsubscribed"
    assert status_of(web.store, GRACE) == "active"


async def test_every_page_escapes_what_it_reflects(web: Web) -> None:
    unsubscribe = links(web.messages[ADA], "unsubscribe")[0]
    probes = [
        ("GET", unsubscribe),
        ("GET", "/unsubscribe/%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ("POST", "/unsubscribe/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
        ("GET", "/feedback/%3Csvg%20onload%3Dalert(1)%3E"),
        ("POST", "/feedback/%3Csvg%20onload%3Dalert(1)%3E"),
        ("PUT", "/feedback/%3Csvg%20onload%3Dalert(1)%3E"),
        ("GET", "/preview/%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ("GET", "/preview/ada%40lab.example?token=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ("GET", "/%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        ("GET", "/unsubscribe/x?%3Cscript%3E=%3Cscript%3E"),
        ("DELETE", "/unsubscribe/%3Cscript%3E"),
    ]
    for method, path in probes:
        response = await web.client.request(method, path)
        assert response.status_code in (200, 400, 403, 404, 405), (path, response.status_code)
        assert_page_safe(response)
        assert "alert(1)" not in response.text, path
    assert status_of(web.store, ADA) == "active"  # nothing above unsubscribes


async def test_preview_token_of_one_reader_cannot_open_another(web: Web) -> None:
    ada = web.store.subscriber_state(ADA)
    assert ada is not None
    ada_preview = web.signer.reader_token(subscriber_id=ada.id, purpose="preview", now=NOW)
    own = await web.client.get(f"/preview/{ADA}", params={"token": ada_preview})
    # The reader's own preview opens (what the next send would do for them).
    assert own.status_code == 200 and ADA in own.text
    check_html(own.text.replace("\r\n", "\n"))
    for target in (GRACE, ADA.upper(), f"%20{ADA}", f"{ADA}%00", "Ada@lab.example"):
        response = await web.client.get(f"/preview/{target}", params={"token": ada_preview})
        assert response.status_code == 403, target
        assert GRACE not in response.text and ADA not in response.text.lower()
    bearer = await web.client.get(
        f"/preview/{GRACE}", headers={"Authorization": f"Bearer {ada_preview}"}
    )
    assert bearer.status_code == 403
    # Tokens for other actions are not preview tokens, whoever they name.
    unsubscribe = unquote(links(web.messages[GRACE], "unsubscribe")[0].rsplit("/", 1)[1])
    response = await web.client.get(f"/preview/{GRACE}", params={"token": unsubscribe})
    assert response.status_code == 403


async def test_links_of_one_reader_cannot_act_on_another(web: Web) -> None:
    ada_unsubscribe = links(web.messages[ADA], "unsubscribe")[0]
    grace_feedback = links(web.messages[GRACE], "feedback")[0]
    token = unquote(ada_unsubscribe.rsplit("/", 1)[1])
    payload, _, signature = token.rpartition(".")
    # Re-sign Ada's claims for Grace with a wrong key, or graft Ada's signature on them.
    forged = URLSafeSerializer("not-the-key", salt="paperpost.link.v1").dumps(
        {"s": GRACE, "a": "unsubscribe", "e": 4102444800}
    )
    grafted = forged.rpartition(".")[0] + "." + signature
    for path in (f"/unsubscribe/{forged}", f"/unsubscribe/{grafted}", f"/unsubscribe/{payload}"):
        response = await web.client.post(path)
        assert response.status_code == 400, path
        assert_page_safe(response)
    # A feedback link (the digest's token and a position) is no unsubscribe URL, and an
    # unsubscribe link is no feedback link (it has no position).
    response = await web.client.post(grace_feedback.replace("/feedback/", "/unsubscribe/"))
    assert response.status_code == 404
    response = await web.client.get(ada_unsubscribe.replace("/unsubscribe/", "/feedback/"))
    assert response.status_code == 400
    assert status_of(web.store, GRACE) == "active"
    assert status_of(web.store, ADA) == "active"
    # Ada's own link unsubscribes Ada, and only Ada.
    response = await web.client.post(ada_unsubscribe)
    assert response.status_code == 200
    assert_page_safe(response)
    assert (status_of(web.store, ADA), status_of(web.store, GRACE)) == ("unsubscribed", "active")
    # Grace's feedback link only asks on GET (scanners fetch it); its POST records for Grace only.
    state = {a: web.store.subscriber_state(a) for a in (ADA, GRACE)}
    ids = {a: s.id for a, s in state.items() if s is not None}
    response = await web.client.get(grace_feedback)
    assert response.status_code == 200
    assert_page_safe(response)
    assert web.store.feedback([ids[ADA], ids[GRACE]]) == {ids[ADA]: ([], []), ids[GRACE]: ([], [])}
    response = await web.client.post(grace_feedback)
    assert response.status_code == 200
    assert_page_safe(response)
    feedback = web.store.feedback([ids[ADA], ids[GRACE]])
    assert feedback[ids[ADA]] == ([], [])
    assert sum(map(len, feedback[ids[GRACE]])) == 1
