"""Render one digest into subject, HTML (CSS inlined, size-capped) and text (72 columns).

Templates are ordinary Jinja: each digest is one render of ``digest.html.j2`` and
one of ``digest.txt.j2`` with the real values, so an operator's template may use any
filter, loop or condition. The shipped shells include ``_item.*.j2`` once per paper.
The HTML is then CSS-inlined (css-inline) and the text wrapped.

Caches, all of pure functions: the per-paper view (cleaning, links, TL;DR, snippet),
kept by the paper object's identity (a run's digests share the same Paper objects);
the wrapping of long text lines, kept by the line (a paper's lines recur in every
digest that lists it); and ``memo(macro, *args)``, which templates may call to render
a macro once per distinct arguments (the shipped ones do for a paper's details).
Nothing restricts what a template may do. bench/E2E.md has the cost per digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import css_inline
import jinja2
from markupsafe import Markup

from pipeline.domain import Digest, DigestItem, Paper, RenderedDigest
from pipeline.errors import TemplateError
from pipeline.render.environment import REQUIRED_TEMPLATES, TemplateSet
from pipeline.render.sample import sample_digest
from pipeline.render.text import clean_text, collapse_whitespace, truncate, wrap_text
from pipeline.render.views import (
    GROUP_TITLES,
    DigestView,
    ItemView,
    PaperView,
    Section,
    digest_view,
    item_view,
    paper_view,
    reason_kind,
)

__all__ = ["RenderOptions", "Renderer"]


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Rendering knobs (``[render]`` in the config)."""

    snippet_chars: int = 400  # abstract snippet, cut at a sentence boundary
    max_html_bytes: int = 100_000  # Gmail clips messages over 102 KB
    max_authors: int = 3  # "A, B, C … +12"
    text_width: int = 72
    subject_max_chars: int = 110
    fragment_cache_size: int = 20_000  # paper views kept per run
    group_from: int = 6  # matches in a digest from which they are grouped by what admitted them

    def __post_init__(self) -> None:
        if self.snippet_chars < 40 or self.max_html_bytes < 5_000 or self.text_width < 40:
            raise ValueError(
                "render options out of range: snippet_chars >= 40, "
                "max_html_bytes >= 5000, text_width >= 40"
            )


