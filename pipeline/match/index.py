"""The period index: the new papers of one period, searchable as bit sets.

Every rule (a query, a category list, a followed-author list) is evaluated once
per distinct value against all papers of the period at the same time. A result
is a Python ``int`` whose bit ``i`` is set when paper ``i`` matches, so ``AND``,
``OR`` and ``ANDNOT`` are single integer operations, and results are memoised
per distinct term, query and list. ``mask_to_bools`` turns a result into a numpy
row for the scoring matrices.

Field semantics (documented for operators in docs/matching.md):

- ``ti``/``abs``: a word matches its stem (``optimisation`` finds
  ``optimizations``); several words (quoted, or joined by hyphens) must appear
  consecutively; ``word*`` matches any word of the field starting with
  ``word``, as written (normalised but not stemmed).
- ``au``: one word matches any author name part or surname (``lecun``); a full
  name (quoted, ``Last_F`` or several words) uses ``pipeline.match.authors``.
- ``cat``: ``cs.LG`` is exact (case-insensitive), ``cs.*`` or ``cs`` a whole
  archive; cross-listed categories count.
- ``all``: ``ti`` or ``abs`` or ``au``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from functools import reduce
from operator import or_

import numpy as np
import numpy.typing as npt

from pipeline.domain import Paper
from pipeline.match.authors import Name, names_match, parse_name
from pipeline.match.query import And, AndNot, Node, Or, Term, parse
from pipeline.match.text import analyze, stem, words

__all__ = ["PeriodIndex", "category_matches", "mask_to_bools"]


def category_matches(pattern: str, category: str) -> bool:
    """``cs.LG`` exact, ``cs.*``/``cs*`` prefix, ``cs`` the archive; case-insensitive."""
    p, c = pattern.casefold(), category.casefold()
    if p.endswith("*"):
        return c.startswith(p[:-1])
    return c == p or c.startswith(p + ".")


def mask_to_bools(mask: int, n: int) -> npt.NDArray[np.bool_]:
    """Bit ``i`` of ``mask`` → element ``i`` of a bool array of length ``n``."""
    raw = np.frombuffer(mask.to_bytes((n + 7) // 8 or 1, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


class _FieldIndex:
    """Stems → bit set, surface words (sorted) → bit set, and stem sequences for phrases."""

    def __init__(self, docs: Sequence[list[str]]) -> None:
        self.sequences: list[list[str]] = []
        self.stems: dict[str, int] = {}
        surface: dict[str, int] = {}
        for i, doc in enumerate(docs):
            bit = 1 << i
            self.sequences.append([stem(w) for w in doc])
            for w in set(doc):
                surface[w] = surface.get(w, 0) | bit
            for s in set(self.sequences[-1]):
                self.stems[s] = self.stems.get(s, 0) | bit
        self.surface = surface
        self.sorted_surface = sorted(surface)
        self.joined = [f" {' '.join(seq)} " for seq in self.sequences]

    def word(self, stems: list[str]) -> int:
        mask = reduce(
            lambda acc, s: acc & self.stems.get(s, 0), stems[1:], self.stems.get(stems[0], 0)
        )
        if len(stems) == 1 or not mask:
            return mask
        # stems contain no spaces: a phrase is a substring of the space-joined stems
        needle = f" {' '.join(stems)} "
        hits = 0
        for i in _bits(mask):
            if needle in self.joined[i]:
                hits |= 1 << i
        return hits

    def prefix(self, prefix: str) -> int:
        start = bisect.bisect_left(self.sorted_surface, prefix)
        mask = 0
        for w in self.sorted_surface[start:]:
            if not w.startswith(prefix):
                break
            mask |= self.surface[w]
        return mask


def _bits(mask: int) -> Iterable[int]:
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


class PeriodIndex:
    """All papers of one period, indexed for bit-set evaluation of rules."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = list(papers)
        self.n = len(self.papers)
        self.title_words = [words(p.title) for p in self.papers]
        self.abstract_words = [words(p.abstract) for p in self.papers]
        self.title = _FieldIndex(self.title_words)
        self.abstract = _FieldIndex(self.abstract_words)
        self.authors: list[list[Name]] = [[parse_name(a) for a in p.authors] for p in self.papers]
        author_docs = []
        for names in self.authors:
            doc: list[str] = []
            for name in names:
                doc.extend(name.given)
                doc.append(name.surname)
            author_docs.append(doc)
        self.author_words = _FieldIndex(author_docs)
        self.by_surname: dict[str, list[tuple[int, Name]]] = {}
        for i, names in enumerate(self.authors):
            for name in names:
                self.by_surname.setdefault(name.surname, []).append((i, name))
        self.categories: list[tuple[str, ...]] = [
            tuple(c.casefold() for c in p.categories) for p in self.papers
        ]
        self._by_category: dict[str, int] = {}
        for i, folded in enumerate(self.categories):
            for c in folded:
                self._by_category[c] = self._by_category.get(c, 0) | (1 << i)
        self._term_memo: dict[Term, int] = {}
        self._query_memo: dict[str, int] = {}
        self._cat_memo: dict[str, int] = {}
        self._authors_memo: dict[str, int] = {}

    # --- queries -----------------------------------------------------------------------

    def query(self, text: str) -> int:
        """Bit set of the papers matching query ``text`` (memoised per text)."""
        mask = self._query_memo.get(text)
        if mask is None:
            mask = self.evaluate(parse(text))
            self._query_memo[text] = mask
        return mask

    def evaluate(self, node: Node) -> int:
        if isinstance(node, Term):
            return self.term(node)
        left, right = self.evaluate(node.left), self.evaluate(node.right)
        if isinstance(node, And):
            return left & right
        if isinstance(node, AndNot):
            return left & ~right
        assert isinstance(node, Or)
        return left | right

    def term(self, term: Term) -> int:
        mask = self._term_memo.get(term)
        if mask is None:
            mask = self._term(term)
            self._term_memo[term] = mask
        return mask

    def _term(self, term: Term) -> int:
        if term.field == "cat":
            return self.category(term.text + ("*" if term.wildcard else ""))
        if term.field == "au":
            return self._author_term(term)
        text_mask = self._text_term(term)
        if term.field == "all":
            return text_mask | self._author_term(term)
        return text_mask

    def _text_term(self, term: Term) -> int:
        fields = {"ti": [self.title], "abs": [self.abstract], "all": [self.title, self.abstract]}
        chosen = fields.get(term.field, [])
        if term.wildcard:
            prefix = words(term.text)[0]
            return reduce(or_, (f.prefix(prefix) for f in chosen), 0)
        stems = analyze(term.text)
        return reduce(or_, (f.word(stems) for f in chosen), 0)

    def _author_term(self, term: Term) -> int:
        parts = words(term.text)
        if term.wildcard:
            return self.author_words.prefix(parts[0])
        if len(parts) == 1 and not term.quoted and "_" not in term.text:
            return self.author_words.surface.get(parts[0], 0)
        return self.author(term.text)

    # --- categories and authors ---------------------------------------------------------

    def category(self, pattern: str) -> int:
        """Bit set of the papers with a category matching ``pattern`` (any, not only primary)."""
        mask = self._cat_memo.get(pattern)
        if mask is None:
            mask = 0
            for category, bits in self._by_category.items():
                if category_matches(pattern, category):
                    mask |= bits
            self._cat_memo[pattern] = mask
        return mask

    def author(self, raw: str) -> int:
        """Bit set of the papers with an author matching the followed name ``raw``."""
        mask = self._authors_memo.get(raw)
        if mask is None:
            mask = 0
            followed = parse_name(raw)
            keys = {followed.surname}
            if followed.reversed is not None:
                keys.add(followed.reversed.surname)
            for key in keys:
                for i, name in self.by_surname.get(key, ()):
                    if names_match(followed, name):
                        mask |= 1 << i
            self._authors_memo[raw] = mask
        return mask

    def matched_authors(self, followed: Sequence[str], i: int) -> list[str]:
        """The paper's own spellings of the followed authors found on paper ``i``."""
        wanted = [parse_name(f) for f in followed]
        return [
            raw
            for raw, name in zip(self.papers[i].authors, self.authors[i], strict=True)
            if any(names_match(w, name) for w in wanted)
        ]
