"""The renderer: escaping, links, sizes, caching, subjects, template errors."""

from __future__ import annotations

import dataclasses
import html.parser
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.domain import Digest, DigestItem, Paper
from pipeline.errors import TemplateError
from pipeline.render import Renderer, RenderOptions, sample_digest
from pipeline.render.environment import SHIPPED_TEMPLATES

WHEN = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(document: str) -> _Collector:
    collector = _Collector()
    collector.feed(document)
    return collector


def paper(n: int, **changes: object) -> Paper:
    base = Paper(
        id=f"2611.{n:05d}",
        title=f"Paper number {n} about preference optimization",
        abstract="We propose a method. It works well on benchmarks. " * 3,
        authors=("Ada Lovelace", "Alan Turing"),
        categories=("cs.LG", "cs.CL"),
        url=f"https://arxiv.org/abs/2611.{n:05d}",
        pdf_url=f"https://arxiv.org/pdf/2611.{n:05d}",
        announced=WHEN,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def digest(*items: DigestItem, **changes: object) -> Digest:
    base = Digest(
        recipient_email="ada@lab.example",
        recipient_name="Ada",
        period_key="2026-11-23",
        period_label="Monday 23 November 2026",
        generated_at=WHEN,
        items=items,
        unsubscribe_url="https://digest.lab.example/u/ada",
        reason_for_receiving="You subscribed at lab.example.",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_shipped_templates_pass_check(renderer: Renderer) -> None:
    renderer.check()
    assert renderer.template_dirs == (SHIPPED_TEMPLATES,)


def test_feed_text_is_escaped_and_only_http_links_survive(renderer: Renderer) -> None:
    hostile = paper(
        1,
        title='<script>alert("t")</script> Attention <b>is</b> all',
        abstract='<img src=x onerror="alert(1)">Summary with <a href="javascript:x">a link</a>.',
        authors=("<b>Mallory</b>",),
        url="javascript:alert(1)",
        pdf_url="data:text/html,<script>alert(1)</script>",
        hf_url="https://huggingface.co/papers/2611.00001",
    )
    item = DigestItem(
        hostile,
        1.0,
        reason="<i>because</i> & more",
        more_url="javascript:alert(2)",
        less_url="https://digest.lab.example/f/less/1?a=1&b=2",
    )
    rendered = renderer.render(digest(item, unsubscribe_url="ftp://x.example/u"))
    page = parse_html(rendered.html)
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags and "img" not in tags and "b" not in tags and "i" not in tags
    hrefs = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert hrefs == [
        "https://huggingface.co/papers/2611.00001",
        "https://digest.lab.example/f/less/1?a=1&b=2",
    ]
    text = "".join(page.text)
    assert '<script>alert("t")</script> Attention <b>is</b> all' in text
    assert "<b>Mallory</b>" in text
    assert "<i>because</i> & more" in text
    assert "Summary with a link." in text
    assert "javascript" not in rendered.text and "data:" not in rendered.text
    assert "Unsubscribe" not in rendered.text


def test_every_href_in_a_real_render_is_http(renderer: Renderer) -> None:
    rendered = renderer.render(sample_digest())
    hrefs = [attrs.get("href") or "" for tag, attrs in parse_html(rendered.html).tags if tag == "a"]
    assert hrefs and all(h.startswith(("https://", "http://")) for h in hrefs)


def test_html_has_inlined_css_dark_mode_and_no_images(renderer: Renderer) -> None:
    rendered = renderer.render(sample_digest())
    page = parse_html(rendered.html)
    titles = [attrs for tag, attrs in page.tags if tag == "p" and attrs.get("class") == "title"]
    assert titles and all("font-size" in (attrs.get("style") or "") for attrs in titles)
    assert "prefers-color-scheme: dark" in rendered.html
    assert '<meta name="viewport"' in rendered.html
    assert not any(tag == "img" for tag, _ in page.tags)


def test_text_part_is_wrapped_and_holds_the_same_items(renderer: Renderer) -> None:
    long_title = "A very long title " * 8
    items = [
        DigestItem(paper(n, title=f"{long_title} {n}"), 1.0, "matched ti:title " * 10)
        for n in range(3)
    ]
    rendered = renderer.render(digest(*items))
    for line in rendered.text.splitlines():
        assert len(line) <= 72 or "://" in line.split()[-1], line
    assert all(len(line.encode()) < 998 for line in rendered.html.splitlines())
    assert [
        line[:4] for line in rendered.text.splitlines() if line[1:3] in (" 1", "1.", "2.", "3.")
    ]
    for n in range(3):
        assert f"https://arxiv.org/abs/2611.{n:05d}" in rendered.text
        assert f"https://arxiv.org/abs/2611.{n:05d}" in rendered.html
    assert " 1. A very long title" in rendered.text and " 3. A very long title" in rendered.text


def test_size_cap_drops_the_lowest_items_and_says_so() -> None:
    renderer = Renderer(options=RenderOptions(max_html_bytes=20_000, snippet_chars=2000))
    items = [
        DigestItem(paper(n, abstract="Long sentence here. " * 120), 1.0, "r") for n in range(40)
    ]
    trending = (DigestItem(paper(99), 0.0, "trending"),)
    rendered = renderer.render(digest(*items, trending=trending))
    assert len(rendered.html.encode()) <= 20_000
    shown = rendered.html.count('class="item"')
    assert 0 < shown < 40
    assert "Trending" not in rendered.html  # trending goes first
    assert f"{40 - shown} more matching papers did not fit in this email." in rendered.html
    assert f"{40 - shown} more matching papers did not fit in this email." in rendered.text
    assert f"{shown} new papers for" in rendered.html


def test_default_cap_holds_for_a_big_digest(renderer: Renderer) -> None:
    items = [DigestItem(paper(n, abstract="Sentence. " * 300), 1.0, "r" * 200) for n in range(200)]
    rendered = renderer.render(digest(*items))
    assert len(rendered.html.encode()) <= 100_000


def test_shared_papers_render_once_but_personal_parts_differ(renderer: Renderer) -> None:
    shared = paper(7)
    first = renderer.render(
        digest(DigestItem(shared, 1.0, "reason A", more_url="https://d.example/more/a"))
    )
    second = renderer.render(
        digest(
            DigestItem(paper(8), 1.0, "other"),
            DigestItem(shared, 1.0, "reason B", less_url="https://d.example/less/b"),
            recipient_name="Bob",
        )
    )
    assert "reason A" in first.html and "reason B" not in first.html
    assert "reason B" in second.html and "https://d.example/more/a" not in second.html
    assert "https://d.example/less/b" in second.text and "More like this" not in second.text
    assert " 2. Paper number 7" in second.text and " 1. Paper number 7" in first.text


def test_placeholders_cannot_be_forged_by_data(renderer: Renderer) -> None:
    item = DigestItem(
        paper(1, title="<!--pp:0--> \x000\x00 \ue001 \ue004\ue004"),
        1.0,
        reason="<!--pp:0--> \x000\x00",
    )
    rendered = renderer.render(digest(item, recipient_name="\ue001<!--pp:0-->"))
    assert rendered.html.count('class="item"') == 1
    assert "&lt;!--pp:0--&gt;" in rendered.html
    assert "\x00" not in rendered.text and "\ue001" not in rendered.html + rendered.text


SUBJECTS = [
    (
        "plural",
        2,
        "Short title",
        "Paperpost — 2 new papers for Monday 23 November 2026: Short title",
    ),
    (
        "singular",
        1,
        "Short title",
        "Paperpost — 1 new paper for Monday 23 November 2026: Short title",
    ),
    (
        "line-breaks-collapsed",
        1,
        "Broken\r\n  title\twith\u2028breaks",
        "Paperpost — 1 new paper for Monday 23 November 2026: Broken title with breaks",
    ),
]


@pytest.mark.parametrize(
    ("count", "title", "expected"),
    [(c, t, e) for _, c, t, e in SUBJECTS],
    ids=[i for i, *_ in SUBJECTS],
)
def test_subject(renderer: Renderer, count: int, title: str, expected: str) -> None:
    items = [DigestItem(paper(n, title=title), 1.0, "r") for n in range(count)]
    assert renderer.render(digest(*items)).subject == expected


def test_long_subjects_are_truncated_at_a_word(renderer: Renderer) -> None:
    subject = renderer.render(digest(DigestItem(paper(1, title="word " * 60), 1.0, "r"))).subject
    assert len(subject) <= 110 and subject.endswith("word…")


def test_empty_digest_says_so(renderer: Renderer) -> None:
    rendered = renderer.render(digest())
    assert "No new papers matched your interests this time." in rendered.html
    assert "No new papers matched your interests this time." in rendered.text
    assert rendered.subject == "Paperpost — 0 new papers for Monday 23 November 2026"


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, target)
    return target


BROKEN = [
    (
        "syntax",
        "_item.html.j2",
        "{% if item.reason %}\n<p>oops</p>\n",
        r"_item\.html\.j2:\d+: Unexpected end of template",
    ),
    (
        "undefined",
        "digest.txt.j2",
        "line one\n{{ digest.no_such_field }}\n",
        r"digest\.txt\.j2:2: UndefinedError",
    ),
    (
        "unknown-filter",
        "subject.txt.j2",
        "{{ list_name | nonsense }}\n",
        r"subject\.txt\.j2:1: No filter named 'nonsense'",
    ),
]


@pytest.mark.parametrize(
    ("name", "source", "match"), [(n, s, m) for _, n, s, m in BROKEN], ids=[i for i, *_ in BROKEN]
)
def test_check_names_the_broken_file_and_line(
    tmp_path: Path, name: str, source: str, match: str
) -> None:
    templates = copy_templates(tmp_path)
    (templates / name).write_text(source, encoding="utf-8")
    renderer = Renderer(template_dir=templates)
    with pytest.raises(TemplateError, match=match):
        renderer.check()


def test_missing_template_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"template directory .*nowhere does not exist"):
        Renderer(template_dir=tmp_path / "nowhere")


