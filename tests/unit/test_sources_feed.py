"""The generic feed adapter (feedparser) on real captures and on edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.errors import SourceError
from pipeline.sources import parse_listing
from tests.factories import SUNDAY_MIDNIGHT as NOW
from tests.ingest_fakes import DATA

FEEDS = DATA / "feeds"


def parse(name: str) -> object:
    return parse_listing("feed", (FEEDS / name).read_bytes(), source=name, now=NOW)


@pytest.mark.parametrize(
    ("name", "count", "first_id", "first_title"),
    [
        (
            "feed-rs__atom_xml_base.xml",
            1,
            "url:https://numi.st/post/2022/travel-uke",
            "my cool entry title",
        ),
        (
            "feed-rs__rss_0.91_encoding_1.xml",
            1,
            "url:http://www.Dicas-L.com.br/dicas-l/20200406.php",
            "bash - Expansão de Parâmetros",
        ),
        (
            "feed-rs__rss_1.0_biorxiv.xml",
            1,
            "doi:10.1101/2023.12.16.571984",
            "Complete genome of the Medicago anthracnose fungus, Colletotrichum destructivum, "
            "reveals a mini-chromosome-like region within a core chromosome.",
        ),
        (
            "feed-rs__rss_2.0_relurl_1.xml",
            2,
            "url:https://insanity.industries/post/pareto-optimal-compression/",
            "Pareto-optimal compression",
        ),
        (
            "rss-parser__craigslist.rss",
            25,
            "url:http://sfbay.craigslist.org/eby/apa/6186664607.html",
            None,
        ),
        ("rss-parser__heise.atom", 15, None, "Java-Anwendungsserver: Red Hat gibt WildFly 10 frei"),
        (
            "rss-parser__heraldsun.rss",
            2,
            "url:http://www.oreilly.com/example/001.html",
            "The First Item",
        ),
        (
            "rss-parser__narro.rss",
            1,
            "url:https://www.narro.co/article/54e703933058540300000069",
            "FAQ for Narro",
        ),
    ],
    ids=[
        "atom-xml-base",
        "rss091-latin1",
        "rss1-biorxiv",
        "rss2-relurl",
        "craigslist",
        "heise-atom",
        "rss092",
        "narro",
    ],
)
def test_real_feeds(name: str, count: int, first_id: str | None, first_title: str | None) -> None:
    result = parse_listing("feed", (FEEDS / name).read_bytes(), source=name, now=NOW)
    assert len(result.papers) == count
    first = result.papers[0]
    if first_id is not None:
        assert first.id == first_id
    if first_title is not None:
        assert first.title == first_title
    assert result.problems == []


def test_biorxiv_authors_and_doi() -> None:
    body = (FEEDS / "feed-rs__rss_1.0_biorxiv.xml").read_bytes()
    [paper] = parse_listing("feed", body, source="biorxiv", now=NOW).papers
    assert paper.authors[:3] == ("N. LAPALU", "A. SIMON", "A. Lu")
    assert paper.authors[-1] == "R. J. O'Connell"
    assert paper.doi == "10.1101/2023.12.16.571984"
    assert paper.published == datetime(2023, 12, 16, tzinfo=UTC)


def test_rss_author_email_form_keeps_non_ascii_name() -> None:
    body = (FEEDS / "feed-rs__rss_2.0_relurl_1.xml").read_bytes()
    paper = parse_listing("feed", body, source="relurl", now=NOW).papers[0]
    assert paper.authors == ("Jonas Große Sundrup",)


def test_iso8859_feed_decodes() -> None:
    body = (FEEDS / "feed-rs__rss_1.0_iso8859.xml").read_bytes()
    [paper] = parse_listing("feed", body, source="golem", now=NOW).papers
    assert paper.title.startswith("Digitalministerium: Neue Glasfaserförderung")
    assert paper.authors == ("Achim Sawall",)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("feed-rs__rss_2.0_invalid_1.xml", "not a readable feed"),
        ("rss-parser__unrecognized.rss", "not a readable feed"),
    ],
    ids=["truncated-no-items", "html-redirect-page"],
)
def test_broken_documents_without_entries_fail(name: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse(name)


@pytest.mark.parametrize(
    "name",
    ["rss-parser__incomplete-fields.atom", "rss-parser__missing-fields.atom"],
    ids=["no-title-no-link", "id-only"],
)
def test_entries_without_title_or_link_are_skipped_and_counted(name: str) -> None:
    result = parse_listing("feed", (FEEDS / name).read_bytes(), source=name, now=NOW)
    assert (result.papers, result.skipped) == ([], 1)
    assert result.problems == ["1 entries with neither title nor link skipped"]


RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Lab blog</title>%s</channel></rss>"""


def test_entry_without_guid_link_or_date_gets_a_stable_content_id() -> None:
    body = RSS % b"<item><title>Only a title</title><description>Text</description></item>"
    first = parse_listing("feed", body, source="blog", now=NOW).papers[0]
    again = parse_listing("feed", body, source="blog", now=NOW).papers[0]
    assert first.id.startswith("sha:") and first.id == again.id
    assert first.published is None and first.url is None


def test_arxiv_links_in_generic_feeds_give_arxiv_identity() -> None:
    body = RSS % (
        b"<item><title>Paper</title><link>https://arxiv.org/abs/2305.18290v3</link></item>"
        b"<item><title>Blog</title><link>https://blog.example/2305.18290</link></item>"
    )
    papers = parse_listing("feed", body, source="blog", now=NOW).papers
    assert [(p.id, p.version) for p in papers] == [
        ("2305.18290", 3),
        ("url:https://blog.example/2305.18290", None),
    ]


def test_ill_formed_feed_keeps_entries_and_records_problem() -> None:
    body = (
        RSS % b"<item><title>One</title><link>https://a.example/1</link></item><item><title>Two &"
    )
    result = parse_listing("feed", body, source="blog", now=NOW)
    assert result.papers[0].title == "One"
    assert result.problems and result.problems[0].startswith("ill-formed feed")


def test_a_path_like_body_is_never_opened_as_a_file() -> None:
    with pytest.raises(SourceError, match="not"):
        parse_listing("feed", b"/etc/passwd", source="evil", now=NOW)