class Renderer:
    """Jinja2 templates (autoescape, StrictUndefined) from ``templates/`` or the operator's dir.

    An operator directory overrides the shipped templates file by file; any
    file it lacks falls back to the shipped one.
    """

    def __init__(
        self, template_dir: Path | None = None, options: RenderOptions = RenderOptions()
    ) -> None:
        self._options = options
        self._templates = TemplateSet(template_dir)
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=True, load_remote_stylesheets=False, minify_css=True
        )
        self._css: str | None = None
        self._papers: dict[int, tuple[Paper, PaperView]] = {}
        self._memo = Memo(options.fragment_cache_size)
        self._templates.set_global("memo", self._memo)
        self._wrapped: dict[str, str] = {}  # long text line -> wrapped at text_width

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        return self._templates.search_path

    def check(self) -> str:
        """Compile every template and render a sample digest (pipeline/render/sample.py);
        raise ``TemplateError`` naming the file and line if one is broken. Returns a
        summary line for ``paperpost check``."""
        for name in REQUIRED_TEMPLATES:
            if name.endswith(".j2"):
                self._templates.get(name)
        self._stylesheet()
        self._clear()
        self.render(sample_digest())
        self._clear()
        dirs = self.template_dirs
        own = f"{dirs[0]}, then the shipped ones" if len(dirs) > 1 else f"shipped ({dirs[0]})"
        return f"templates: {own}; the sample digest renders"

    def _clear(self) -> None:
        self._papers.clear()
        self._wrapped.clear()
        self._memo.clear()

    def render(self, digest: Digest) -> RenderedDigest:
        """Subject, HTML (CSS inlined, under ``max_html_bytes``) and text for one digest."""
        try:
            return self._render(digest)
        except jinja2.TemplateError as exc:
            raise TemplateError(self._describe(exc)) from exc
        except css_inline.InlineError as exc:
            raise TemplateError(f"CSS inlining failed ({self.template_dirs[0]}): {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # Raised inside a template ({{ 1 // 0 }}, a format filter given a string):
            # named by file and line like a Jinja error. Elsewhere, a bug: raised as is.
            location = _template_frame(exc.__traceback__)
            if location is None:
                raise
            raise TemplateError(
                f"{location[0]}:{location[1]}: {exc.__class__.__name__}: {exc}"
            ) from exc

    def _render(self, digest: Digest) -> RenderedDigest:
        self._memo.trim()
        matched = [(item, self._paper(item.paper)) for item in digest.items]
        trending = [(item, self._paper(item.paper)) for item in digest.trending]
        omitted = 0
        while True:
            view, sections, summary = self._layout(digest, matched, trending, omitted)
            subject = self._subject(view, summary)
            html = self._html(view, sections, summary, subject)
            size = len(html.encode("utf-8"))
            over = size - self._options.max_html_bytes
            if over <= 0:
                text = self._text(view, sections, summary, subject)
                return RenderedDigest(subject=subject, html=html, text=text)
            if not summary:
                raise TemplateError(
                    f"the digest without any paper is {size} bytes, over max_html_bytes "
                    f"({self._options.max_html_bytes}); shorten the templates in "
                    f"{self.template_dirs[0]}"
                )
            # Drop trending first, then the lowest-ranked matches. Each paper is taken to
            # cost the page's average (an overestimate, as the shell counts too), so this
            # never drops more than needed; another round drops more if still over.
            drop = max(1, -(-over * len(summary) // size))
            while drop and (matched or trending):
                if trending:
                    trending.pop()
                else:
                    matched.pop()
                    omitted += 1
                drop -= 1

    def _layout(
        self,
        digest: Digest,
        matched: Sequence[tuple[DigestItem, PaperView]],
        trending: Sequence[tuple[DigestItem, PaperView]],
        omitted: int,
    ) -> tuple[DigestView, list[Section], list[ItemView]]:
        """The sections in display order, numbered 1, 2 ... across them, and the summary."""
        groups: dict[str, list[tuple[DigestItem, PaperView]]] = {}
        for item, paper in matched:
            groups.setdefault(reason_kind(clean_text(item.reason)), []).append((item, paper))
        grouped = len(matched) >= self._options.group_from and len(groups) > 1
        if grouped:
            order = [k for k in GROUP_TITLES if k in groups]
            parts = [(GROUP_TITLES[k], groups[k]) for k in order]
        else:
            parts = [("", list(matched))]
        sections: list[Section] = []
        summary: list[ItemView] = []
        for title, entries in parts:
            items = [item_view(i, p, len(summary) + n) for n, (i, p) in enumerate(entries, 1)]
            summary.extend(items)
            sections.append(Section(title, items))
        if omitted:
            last = sections[-1]
            sections[-1] = Section(last.title, last.items, omitted)
        if trending:
            items = [
                item_view(i, p, len(summary) + n, trending=True)
                for n, (i, p) in enumerate(trending, 1)
            ]
            summary.extend(items)
            sections.append(Section("Trending", items))
        view = digest_view(
            digest,
            count=len(matched),
            trending_count=len(trending),
            omitted=omitted,
            titles=[i.paper.title for i in summary],
        )
        return view, sections, summary

    def _html(
        self, view: DigestView, sections: list[Section], summary: list[ItemView], subject: str
    ) -> str:
        document = self._templates.get("digest.html.j2").render(
            digest=view,
            sections=sections,
            summary=summary,
            subject=subject,
            css=Markup(self._stylesheet()),  # noqa: S704 -- the operator's stylesheet, not data
        )
        html = self._inliner.inline(document)
        return html if html.endswith("\n") else html + "\n"

    def _text(
        self, view: DigestView, sections: list[Section], summary: list[ItemView], subject: str
    ) -> str:
        document = self._templates.get("digest.txt.j2").render(
            digest=view, sections=sections, summary=summary, subject=subject
        )
        width = self._options.text_width
        wrapped = self._wrapped
        out = []
        for line in document.strip("\n").split("\n"):
            if len(line) > width:
                # A paper's long lines recur in every digest that lists it: wrap each once.
                found = wrapped.get(line)
                if found is None:
                    if len(wrapped) >= self._options.fragment_cache_size:
                        wrapped.clear()
                    found = wrapped[line] = wrap_text(line, width)
                line = found
            out.append(line.rstrip())
        return "\n".join(out) + "\n"

    def _subject(self, view: DigestView, summary: list[ItemView]) -> str:
        # Titles are hostile. Whitespace (CR, LF, tabs ...) collapses here, and a title
        # that would still be refused in a header (other controls, RFC 2047
        # encoded-words) is passed over for the next one, so one hostile feed entry
        # cannot block every digest it tops. build_message checks the result again.
        top_title = next((i.paper.title for i in summary if _fits_subject(i.paper.title)), "")
        line = self._templates.get("subject.txt.j2").render(
            list_name=view.list_name,
            period_label=view.period_label,
            count=view.total,
            matched=view.count,
            trending=view.trending_count,
            headline=view.headline,
            top_title=collapse_whitespace(top_title),
        )
        return truncate(collapse_whitespace(line), self._options.subject_max_chars)

    def _paper(self, paper: Paper) -> PaperView:
        # Papers are usually the very same objects across a run's digests: look them
        # up by identity (hashing a Paper hashes all its fields); the stored paper keeps
        # the id from being reused while its entry lives.
        found = self._papers.get(id(paper))
        if found is not None and found[0] is paper:
            return found[1]
        view = paper_view(
            paper, snippet_chars=self._options.snippet_chars, max_authors=self._options.max_authors
        )
        if len(self._papers) >= self._options.fragment_cache_size:
            self._papers.clear()
        self._papers[id(paper)] = (paper, view)
        return view

    def _stylesheet(self) -> str:
        if self._css is None:
            self._css = self._templates.source("digest.css")
        return self._css

    def _describe(self, exc: jinja2.TemplateError) -> str:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            where = exc.filename or exc.name or "template"
            return f"{where}:{exc.lineno}: {exc.message}"
        location = _template_frame(exc.__traceback__)
        where = f"{location[0]}:{location[1]}" if location else str(self.template_dirs[0])
        return f"{where}: {exc.__class__.__name__}: {exc}"


class Memo:
    """The templates' ``memo(macro, *args)``: the macro's output for these arguments,
    rendered once per run and then reused.

    The output is the macro's own, unchanged: filters, tests and the document's CSS
    inlining see what a direct call would give. Correct for a macro whose output
    depends on its arguments alone, which is what a macro in a template imported
    without context sees (its arguments and the environment's globals), unless it draws
    random values. Arguments that cannot be hashed (a list) call the macro every time.
    The shipped ``_item.*.j2`` memoise a paper's details (authors, categories, TL;DR,
    links), the same for every reader; the number, reason and feedback links are
    rendered per digest.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._outputs: dict[tuple[object, ...], object] = {}

    def __call__(self, macro: Callable[..., object], *args: object) -> object:
        key = (macro, *args)
        try:
            found = self._outputs.get(key)
        except TypeError:  # an unhashable argument: no caching, same output
            return macro(*args)
        if found is None:
            found = self._outputs[key] = macro(*args)
        return found

    def trim(self) -> None:
        """Start afresh when full; called between digests, never during one."""
        if len(self._outputs) >= self._size:
            self.clear()

    def clear(self) -> None:
        self._outputs.clear()


_UNFIT_FOR_SUBJECT = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]|=\\?.*\\?=", re.DOTALL)


def _fits_subject(title: str) -> bool:
    """Whether ``title``, once whitespace is collapsed, is fit for a Subject header."""
    return _UNFIT_FOR_SUBJECT.search(title) is None


def _template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    found: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
