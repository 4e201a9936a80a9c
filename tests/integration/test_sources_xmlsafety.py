"""Hostile XML is refused before any parser expands it; charsets decode as the bytes allow."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from pipeline.errors import SourceError
from pipeline.sources import parse_listing
from pipeline.sources.xmlsafety import decode_document, neutralise, prepare_xml
from tests.factories import SUNDAY_MIDNIGHT as NOW
from tests.ingest_fakes import LoopbackServer, Request, serving

ITEM = "<item><title>{title}</title><link>https://arxiv.org/abs/2401.00001</link></item>"


def rss(doctype: str, title: str = "Safe") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}'
        f'<rss version="2.0"><channel><title>t</title>{ITEM.format(title=title)}</channel></rss>'
    )


def billion_laughs() -> str:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    return rss(f"<!DOCTYPE rss [{entities}]>", "&lol9;")


def quadratic_blowup() -> str:
    return rss(f'<!DOCTYPE rss [<!ENTITY a "{"a" * 100_000}">]>', "&a;" * 34_000)


HOSTILE = {
    "billion-laughs": billion_laughs(),
    "quadratic-blowup": quadratic_blowup(),
    "external-file": rss('<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;"),
    "external-parameter": rss(
        '<!DOCTYPE rss [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>', "x"
    ),
    "lowercase-decl": rss('<!doctype rss [<!entity x "y">]>', "x"),
    "decl-after-junk": "junk" + billion_laughs(),
}


@pytest.mark.parametrize("kind", ["arxiv-rss", "arxiv-api", "feed"], ids=lambda k: k)
@pytest.mark.parametrize("doc", list(HOSTILE.values()), ids=list(HOSTILE))
def test_entity_declarations_are_refused(kind: str, doc: str) -> None:
    with pytest.raises(SourceError, match="declares XML entities"):
        parse_listing(kind, doc.encode(), source="evil", now=NOW)


def test_utf16_encoding_does_not_smuggle_entities_past_the_check() -> None:
    body = billion_laughs().replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    with pytest.raises(SourceError, match="declares XML entities"):
        parse_listing("feed", body, source="evil", now=NOW)


def test_refusing_a_200kb_bomb_stays_small_in_memory() -> None:
    body = quadratic_blowup().encode()
    assert len(body) > 200_000
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match="declares XML entities"):
            parse_listing("feed", body, source="evil", now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # a few copies of the document, never the expansion (3.4 GB)


@pytest.mark.parametrize(
    "doc",
    [
        rss("", "<![CDATA[\n<!ENTITY a 'aaaa'>]]>"),
        rss('<!-- <![CDATA[ --><!DOCTYPE rss [<!ENTITY a "b">]>', "&a;"),
    ],
    ids=["inside-cdata-at-line-start", "cdata-opener-hidden-in-comment"],
)
def test_entity_declarations_hidden_in_cdata_or_comments_are_refused(doc: str) -> None:
    # feedparser re-reads "<!ENTITY" at any line start, even inside CDATA: refuse them all.
    with pytest.raises(SourceError, match="declares XML entities"):
        parse_listing("feed", doc.encode(), source="evil", now=NOW)


def test_doctype_text_inside_cdata_and_comments_is_left_alone() -> None:
    doc = rss("<!-- <!DOCTYPE in a comment -->", "<![CDATA[Writing <!DOCTYPE html> well]]>")
    assert "<!DOCTYPE in a comment" in neutralise(doc, source="s")
    [paper] = parse_listing("feed", doc.encode(), source="blog", now=NOW).papers
    assert paper.title == "Writing <!DOCTYPE html> well"


@pytest.fixture
def dtd_server() -> Iterator[LoopbackServer]:
    def dtd(r: Request) -> None:
        r.send(200, b'<!ENTITY lol "fetched">', {"Content-Type": "application/xml-dtd"})

    yield from serving({"/evil.dtd": dtd})


@pytest.mark.parametrize("kind", ["arxiv-rss", "feed"], ids=lambda k: k)
def test_external_dtd_is_removed_and_never_fetched(kind: str, dtd_server: LoopbackServer) -> None:
    doc = rss(f'<!DOCTYPE rss SYSTEM "{dtd_server.url("/evil.dtd")}">', "Plain")
    [paper] = parse_listing(kind, doc.encode(), source="s", now=NOW).papers
    assert paper.title == "Plain"
    assert dtd_server.requests == []


def test_neutralise_removes_doctype_with_internal_subset_without_entities() -> None:
    text = '<!DOCTYPE rss [<!ELEMENT rss ANY> <!ATTLIST rss a CDATA "]">]><rss/>'
    assert neutralise(text, source="s") == "<rss/>"


# -- charsets --------------------------------------------------------------------------------------
DOC = (
    '<?xml version="1.0" encoding="{enc}"?>'
    '<rss version="2.0"><channel><title>{t}</title></channel></rss>'
)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (DOC.format(enc="iso-8859-1", t="Café").encode("utf-8"), None, "Café"),
        (DOC.format(enc="utf-8", t="Café").encode("latin-1"), None, "Café"),
        (DOC.format(enc="utf-8", t="Café").encode("utf-8"), "text/xml; charset=iso-8859-1", "Café"),
        (DOC.format(enc="utf-8", t="“Quoted”").encode("cp1252"), None, "“Quoted”"),
        (DOC.format(enc="utf-16", t="Ωmega").encode("utf-16"), None, "Ωmega"),
        (DOC.format(enc="koi8-r", t="Привет").encode("koi8-r"), None, "Привет"),
        (DOC.format(enc="iso-8859-1", t="Grüße").encode("latin-1"), "text/xml", "Grüße"),
    ],
    ids=[
        "utf8-bytes-declared-latin1",
        "latin1-bytes-declared-utf8",
        "utf8-bytes-http-says-latin1",
        "cp1252-quotes-declared-utf8",
        "utf16-bom",
        "koi8r-declared",
        "latin1-declared-correctly",
    ],
)
def test_wrong_or_missing_charset_decodes_where_bytes_allow(
    body: bytes, content_type: str | None, expected: str
) -> None:
    assert expected in decode_document(body, content_type).text
    safe = prepare_xml(body, source="s", content_type=content_type)
    assert safe.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert expected.encode("utf-8") in safe
