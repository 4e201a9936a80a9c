"""The arXiv query parser: table-driven cases, error positions, and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import QuerySyntaxError
from pipeline.match import QueryError, validate_query
from pipeline.match.query import And, AndNot, Node, Or, Term, parse, to_string

T = Term


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("diffusion", T("all", "diffusion")),
        ("ti:diffusion", T("ti", "diffusion")),
        ("TI:diffusion", T("ti", "diffusion")),
        ('abs:"preference optimization"', T("abs", "preference optimization", quoted=True)),
        ("ti:optim*", T("ti", "optim", wildcard=True)),
        ("cat:cs.LG", T("cat", "cs.LG")),
        ("cat:cs.*", T("cat", "cs.", wildcard=True)),
        ("au:LeCun_Y", T("au", "LeCun_Y")),
        ("a AND b", And(T("all", "a"), T("all", "b"))),
        ("a b", And(T("all", "a"), T("all", "b"))),
        ("a OR b AND c", Or(T("all", "a"), And(T("all", "b"), T("all", "c")))),
        ("a ANDNOT b AND c", And(AndNot(T("all", "a"), T("all", "b")), T("all", "c"))),
        ("(a OR b) AND c", And(Or(T("all", "a"), T("all", "b")), T("all", "c"))),
        ("abs:(RLHF AND reward)", And(T("abs", "RLHF"), T("abs", "reward"))),
        ("ti:(a OR abs:b)", Or(T("ti", "a"), T("abs", "b"))),
        ("a and b", And(And(T("all", "a"), T("all", "and")), T("all", "b"))),
        ("fine-tuning", T("all", "fine-tuning")),
    ],
    ids=[
        "bare-word",
        "field",
        "field-upper",
        "phrase",
        "wildcard",
        "category",
        "category-wildcard",
        "arxiv-author-form",
        "and",
        "implicit-and",
        "or-lower-than-and",
        "andnot-left-assoc",
        "parentheses",
        "field-on-group",
        "inner-field-wins",
        "lowercase-and-is-a-word",
        "hyphenated",
    ],
)
def test_parse(text: str, tree: Node) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("", 0, "expected a term"),
        ("ti:", 3, "expected a term or '\\(' after 'ti:'"),
        ("a AND", 5, "expected a term"),
        ("(a OR b", 7, "expected '\\)' to close the '\\(' at column 1"),
        ("a OR b)", 6, "without a matching"),
        ("foo:bar", 0, "expected a field ti, abs, au, cat or all, found 'foo'"),
        ("a NOT b", 2, "arXiv has no NOT; write a ANDNOT b"),
        ('ti:"abc', 3, 'expected a closing "'),
        ("optim*ize", 5, "expected '\\*' only at the end"),
        ("ti:--", 3, "expected a word with letters or digits"),
        ('cat:"cs LG"', 4, "not a phrase"),
        ("cat:c$", 4, "expected a category"),
        (":x", 0, "expected a field name"),
        ("ti:fine-tun*", 3, "expected a single word before"),
    ],
    ids=[
        "empty",
        "field-without-term",
        "dangling-and",
        "unclosed-paren",
        "stray-paren",
        "unknown-field",
        "not",
        "unclosed-quote",
        "inner-star",
        "no-letters",
        "category-phrase",
        "bad-category",
        "bare-colon",
        "multiword-wildcard",
    ],
)
def test_syntax_errors_point_at_the_position(text: str, position: int, expected: str) -> None:
    with pytest.raises(QuerySyntaxError, match=expected) as info:
        validate_query(text)
    error = info.value
    assert isinstance(error, QueryError)
    assert error.position == position
    lines = str(error).splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * position + "^"


def test_validate_accepts_the_design_example() -> None:
    validate_query('ti:"preference optimization" OR abs:(RLHF AND reward) ANDNOT cat:quant-ph')


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("a b c", "a AND b AND c"),
        ("a AND (b AND c)", "a AND (b AND c)"),
        ("a OR (b OR c)", "a OR (b OR c)"),
        ("abs:(x OR y) z", "(abs:x OR abs:y) AND z"),
        ('all:"a b" ti:c*', '"a b" AND ti:c*'),
    ],
    ids=["implicit", "right-nested-and", "right-nested-or", "field-group", "all-is-bare"],
)
def test_to_string(text: str, printed: str) -> None:
    assert to_string(parse(text)) == printed


# --- properties --------------------------------------------------------------------------

_word = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+]{0,8}", fullmatch=True).filter(
    lambda w: w not in {"AND", "OR", "ANDNOT", "NOT"}
)
_phrase = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ]{0,12}", fullmatch=True)
_category = st.from_regex(r"[a-z]{2,5}(\.[A-Z]{2})?", fullmatch=True)
_text_field = st.sampled_from(["ti", "abs", "au", "all"])

_terms = st.one_of(
    st.builds(lambda f, w: Term(f, w), _text_field, _word),
    st.builds(lambda f, w: Term(f, w, quoted=True), _text_field, _phrase),
    st.builds(
        lambda f, w: Term(f, w, wildcard=True),
        _text_field,
        st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
    ),
    st.builds(lambda c: Term("cat", c), _category),
)
_trees = st.recursive(
    _terms,
    lambda kids: st.one_of(
        st.builds(And, kids, kids), st.builds(Or, kids, kids), st.builds(AndNot, kids, kids)
    ),
    max_leaves=8,
)


@given(_trees)
@settings(max_examples=300)
def test_printing_then_parsing_gives_the_same_tree(tree: Node) -> None:
    assert parse(to_string(tree)) == tree


@given(st.text(alphabet=st.sampled_from(list('abc ti:abs:au:cat:()"*-.ANDORNOT\t\n')), max_size=40))
@settings(max_examples=500)
def test_random_strings_parse_or_raise_the_documented_error(text: str) -> None:
    try:
        tree = parse(text)
    except QueryError as error:
        assert 0 <= error.position <= len(text)
        assert str(error).startswith("invalid query: expected")
    else:
        assert parse(to_string(tree)) == tree


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_arbitrary_unicode_never_crashes(text: str) -> None:
    try:
        parse(text)
    except QuerySyntaxError as error:
        assert "invalid query" in str(error)
