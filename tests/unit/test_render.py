"""The renderer: escaping, links, sizes, subjects, the summary, ordinary Jinja, template errors."""

from __future__ import annotations

import dataclasses
import html.parser
import re
import shutil
from pathlib import Path

import pytest

from pipeline.domain import Digest, DigestItem, Paper
from pipeline.errors import TemplateError
from pipeline.render import Renderer, RenderOptions, sample_digest
from pipeline.render.environment import SHIPPED_TEMPLATES
from tests.factories import MONDAY_7AM as WHEN


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
    # The hostile links are gone; the arXiv id gives the abstract (title and link) and PDF.
    assert hrefs == [
        "https://arxiv.org/abs/2611.00001",
        "https://arxiv.org/abs/2611.00001",
        "https://arxiv.org/pdf/2611.00001",
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
    summary = [h for h in hrefs if h.startswith("#")]
    assert summary == ["#paper-1", "#paper-2", "#paper-3"]  # the summary at the top
    ids = [a.get("id") for t, a in parse_html(rendered.html).tags if a.get("class") == "item"]
    assert ids == ["paper-1", "paper-2", "paper-3"]  # ... links to the items below
    rest = [h for h in hrefs if not h.startswith("#")]
    assert rest and all(h.startswith(("https://", "http://")) for h in rest)


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


def test_tldr_is_the_sources_summary_when_present_else_the_first_sentence(
    renderer: Renderer,
) -> None:
    abstract = "We propose a method, e.g. for ranking. It works well. It is fast."
    own = paper(1, abstract=abstract, tldr="A ranking <b>method</b> that is fast &amp; good.")
    plain = paper(2, abstract=abstract)
    blank = paper(3, abstract=abstract, tldr=" <i></i> ")  # nothing left after cleaning
    rendered = renderer.render(
        digest(DigestItem(own, 1.0, "r"), DigestItem(plain, 0.9, "r"), DigestItem(blank, 0.8, "r"))
    )
    tldrs = re.findall(r'<p class="tldr"[^>]*><strong[^>]*>TL;DR</strong> (.*?)</p>', rendered.html)
    snippets = re.findall(r'<p class="snippet"[^>]*>(.*?)</p>', rendered.html)
    first = "We propose a method, e.g. for ranking."
    assert tldrs == ["A ranking method that is fast &amp; good.", first, first]
    # With the source's summary the abstract is shown from its start, else after the TL;DR.
    assert snippets == [abstract, "It works well. It is fast.", "It works well. It is fast."]
    text = [line.strip() for line in rendered.text.splitlines()]
    assert [line for line in text if line.startswith("TL;DR:")] == [
        "TL;DR: A ranking method that is fast & good.",
        f"TL;DR: {first}",
        f"TL;DR: {first}",
    ]
    assert abstract in text and "<b>" not in rendered.text


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


def test_shared_papers_carry_each_readers_personal_parts(renderer: Renderer) -> None:
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


def test_template_syntax_in_data_is_printed_not_run(renderer: Renderer) -> None:
    item = DigestItem(
        paper(1, title="{{ 7 * 7 }} {% if 1 %}x{% endif %}"), 1.0, reason="{{ 6 * 7 }}"
    )
    rendered = renderer.render(digest(item, recipient_name="{{ digest }}"))
    assert rendered.html.count('class="item"') == 1
    for part in (rendered.html, rendered.text):
        assert "{{ 7 * 7 }} {% if 1 %}x{% endif %}" in part and "{{ 6 * 7 }}" in part
        assert "49" not in part and "42" not in part and "Hi {{ digest }}," in part


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
    assert rendered.subject == "Paperpost — No new papers for Monday 23 November 2026"
    assert "In this digest" not in rendered.html and "IN THIS DIGEST" not in rendered.text


def test_subject_and_body_count_trending_and_never_say_zero(renderer: Renderer) -> None:
    trending = tuple(DigestItem(paper(n, upvotes=50 - n), 0.0, "trending") for n in range(4))
    only = renderer.render(digest(trending=trending))
    assert only.subject == (
        "Paperpost — 4 trending papers for Monday 23 November 2026: "
        "Paper number 0 about preference optimization"
    )
    for part in (only.html, only.text):
        assert "No new papers" not in part and "0 new papers" not in part
        assert "4 trending papers for Monday 23 November 2026" in part
    both = renderer.render(digest(DigestItem(paper(9), 1.0, "matched x"), trending=trending))
    assert both.subject.startswith("Paperpost — 5 new papers for Monday 23 November 2026: ")
    assert "▲ 50 upvotes" in both.html and "▲ 50 upvotes" in both.text


def test_preheader_and_numbered_summary_with_one_word_reasons(renderer: Renderer) -> None:
    items = [
        DigestItem(paper(1), 1.0, "matched ti:preference"),
        DigestItem(paper(2), 0.9, "by Ada Lovelace"),
        DigestItem(paper(3), 0.8, "similar to liked 2305.18290 (0.41)"),
    ]
    trending = (DigestItem(paper(4, upvotes=12), 0.0, "trending on Hugging Face (12 upvotes)"),)
    rendered = renderer.render(digest(*items, trending=trending))
    preheader = rendered.html.split('class="preheader"', 1)[1].split("</div>", 1)[0]
    assert "display:none" in preheader.replace(" ", "")
    assert "4 new papers for Monday 23 November 2026: Paper number 1" in preheader
    assert rendered.html.index('class="preheader"') < rendered.html.index('class="headline"')
    assert rendered.html.index('class="toc"') < rendered.html.index('id="paper-1"')
    text = rendered.text
    summary = text.split("IN THIS DIGEST\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.rsplit("[", 1)[1] for line in summary] == [
        "query]",
        "author]",
        "similar]",
        "trending]",
    ]
    assert summary[0].startswith(" 1. Paper number 1 ")


def test_many_matches_are_grouped_by_what_admitted_them(renderer: Renderer) -> None:
    reasons = ["matched ti:x", "by Alan Turing", "in cs.LG", "similar to liked 1 (0.5)"]
    items = [DigestItem(paper(n), 1.0 - n / 100, reasons[n % 4]) for n in range(8)]
    rendered = renderer.render(digest(*items))
    headings = ["YOUR QUERY", "YOUR AUTHORS", "YOUR CATEGORIES", "SIMILAR TO WHAT YOU LIKED"]
    positions = [rendered.text.index(h) for h in headings]
    assert positions == sorted(positions)
    # Numbered in the order shown: the query's papers (0 and 4) first.
    assert " 1. Paper number 0 " in rendered.text and " 2. Paper number 4 " in rendered.text
    few = renderer.render(digest(*items[:3]))
    assert "YOUR QUERY" not in few.text and "Your query" not in few.html


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"url": None, "pdf_url": None}, ["https://arxiv.org/abs/2611.00001", "PDF"]),
        (
            {"id": "doi:10.1000/x y", "url": None, "pdf_url": None},
            ["https://doi.org/10.1000/x%20y"],
        ),
        (
            {"id": "url:https://blog.example/post", "url": None, "pdf_url": None},
            ["https://blog.example/post"],
        ),
        (
            {"id": "sha:e711222a", "url": None, "pdf_url": None, "title": 'A "quoted" title'},
            [
                "Search arXiv for this title:",
                "https://arxiv.org/search/?query=%22A%20quoted%20title%22&searchtype=title",
            ],
        ),
    ],
    ids=["arxiv-id", "doi", "source-link", "title-search"],
)
def test_every_paper_has_a_link(
    renderer: Renderer, changes: dict[str, object], expected: list[str]
) -> None:
    rendered = renderer.render(digest(DigestItem(paper(1, **changes), 1.0, "r")))
    for needle in expected:
        assert needle in rendered.text
    hrefs = [a.get("href") or "" for t, a in parse_html(rendered.html).tags if t == "a"]
    assert any(h.startswith("https://") and "digest.lab.example" not in h for h in hrefs)