def test_operator_templates_override_file_by_file(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "subject.txt.j2").write_text("[{{ list_name }}] {{ count }} for {{ period_label }}\n")
    renderer = Renderer(template_dir=own)
    renderer.check()
    rendered = renderer.render(digest(DigestItem(paper(1), 1.0, "r")))
    assert rendered.subject == "[Paperpost] 1 for Monday 23 November 2026"
    assert 'class="item"' in rendered.html  # shipped shell and item templates still used
    assert renderer.template_dirs == (own, SHIPPED_TEMPLATES)


def test_render_options_are_validated() -> None:
    with pytest.raises(ValueError, match="render options out of range"):
        RenderOptions(snippet_chars=5)


def test_cached_shells_carry_each_readers_own_fields(renderer: Renderer) -> None:
    item = DigestItem(paper(3), 1.0, "r")
    ada = renderer.render(
        digest(item, recipient_name='Ada <b>&"', unsubscribe_url="https://d.example/u/a?x=1&y=2")
    )
    bob = renderer.render(
        digest(item, recipient_name="Bob", unsubscribe_url="https://d.example/u/b")
    )
    anonymous = renderer.render(digest(item, recipient_name=None, unsubscribe_url=None))
    assert "Hi Ada &lt;b&gt;&amp;&#34;," in ada.html and "Hi Bob" not in ada.html
    assert 'href="https://d.example/u/a?x=1&amp;y=2"' in ada.html
    assert "Hi Bob," in bob.html and "Hi Ada" not in bob.html
    assert 'href="https://d.example/u/b"' in bob.html and "/u/a" not in bob.html
    assert "Hi " not in anonymous.html and "Unsubscribe" not in anonymous.html
    for rendered in (ada, bob, anonymous):
        assert not any("\ue000" <= ch <= "\ue00f" for ch in rendered.html)
        assert "<!--pp:" not in rendered.html
        title = [
            a
            for t, a in parse_html(rendered.html).tags
            if t == "p" and a.get("class") == "greeting"
        ]
        assert all("margin" in (a.get("style") or "") for a in title)  # inlined styles kept


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"recipient_name": "Zoë " + "Ñandú-Quetzalcóatl " * 6},
        {"recipient_name": None},
        {"period_label": "the week of Monday 23 November to Sunday 29 November 2026, as planned"},
        {"list_name": "The lab's reading group — weekly papers for everyone in the building"},
        {"reason_for_receiving": "You receive this because " + "you asked for it, " * 10},
        {"unsubscribe_url": None, "reason_for_receiving": ""},
    ],
    ids=["plain", "long-name", "no-name", "long-period", "long-list", "long-reason", "bare"],
)
def test_cached_text_shell_wraps_each_readers_fields_as_a_fresh_render(
    changes: dict[str, object],
) -> None:
    """The text shell is cached with slot markers for the fields; the lines holding them
    are wrapped per reader, so the text is what wrapping a fresh render gives."""
    items = [DigestItem(paper(n), 1.0, "r") for n in range(3)]
    shared = Renderer()
    shared.render(digest(*items))  # the shell for this structure is now cached
    rendered = shared.render(digest(*items, **changes))
    fresh = Renderer().render(digest(*items, **changes))
    assert rendered.text == fresh.text
    lines = rendered.text.splitlines()
    assert max(len(line) for line in lines if "://" not in line) <= 72
    name = changes.get("recipient_name", "Ada")
    if isinstance(name, str):
        assert name.split()[0] in rendered.text
