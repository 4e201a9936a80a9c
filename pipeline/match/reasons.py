"""The one-line reason of each selected item, memoised per (rule, paper).

Format: ``; ``-separated parts, in this order, each present only when true::

    matched ti:diffusion, abs:RLHF     positive query terms found in the paper (at most N)
    by Y. LeCun                        followed authors, as the paper spells them
    in cs.LG                           the paper's categories that the profile follows
    similar to liked 2106.09685 (0.41) the liked paper closest to this one, and its cosine
    close to your about text (0.23)    when the about text is closer than any liked paper
    trending on Hugging Face (57 upvotes)
"""

from __future__ import annotations

from pipeline.match.period import Components, Period
from pipeline.match.query import Term, parse, positive_terms, to_string

__all__ = ["Reasons"]


class Reasons:
    def __init__(self, period: Period, components: Components, terms: int) -> None:
        self.period = period
        self.components = components
        self.terms = terms
        self._memo: dict[tuple[object, ...], str] = {}
        self._terms: dict[str, list[tuple[Term, str]]] = {}

    def query(self, text: str, paper: int) -> str:
        key = ("q", text, paper)
        found = self._memo.get(key)
        if found is None:
            index = self.period.index
            terms = self._terms.get(text)
            if terms is None:
                terms = [(t, to_string(t)) for t in positive_terms(parse(text))]
                self._terms[text] = terms
            hits = [shown for t, shown in terms if index.term(t) >> paper & 1]
            unique = list(dict.fromkeys(hits))
            shown = ", ".join(unique[: self.terms])
            if len(unique) > self.terms:
                shown += f" (+{len(unique) - self.terms} more)"
            found = f"matched {shown}" if unique else "matched the query"
            self._memo[key] = found
        return found

    def authors(self, names: tuple[str, ...], paper: int) -> str:
        key = ("a", names, paper)
        found = self._memo.get(key)
        if found is None:
            found = "by " + ", ".join(self.period.index.matched_authors(names, paper))
            self._memo[key] = found
        return found

    def categories(self, patterns: tuple[str, ...], paper: int) -> str:
        key = ("c", patterns, paper)
        found = self._memo.get(key)
        if found is None:
            found = "in " + ", ".join(self.period.index.matched_categories(patterns, paper))
            self._memo[key] = found
        return found

    def liked(self, row: int, value: float) -> str:
        key = ("l", row, round(value, 2))
        found = self._memo.get(key)
        if found is None:
            found = f"similar to liked {self.components.ids[row]} ({value:.2f})"
            self._memo[key] = found
        return found

    def about(self, value: float) -> str:
        key = ("b", round(value, 2))
        found = self._memo.get(key)
        if found is None:
            found = f"close to your about text ({value:.2f})"
            self._memo[key] = found
        return found

    @staticmethod
    def trending(upvotes: int) -> str:
        return f"trending on Hugging Face ({upvotes} upvotes)"
