"""arXiv search syntax: parser, printer and the syntax tree.

Grammar (operators are upper case, as on arXiv; lower-case ``and`` is a word)::

    query   := or EOF
    or      := and ("OR" and)*
    and     := unary (("AND" | "ANDNOT")? unary)*     # adjacency means AND
    unary   := [field ":"] primary
    primary := WORD | WORD"*" | '"' phrase '"' | "(" or ")"
    field   := "ti" | "abs" | "au" | "cat" | "all"

``AND`` and ``ANDNOT`` bind tighter than ``OR`` and associate to the left, so
``a OR b ANDNOT c`` is ``a OR (b ANDNOT c)``. A field before a group applies to
every term inside that names no field of its own: ``abs:(RLHF AND reward)`` is
``abs:RLHF AND abs:reward``. A bare term searches ``all``.

The tree keeps the user's spelling; normalisation happens when a query is
compiled against papers (``pipeline.match.index``). ``to_string`` prints a
canonical form that parses back to the same tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import QuerySyntaxError
from pipeline.match.text import words

__all__ = [
    "FIELDS",
    "And",
    "AndNot",
    "Field",
    "Node",
    "Or",
    "QueryError",
    "Term",
    "parse",
    "positive_terms",
    "to_string",
    "validate_query",
]

Field = Literal["ti", "abs", "au", "cat", "all"]
FIELDS: tuple[Field, ...] = ("ti", "abs", "au", "cat", "all")
_OPERATORS = frozenset({"AND", "OR", "ANDNOT", "NOT"})
_CATEGORY = re.compile(r"^[A-Za-z][A-Za-z0-9.\-]*\*?$")


@dataclass(frozen=True, slots=True)
class Term:
    """One leaf: ``field:text``, ``field:"text"`` (quoted) or ``field:text*`` (wildcard)."""

    field: Field
    text: str
    quoted: bool = False
    wildcard: bool = False


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class AndNot:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


Node = Term | And | AndNot | Or


class QueryError(QuerySyntaxError):
    """A syntax error with its place: ``query``, ``position`` (0-based) and ``expected``.

    ``str()`` is three lines: what was expected, the query, a caret under the position.
    """

    def __init__(self, query: str, position: int, expected: str) -> None:
        self.query = query
        self.position = position
        self.expected = expected
        flat = query.replace("\n", " ").replace("\t", " ")
        super().__init__(f"invalid query: {expected}\n  {flat}\n  {' ' * position}^")


def validate_query(text: str) -> None:
    """Raise ``QuerySyntaxError`` (a ``QueryError``) when ``text`` is not a valid query."""
    parse(text)


def parse(text: str) -> Node:
    """Parse arXiv search syntax into a tree; raises ``QueryError`` on bad input."""
    return _Parser(text).parse()


# --- tokenizer -------------------------------------------------------------------------

_TokenKind = Literal["word", "phrase", "field", "(", ")", "op", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokenKind
    text: str
    pos: int


_SPECIAL = frozenset('()":')


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, i))  # type: ignore[arg-type]
            i += 1
        elif ch == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QueryError(query, i, 'expected a closing " for this phrase')
            tokens.append(_Token("phrase", query[i + 1 : end], i))
            i = end + 1
        elif ch == ":":
            raise QueryError(query, i, "expected a field name (ti, abs, au, cat, all) before ':'")
        else:
            start = i
            while i < n and not query[i].isspace() and query[i] not in _SPECIAL:
                i += 1
            text = query[start:i]
            if i < n and query[i] == ":":
                text = text.lower()
                if text not in FIELDS:
                    raise QueryError(
                        query, start, f"expected a field ti, abs, au, cat or all, found {text!r}"
                    )
                tokens.append(_Token("field", text, start))
                i += 1
            elif text in _OPERATORS:
                tokens.append(_Token("op", text, start))
            else:
                tokens.append(_Token("word", text, start))
    tokens.append(_Token("end", "", n))
    return tokens


# --- parser ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokenize(query)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: _Token, expected: str) -> QueryError:
        found = "the end of the query" if token.kind == "end" else repr(token.text)
        if token.kind == "phrase":
            found = "a quoted phrase"
        return QueryError(self.query, token.pos, f"{expected}, found {found}")

    def parse(self) -> Node:
        node = self.or_(None)
        token = self.peek()
        if token.kind != "end":
            expected = "expected AND, OR, ANDNOT or the end of the query"
            if token.kind == ")":
                expected = "expected no ')' without a matching '('"
            raise self.fail(token, expected)
        return node

    def or_(self, field: Field | None) -> Node:
        node = self.and_(field)
        while self.peek().kind == "op" and self.peek().text == "OR":
            self.take()
            node = Or(node, self.and_(field))
        return node

    def and_(self, field: Field | None) -> Node:
        node = self.unary(field)
        while True:
            token = self.peek()
            if token.kind == "op" and token.text in ("AND", "ANDNOT"):
                self.take()
                right = self.unary(field)
                node = And(node, right) if token.text == "AND" else AndNot(node, right)
            elif token.kind in ("word", "phrase", "field", "(") or token.text == "NOT":
                node = And(node, self.unary(field))
            else:
                return node

    def unary(self, field: Field | None) -> Node:
        token = self.peek()
        if token.kind == "field":
            self.take()
            inner: Field = token.text  # type: ignore[assignment]
            if self.peek().kind not in ("word", "phrase", "("):
                raise self.fail(self.peek(), f"expected a term or '(' after '{token.text}:'")
            return self.primary(inner)
        return self.primary(field)

    def primary(self, field: Field | None) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.or_(field)
            closing = self.peek()
            if closing.kind != ")":
                raise self.fail(closing, f"expected ')' to close the '(' at column {token.pos + 1}")
            self.take()
            return node
        if token.kind == "word":
            return self.word(token, field or "all")
        if token.kind == "phrase":
            return self.phrase(token, field or "all")
        if token.kind == "op" and token.text == "NOT":
            raise self.fail(token, "expected a term (arXiv has no NOT; write a ANDNOT b)")
        raise self.fail(token, "expected a term, a quoted phrase or '('")

    def word(self, token: _Token, field: Field) -> Term:
        text = token.text
        wildcard = text.endswith("*")
        stem = text[:-1] if wildcard else text
        star = stem.find("*")
        if star >= 0:
            raise QueryError(self.query, token.pos + star, "expected '*' only at the end of a word")
        if field == "cat":
            if not _CATEGORY.match(text):
                raise QueryError(self.query, token.pos, "expected a category such as cs.LG or cs.*")
            return Term("cat", stem, wildcard=wildcard)
        found = words(stem)
        if not found:
            raise QueryError(self.query, token.pos, "expected a word with letters or digits")
        if wildcard and len(found) != 1:
            raise QueryError(
                self.query, token.pos, "expected a single word before '*' (no hyphens)"
            )
        return Term(field, text[:-1] if wildcard else text, wildcard=wildcard)

    def phrase(self, token: _Token, field: Field) -> Term:
        if field == "cat":
            raise QueryError(
                self.query, token.pos, "expected a category such as cs.LG, not a phrase"
            )
        if not words(token.text):
            raise QueryError(self.query, token.pos, "expected letters or digits inside the quotes")
        return Term(field, token.text, quoted=True)


# --- printer ---------------------------------------------------------------------------

_LEVEL = {Or: 1, And: 2, AndNot: 2}


def _level(node: Node) -> int:
    return 3 if isinstance(node, Term) else _LEVEL[type(node)]


def _term(term: Term) -> str:
    prefix = "" if term.field == "all" else f"{term.field}:"
    if term.quoted:
        return f'{prefix}"{term.text}"'
    return f"{prefix}{term.text}{'*' if term.wildcard else ''}"


def to_string(node: Node) -> str:
    """Canonical text: explicit operators, fields on every term, minimal parentheses."""
    if isinstance(node, Term):
        return _term(node)
    level = _level(node)
    left = to_string(node.left)
    right = to_string(node.right)
    if _level(node.left) < level:
        left = f"({left})"
    if _level(node.right) <= level:
        right = f"({right})"
    op = {Or: "OR", And: "AND", AndNot: "ANDNOT"}[type(node)]
    return f"{left} {op} {right}"


def positive_terms(node: Node) -> list[Term]:
    """Terms whose presence counts for a match (not under the right side of ANDNOT)."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, AndNot):
        return positive_terms(node.left)
    return positive_terms(node.left) + positive_terms(node.right)
