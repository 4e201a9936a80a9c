"""Author names: parsing and tolerant matching.

A followed author matches a paper author when the surnames agree and the given
names are compatible:

- diacritics and case never matter (``Schölkopf`` = ``Scholkopf``);
- ``Last, First`` and arXiv's ``Last_F`` forms are understood;
- particles join the surname (``Yann Le Cun`` = ``Yann LeCun``);
- given names are compatible when their first given names agree on the first
  letter and one is an initial or a prefix of the other (``Y. LeCun`` =
  ``Yann LeCun``; ``Ben`` = ``Benjamin``; ``Yann`` ≠ ``Yoshua``); middle names
  are ignored; a bare surname matches any given name;
- order is tolerated for two-part names written family name first
  (``Zhang Wei`` = ``Wei Zhang``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.match.text import words

__all__ = ["Name", "names_match", "parse_name"]

_PARTICLES = frozenset(
    """
    al bin da dal de del della der des di dos du el la le lo ten ter van von zu
    """.split()  # noqa: SIM905 (a word list reads best as words)
)


@dataclass(frozen=True, slots=True)
class Name:
    """A parsed name: ``surname`` key (no spaces) and given-name tokens, normalised."""

    surname: str
    given: tuple[str, ...]

    @property
    def reversed(self) -> Name | None:
        """The same tokens read family-name-first, for two-part names only."""
        if len(self.given) == 1 and len(self.given[0]) > 1:
            return Name(self.given[0], (self.surname,))
        return None


def parse_name(raw: str) -> Name:
    """Parse ``First Middle Last``, ``Last, First`` or ``Last_F`` into a ``Name``."""
    if "," in raw:
        last, _, first = raw.partition(",")
        return Name("".join(words(last)), tuple(words(first)))
    if "_" in raw and " " not in raw.strip():
        last, _, first = raw.strip().partition("_")
        return Name("".join(words(last)), tuple(words(first.replace("_", " "))))
    tokens = words(raw)
    if not tokens:
        return Name("", ())
    cut = len(tokens) - 1
    while cut > 1 and tokens[cut - 1] in _PARTICLES:
        cut -= 1
    return Name("".join(tokens[cut:]), tuple(tokens[:cut]))


def _given_compatible(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a or not b:
        return True
    x, y = a[0], b[0]
    if x[0] != y[0]:
        return False
    return len(x) == 1 or len(y) == 1 or x.startswith(y) or y.startswith(x)


def names_match(followed: Name, author: Name) -> bool:
    """True when a followed author and a paper author are the same person (see module doc)."""
    if not followed.surname or not author.surname:
        return False
    if followed.surname == author.surname and _given_compatible(followed.given, author.given):
        return True
    flipped = followed.reversed
    return (
        flipped is not None
        and flipped.surname == author.surname
        and _given_compatible(flipped.given, author.given)
    )
