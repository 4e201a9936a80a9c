"""Render one digest into subject, HTML (CSS inlined, size-capped) and text (72 columns).

Speed comes from rendering each paper once per run. ``_item.html.j2`` and
``_item.txt.j2`` are rendered per (paper, shape), where the shape says which
personal parts the entry has (a reason, a "more" link, a "less" link), with
the personal values replaced by private-use slot marker characters. The HTML
is CSS-inlined and the text wrapped at that point, and the result cached. Per
digest, each entry is the cached chunk with its slot markers replaced by the
escaped personal values (and the few text lines holding them re-wrapped).
The small shells (header, section titles, footer) go through Jinja (and the
HTML one through css-inline) once per structure: which text fields are
empty, the counts, the sections and ``extra``; the fields themselves are
slot markers there too, so shell templates may print the text fields and
test them for presence, nothing more. The shells carry slots where the
entries go; HTML slots are comments (autoescaping turns any ``<`` from data
into ``&lt;``) and text slots use NUL, so data cannot forge either. Cleaning
removes the slot marker characters and NUL from every value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import css_inline
import jinja2
from markupsafe import Markup, escape

from pipeline.domain import Digest, DigestItem, Paper, RenderedDigest
from pipeline.errors import TemplateError
from pipeline.render.environment import REQUIRED_TEMPLATES, TemplateSet
from pipeline.render.pieces import (
    FIELD_SENTINELS,
    LESS,
    MORE,
    NUMBER,
    REASON,
    SUBJECT,
    Entry,
    EntryChunk,
    Shell,
    TextShell,
    compile_chunk,
    compile_shell,
    compile_text_shell,
    fill_entry,
    fill_shell,
    fill_text_shell,
)
from pipeline.render.sample import sample_digest
from pipeline.render.text import clean_text, collapse_whitespace, safe_url, truncate, wrap_text
from pipeline.render.views import DigestView, ItemView, Section, digest_view, paper_view

__all__ = ["RenderOptions", "Renderer"]

Shape = tuple[bool, bool, bool]  # has reason, has "more" link, has "less" link
# Which text fields are present, count, trending count, omitted, extra, has a subject.
ShellKey = tuple[tuple[bool, ...], int, int, int, tuple[tuple[str, str], ...], bool]


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Rendering knobs (``[render]`` in the config)."""

    snippet_chars: int = 400  # abstract snippet, cut at a sentence boundary
    max_html_bytes: int = 100_000  # Gmail clips messages over 102 KB
    max_authors: int = 3  # "A, B, C … +12"
    text_width: int = 72
    subject_max_chars: int = 110
    fragment_cache_size: int = 20_000  # (paper, shape) chunks kept per run

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
        self._chunks: dict[tuple[Paper, Shape], EntryChunk] = {}
        self._by_identity: dict[tuple[int, Shape], tuple[Paper, EntryChunk]] = {}
        self._shells: dict[ShellKey, Shell] = {}
        self._text_shells: dict[ShellKey, TextShell] = {}
        self._slots: dict[tuple[int, bool], list[Markup]] = {}
        self._subjects: dict[tuple[str, str, int, str], str] = {}

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        return self._templates.search_path

    def check(self) -> None:
        """Compile every template and render a sample digest; raise ``TemplateError`` if broken."""
        for name in REQUIRED_TEMPLATES:
            if name.endswith(".j2"):
                self._templates.get(name)
        self._stylesheet()
        self._clear()
        self.render(sample_digest())
        self._clear()

    def render(self, digest: Digest) -> RenderedDigest:
        """Subject, HTML (CSS inlined, under ``max_html_bytes``) and text for one digest."""
        try:
            return self._render(digest)
        except jinja2.TemplateError as exc:
            raise TemplateError(self._describe(exc)) from exc
        except css_inline.InlineError as exc:
            raise TemplateError(f"CSS inlining failed ({self.template_dirs[0]}): {exc}") from exc

    def _render(self, digest: Digest) -> RenderedDigest:
        items = [self._entry(item, n) for n, item in enumerate(digest.items, 1)]
        trending = [self._entry(item, n) for n, item in enumerate(digest.trending, 1)]
        omitted = 0
        while True:
            view = digest_view(
                digest, count=len(items), trending_count=len(trending), omitted=omitted
            )
            subject = self._subject(view.list_name, view.period_label, digest.items, len(items))
            entries = [*items, *trending]
            fields = [_escape(getattr(view, name) or "") for name, _ in FIELD_SENTINELS]
            fields.append(_escape(clean_text(subject)))
            html, size = fill_shell(self._html_shell(view, subject), entries, fields)
            over = size - self._options.max_html_bytes
            if over <= 0:
                text = self._text(view, entries, subject)
                return RenderedDigest(subject=subject, html=html, text=text)
            if not items and not trending:
                raise TemplateError(
                    f"the digest without any paper is {size} bytes, over max_html_bytes "
                    f"({self._options.max_html_bytes}); shorten the templates in "
                    f"{self.template_dirs[0]}"
                )
            # Drop trending first, then the lowest-ranked matches, until the estimate fits.
            while over > 0 and (items or trending):
                if trending:
                    dropped = trending.pop()
                else:
                    dropped = items.pop()
                    omitted += 1
                over -= dropped.size

    def _sections(self, view: DigestView, html: bool) -> list[Section]:
        # Slots are built from ints, never from data, and reused across digests.
        marks = self._slots.get((view.count + view.trending_count, html))
        if marks is None:
            slot = "<!--pp:{}-->" if html else "\x00{}\x00"
            count = view.count + view.trending_count
            marks = [Markup(slot.format(k)) for k in range(count)]  # noqa: S704
            self._slots[(count, html)] = marks
        result = [Section("", marks[: view.count], view.omitted)]
        if view.trending_count:
            result.append(Section("Trending", marks[view.count :]))
        return result

    def _text(self, view: DigestView, entries: list[Entry], subject: str) -> str:
        """The text part: the cached text shell filled with this digest's fields and entries.

        Cached like the HTML shell (see ``_html_shell``), by the same key; the
        lines holding text fields are wrapped per digest, the rest once.
        """
        key = self._shell_key(view, subject)
        shell = self._text_shells.get(key)
        if shell is None:
            markers = self._field_markers(key[0])
            document = self._templates.get("digest.txt.j2").render(
                digest=replace(view, **markers),
                sections=self._sections(view, html=False),
                subject=SUBJECT if subject else "",
            )
            shell = compile_text_shell(document, self._options.text_width)
            if len(self._text_shells) >= 1024:
                self._text_shells.clear()
            self._text_shells[key] = shell
        fields = [getattr(view, name) or "" for name, _ in FIELD_SENTINELS]
        fields.append(clean_text(subject))
        return fill_text_shell(shell, entries, fields, self._options.text_width)

    def _shell_key(self, view: DigestView, subject: str) -> ShellKey:
        """What can change a shell's structure: which fields are empty, counts, sections, extra."""
        present = tuple(bool(getattr(view, name)) for name, _ in FIELD_SENTINELS)
        extra = tuple(sorted(view.extra.items()))
        return (present, view.count, view.trending_count, view.omitted, extra, bool(subject))

    @staticmethod
    def _field_markers(present: tuple[bool, ...]) -> dict[str, Any]:
        return {
            name: sentinel
            for (name, sentinel), on in zip(FIELD_SENTINELS, present, strict=True)
            if on
        }

    def _html_shell(self, view: DigestView, subject: str) -> Shell:
        """The CSS-inlined HTML shell with slots for the entries and the digest's text fields.

        Inlining the shell is the costliest step of a render, and shells differ
        mostly in those text fields, so the inlined result is cached by what
        can change its structure: which fields are empty, the counts, the
        sections and ``extra``. Shell templates may print the text fields and
        test them for presence; the counts behave normally.
        """
        key = self._shell_key(view, subject)
        cached = self._shells.get(key)
        if cached is not None:
            return cached
        markers = self._field_markers(key[0])
        document = self._templates.get("digest.html.j2").render(
            digest=replace(view, **markers),
            sections=self._sections(view, html=True),
            subject=SUBJECT if subject else "",
            css=Markup(self._stylesheet()),  # noqa: S704 -- the operator's stylesheet, not data
        )
        shell = compile_shell(self._inliner.inline(document))
        if len(self._shells) >= 1024:
            self._shells.clear()
        self._shells[key] = shell
        return shell

    def _subject(
        self, list_name: str, period_label: str, items: tuple[DigestItem, ...], count: int
    ) -> str:
        # Titles are hostile. Whitespace (CR, LF, tabs ...) collapses here, and a title
        # that would still be refused in a header (other controls, RFC 2047
        # encoded-words) is passed over for the next one, so one hostile feed entry
        # cannot block every digest it tops. build_message checks the result again.
        top_title = next((i.paper.title for i in items[:count] if _fits_subject(i.paper.title)), "")
        key = (list_name, period_label, count, top_title)
        subject = self._subjects.get(key)
        if subject is None:
            line = self._templates.get("subject.txt.j2").render(
                list_name=list_name,
                period_label=period_label,
                count=count,
                top_title=collapse_whitespace(top_title),
            )
            subject = truncate(collapse_whitespace(line), self._options.subject_max_chars)
            if len(self._subjects) >= 4096:
                self._subjects.clear()
            self._subjects[key] = subject
        return subject

    def _entry(self, item: DigestItem, number: int) -> Entry:
        reason = clean_text(item.reason)
        more, less = safe_url(item.more_url), safe_url(item.less_url)
        chunk = self._chunk(item.paper, (bool(reason), more is not None, less is not None))
        more, less = more or "", less or ""
        return fill_entry(
            chunk,
            number,
            (reason, more, less),
            (_escape(reason), _escape(more), _escape(less)),
            self._options.text_width,
        )

    def _chunk(self, paper: Paper, shape: Shape) -> EntryChunk:
        # Papers are usually the very same objects across a run's digests: look them
        # up by identity first (hashing a Paper hashes all its fields).
        fast = self._by_identity.get((id(paper), shape))
        if fast is not None and fast[0] is paper:
            return fast[1]
        key = (paper, shape)
        cached = self._chunks.get(key)
        if cached is not None:
            self._by_identity[(id(paper), shape)] = (paper, cached)
            return cached
        view = ItemView(
            paper=paper_view(
                paper,
                snippet_chars=self._options.snippet_chars,
                max_authors=self._options.max_authors,
            ),
            number=NUMBER,
            reason=REASON if shape[0] else "",
            more_url=MORE if shape[1] else None,
            less_url=LESS if shape[2] else None,
        )
        html = self._inliner.inline_fragment(
            self._templates.get("_item.html.j2").render(item=view), self._stylesheet()
        )
        raw_text = self._templates.get("_item.txt.j2").render(item=view).strip("\n")
        # Wrap with a real-looking number so "NN. " gets its hanging indent.
        wrapped = wrap_text(raw_text.replace(NUMBER, "00", 1), self._options.text_width)
        chunk = compile_chunk(html.strip(), wrapped.replace("00", NUMBER, 1).split("\n"))
        if len(self._chunks) >= self._options.fragment_cache_size:
            self._chunks.clear()
            self._by_identity.clear()
        self._chunks[key] = chunk
        self._by_identity[(id(paper), shape)] = (paper, chunk)
        return chunk

    def _clear(self) -> None:
        self._chunks.clear()
        self._by_identity.clear()
        self._shells.clear()
        self._text_shells.clear()
        self._subjects.clear()
        self._slots.clear()

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


_UNFIT_FOR_SUBJECT = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]|=\\?.*\\?=", re.DOTALL)


def _fits_subject(title: str) -> bool:
    """Whether ``title``, once whitespace is collapsed, is fit for a Subject header."""
    return _UNFIT_FOR_SUBJECT.search(title) is None


def _escape(value: str) -> str:
    if "&" in value or "<" in value or ">" in value or '"' in value or "'" in value:
        return str(escape(value))
    return value


def _template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    found: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
