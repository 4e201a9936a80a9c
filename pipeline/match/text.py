"""Text normalisation shared by queries, profiles and papers.

One pipeline, used everywhere text is compared, so a query word and a paper
word meet in the same form:

1. ``normalize``: Unicode NFKC, diacritics removed (``Schrödinger`` →
   ``schrodinger``), case folded, every hyphen or dash variant and the
   possessive ``'s`` turned into a word break (``fine-tuning`` = ``fine tuning``).
2. ``words``: the runs of letters and digits of the normalised text.
3. ``stem``: a light, deterministic stemmer. British spellings are mapped to
   American ones (``optimisation`` → ``optimization``), then inflectional and a
   few derivational suffixes are stripped, so ``optimization``,
   ``optimizations``, ``optimisation`` and ``optimize`` share one stem. It is
   deliberately lighter than Porter's: ``general`` and ``generalization`` stay
   apart, which keeps query matches precise.

``analyze`` = ``stem`` over ``words``; that is what the index and the TF-IDF
model see. Stems are internal keys, never shown to people.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["STOPWORDS", "analyze", "normalize", "stem", "words"]

# Hyphens, dashes, the minus sign and the slash all separate words.
_BREAKS = re.compile(r"[\u002d\u00ad\u2010-\u2015\u2212\ufe58\ufe63\uff0d/]")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_WORD = re.compile(r"[^\W_]+")

_BRITISH = re.compile(r"(?<=\w{3})is(ation|ations|e|es|ed|ing|er|ers)$")
_BRITISH_YSE = re.compile(r"(?<=\w{3})ys(e|ed|ing|er|ers)$")
_BRITISH_OUR = re.compile(r"(?<=\w{3})our(s|ed|ing|able|ite|ites)?$")

# Ordered: the first suffix that applies wins. (suffix, replacement)
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("izations", "iz"),
    ("ization", "iz"),
    ("izers", "iz"),
    ("izer", "iz"),
    ("izing", "iz"),
    ("ized", "iz"),
    ("izes", "iz"),
    ("ize", "iz"),
    ("ations", "at"),
    ("ation", "at"),
    ("atives", "at"),
    ("ative", "at"),
    ("ating", "at"),
    ("ated", "at"),
    ("ates", "at"),
    ("ate", "at"),
    ("nesses", ""),
    ("ness", ""),
    ("ies", "i"),
    ("ied", "i"),
    ("ings", ""),
    ("ing", ""),
    ("ed", ""),
    ("sses", "ss"),
    ("es", "e"),
    ("s", ""),
)
_VOWEL = re.compile(r"[aeiouy]")
_DOUBLE = re.compile(r"([bdgkmnprt])\1$")

STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also although am among an and any are as
    at be because been before being below between both but by can could did do does
    doing down during each either et etc few for from further had has have having he
    her here hers herself him himself his how however i if in into is it its itself
    just may me might more most much must my myself neither no nor not now of off on
    once only or other our ours ourselves out over own per same she should so some
    such than that the their theirs them themselves then there these they this those
    through thus to too under until up upon us use used using very via was we were
    what when where whether which while who whom why will with within without would
    yet you your yours yourself yourselves
    """.split()  # noqa: SIM905 (a word list reads best as words)
)


def normalize(text: str) -> str:
    """NFKC, no diacritics, case folded, hyphens and possessives as word breaks."""
    if text.isascii():
        text = text.lower()
    else:
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        text = unicodedata.normalize("NFKC", text).casefold()
    text = _POSSESSIVE.sub("", text)
    return _BREAKS.sub(" ", text)


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (letters and digits; punctuation drops out).

    Equal to the runs of letters and digits of ``normalize(text)``; every character
    ``normalize`` turns into a space is already a non-word character, so the ASCII
    fast path (most titles and abstracts) only lower-cases and drops possessives.
    """
    if text.isascii():
        text = text.lower()
        if "'" in text:
            text = _POSSESSIVE.sub("", text)
        return _WORD.findall(text)
    return _WORD.findall(normalize(text))


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """Light stem of one normalised word (see the module docstring)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    word = _BRITISH.sub(r"iz\1", word)
    word = _BRITISH_YSE.sub(r"yz\1", word)
    word = _BRITISH_OUR.sub(r"or\1", word)
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix):
            base = word[: -len(suffix)]
            if len(base) >= 3 and _VOWEL.search(base) and not _keeps_s(word, suffix):
                word = base + replacement
                break
    if (len(word) >= 5 and word.endswith("ll")) or (len(word) >= 4 and _DOUBLE.search(word)):
        word = word[:-1]
    if len(word) >= 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) >= 4 and word.endswith("y") and word[-2] not in "aeiou":
        word = word[:-1] + "i"
    return word


def _keeps_s(word: str, suffix: str) -> bool:
    """Words ending in -ss, -us or -is are not plurals (``loss``, ``corpus``, ``analysis``)."""
    return suffix == "s" and word[-2] in "siu"


def analyze(text: str) -> list[str]:
    """Stems of the words of ``text``, in order, stop words kept."""
    return [stem(w) for w in words(text)]