def test_operators_write_ordinary_jinja(tmp_path: Path) -> None:
    """Filters, loops over authors, conditions on values, macros: all work in an override
    (``_item.*.j2`` define the macro ``paper(item)`` that the shipped shells call)."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "_item.txt.j2").write_text(
        "{% macro name(n) %}<{{ n | upper }}>{% endmacro %}"
        "{% macro paper(item) %}"
        "{{ item.number }}) {{ item.paper.title | title }}\n"
        "{% for a in item.paper.author_names %}    {{ loop.index }}: {{ name(a) }}\n{% endfor %}"
        "{% if item.paper.upvotes and item.paper.upvotes > 10 %}"
        "    hot ({{ item.paper.upvotes }})\n"
        "{% endif %}{% if item.reason.startswith('matched') %}    query hit\n{% endif %}"
        "{% endmacro %}",
        encoding="utf-8",
    )
    (own / "_item.html.j2").write_text(
        '{% macro paper(item) %}<div class="item" id="{{ item.anchor }}">'
        "{% for a in item.paper.author_names | reverse %}<i>{{ a | lower }}</i>{% endfor %}"
        "{{ item.reason | replace('matched', 'found') }}</div>{% endmacro %}",
        encoding="utf-8",
    )
    renderer = Renderer(template_dir=own)
    renderer.check()
    rendered = renderer.render(
        digest(
            DigestItem(paper(1, upvotes=11), 1.0, "matched ti:x"), DigestItem(paper(2), 1.0, "r")
        )
    )
    assert "1) Paper Number 1 About Preference Optimization" in rendered.text
    assert "    1: <ADA LOVELACE>" in rendered.text and "    2: <ALAN TURING>" in rendered.text
    assert "    hot (11)" in rendered.text and rendered.text.count("query hit") == 1
    assert "<i>alan turing</i><i>ada lovelace</i>found ti:x" in rendered.html


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


def test_each_digest_carries_its_readers_own_fields(renderer: Renderer) -> None:
    item = DigestItem(paper(3), 1.0, "r")
    ada = renderer.render(
        digest(item, recipient_name='Ada <b>&"', unsubscribe_url="https://d.example/u/a?x=1&y=2")
    )
    bob = renderer.render(
        digest(item, recipient_name="Bob", unsubscribe_url="https://d.example/u/b")
    )
    anonymous = renderer.render(digest(item, recipient_name=None, unsubscribe_url=None))
    assert 'Hi Ada &lt;b&gt;&amp;",' in ada.html and "Hi Bob" not in ada.html
    assert 'href="https://d.example/u/a?x=1&amp;y=2"' in ada.html
    assert "Hi Bob," in bob.html and "Hi Ada" not in bob.html
    assert 'href="https://d.example/u/b"' in bob.html and "/u/a" not in bob.html
    assert "Hi " not in anonymous.html and "Unsubscribe" not in anonymous.html
    for rendered in (ada, bob, anonymous):
        assert "one click" not in rendered.html + rendered.text
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
def test_text_is_the_same_from_a_used_renderer_and_a_fresh_one(
    changes: dict[str, object],
) -> None:
    """The paper views are cached per run; a digest's text is what a fresh renderer gives."""
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


def test_memoised_details_match_a_template_without_memo(tmp_path: Path) -> None:
    """The shipped templates memoise a paper's details; rendering them directly gives the
    same digest, whichever readers' digests came before."""
    own = copy_templates(tmp_path)
    for name in ("_item.html.j2", "_item.txt.j2"):
        path = own / name
        source = path.read_text(encoding="utf-8")
        assert "memo(details, " in source
        path.write_text(
            source.replace("memo(details, item.paper)", "details(item.paper)").replace(
                "memo(details, p)", "details(p)"
            ),
            encoding="utf-8",
        )
    plain = Renderer(template_dir=own)
    memoised = Renderer()
    shared = paper(5, upvotes=3)
    for name in ("Ada", "Bob"):
        d = digest(
            DigestItem(shared, 1.0, f"by {name}", more_url=f"https://d.example/m/{name}"),
            DigestItem(paper(6), 0.5, "in cs.LG"),
            recipient_name=name,
        )
        assert memoised.render(d) == plain.render(d)
