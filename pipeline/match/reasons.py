"""The one-line reason of each selected item, memoised per (distinct rule, paper).

Format: ``; ``-separated parts, in this order, each present only when true::

    matched ti:diffusion, abs:RLHF     positive query terms found in the paper (at most N)
    by Y. LeCun                        followed authors, as the paper spells them
    in cs.LG                           the paper's categories that the profile follows
    similar to liked 2106.09685 (0.41) the liked paper closest to this one, and its cosine
    close to your about text (0.23)    when the about text is closer than any liked paper
    trending on Hugging Face (57 upvotes)

Rules are named by their row in ``RuleTables`` (an int), so memo keys are cheap ints.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.match.index import category_matches
from pipeline.match.period import Period
from pipeline.match.query import parse, positive_terms, to_string
from pipeline.match.tables import RuleTables, TextTables

__all__ = ["Reasons"]


class _Memo(dict[int, str]):
    """int key → reason text, computed by ``make`` on first use; -1 → ""."""

    def __init__(self, make: Callable[[int], str]) -> None:
        super().__init__({-1: ""})
        self.make = make

    def __missing__(self, key: int) -> str:
        found = self[key] = self.make(key)
        return found


class Reasons:
    """Reason parts keyed by ints (``rule · papers + paper``), so whole columns of
    keys turn into texts with ``map(memo.__getitem__, keys)`` at C speed."""

    def __init__(self, period: Period, rules: RuleTables, texts: TextTables, terms: int) -> None:
        self.period = period
        self.rules = rules
        self.texts = texts
        self.terms = terms
        self.n = max(period.n, 1)
        self.query_memo = _Memo(lambda key: self.query(*divmod(key, self.n)))
        self.authors_memo = _Memo(lambda key: self.authors(*divmod(key, self.n)))
        self.categories_memo = _Memo(lambda key: self.categories(*divmod(key, self.n)))
        self._liked: dict[tuple[int, float], str] = {}
        self._about: dict[float, str] = {}
        self._terms: dict[int, list[tuple[int, str]]] = {}
        self._category_hits: dict[tuple[str, str], bool] = {}

    def query(self, rule: int, paper: int) -> str:
        terms = self._terms.get(rule)
        if terms is None:
            index = self.period.index
            tree = parse(self.rules.queries[rule])
            terms = [(index.term(t), to_string(t)) for t in positive_terms(tree)]
            self._terms[rule] = terms
        hits = [shown for mask, shown in terms if mask >> paper & 1]
        unique = list(dict.fromkeys(hits))
        shown = ", ".join(unique[: self.terms])
        if len(unique) > self.terms:
            shown += f" (+{len(unique) - self.terms} more)"
        return f"matched {shown}" if unique else "matched the query"

    def authors(self, rule: int, paper: int) -> str:
        names = self.rules.author_lists[rule]
        return "by " + ", ".join(self.period.index.matched_authors(names, paper))

    def categories(self, rule: int, paper: int) -> str:
        """The paper's categories (as it spells them) that one of the patterns matches."""
        patterns = self.rules.category_lists[rule]
        index = self.period.index
        memo = self._category_hits
        found = []
        for raw, folded in zip(
            index.papers[paper].categories, index.categories[paper], strict=True
        ):
            for pattern in patterns:
                key = (pattern, folded)
                hit = memo.get(key)
                if hit is None:
                    hit = memo[key] = category_matches(pattern, folded)
                if hit:
                    found.append(raw)
                    break
        return "in " + ", ".join(found)

    # The cosine is shown to 2 decimals and memoised by that value, written from the
    # key (``+ 0.0`` turns −0.0 into 0.0): -0.001 and 0.001 share a key, so writing the
    # first value met would make the line depend on the other readers of the call.
    def liked(self, row: int, value: float) -> str:
        shown = round(value, 2) + 0.0
        key = (row, shown)
        found = self._liked.get(key)
        if found is None:
            found = f"similar to liked {self.texts.ids[row]} ({shown:.2f})"
            self._liked[key] = found
        return found

    def about(self, value: float) -> str:
        shown = round(value, 2) + 0.0
        found = self._about.get(shown)
        if found is None:
            found = f"close to your about text ({shown:.2f})"
            self._about[shown] = found
        return found

    @staticmethod
    def trending(upvotes: int) -> str:
        return f"trending on Hugging Face ({upvotes} upvotes)"
