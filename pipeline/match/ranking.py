"""Ranking terms for admitted papers: how strongly a rule holds, and the trending signal.

Without these, every hit of a rule scores the same (a ``categories = ["cs.CV"]``
reader's 781 papers all at 0.5) and the digest is the lowest arXiv ids. Each
term is computed once per DISTINCT rule, over that rule's hits only, and added
to the score of papers that are already admitted (it never admits a paper, and
never changes ``min_score`` or the similarity threshold):

- ``bm25`` (query hits): field-weighted BM25 (BM25F: a title occurrence counts
  ``TITLE_WEIGHT`` times an abstract one, both length-normalised) of the
  query's positive text terms, summed and squashed to ``s / (s + BM25_HALF)``;
  IDF from the period's papers;
- ``clauses`` (query hits): the share of the query's distinct positive terms
  (any field) the paper contains;
- ``typical`` (query, author and category hits): the cosine of the paper with
  the centroid of all papers the same rule hits in the period (in the LSA space
  when the matcher has one, else TF-IDF), floored at 0 — the papers most
  central to what the rule finds come first. For a query the hits are weighted
  by ``(bm25 + clauses) ** CENTROID_POWER`` (pseudo-relevance feedback: a broad
  OR query's centroid leans on its strongest hits) and the normalised vector
  of its own positive words is added to the centroid (Rocchio: query + mean of
  the hits); for a category list it is the mean over its categories;
- ``primary`` (category hits): the paper's primary category is one the reader
  follows (not only a cross-list);
- ``trending`` (every admitted paper with upvotes): ``log(1 + upvotes) /
  log(1 + TRENDING_FULL)`` capped at 1, halved every ``TRENDING_HALF_LIFE``
  days between the paper's date and the newest paper of the period;
- ``coreaders`` (every admitted paper that at least two other readers pressed
  on): how many more asked for "more" than for "less" (``pipeline.match.coreaders``;
  the counts are passed per call, never ids).

Each value is in [0, 1] and weighted by its ``MatchSettings.rank_*`` setting.
Per rule the weighted sum lives in one row per distinct rule (dense when the
table is small, else sparse), so a chunk of profiles gathers it like the rule
bits; the terms of the paper alone (trending, coreaders) are one weighted row
added to every profile's. ``parts`` gives one (rule, paper) pair's values for
``explain``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipeline.match.coreaders import CoreaderCounts, coreader_values, describe
from pipeline.match.dense import BLOCK_ELEMENTS, row_blocks
from pipeline.match.index import PeriodIndex, category_matches, mask_to_bools
from pipeline.match.lsa import Lsa
from pipeline.match.period import Period
from pipeline.match.query import Term, parse, positive_terms, to_string
from pipeline.match.settings import MatchSettings
from pipeline.match.similarity import TfidfModel
from pipeline.match.tables import RuleTables, unpack_rows
from pipeline.match.text import analyze, words

__all__ = ["BM25_HALF", "TITLE_WEIGHT", "RankPart", "RankTables"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

TITLE_WEIGHT = 2.0  # BM25F: a title occurrence counts this many abstract occurrences
K1, B = 1.2, 0.75  # the usual BM25 constants
BM25_HALF = 4.0  # the summed BM25 that maps to 0.5
TRENDING_FULL = 200  # upvotes that count fully
TRENDING_HALF_LIFE = 7.0  # days
# A query hit's weight in its query's centroid is (bm25 + clauses) ** CENTROID_POWER: a
# broad OR query's centroid leans on its strongest hits (bench/MATCH.md: 8 measured best)
CENTROID_POWER = 8


@dataclass(frozen=True, slots=True)
class RankPart:
    """One ranking term of one (reader, paper) pair, as ``explain`` shows it."""

    kind: str  # "bm25", "clauses", "typical", "primary", "trending", "coreaders", ...
    rule: str  # "query", "authors", "categories", "" (trending)
    value: float  # in [0, 1]
    weight: float
    detail: str

    @property
    def contribution(self) -> float:
        return self.value * self.weight


class _Rows:
    """Per distinct rule, the weighted sum of its terms over the papers: dense rows when
    they fit ``BLOCK_ELEMENTS``, else CSR; ``take`` gathers a chunk's rows densely."""

    def __init__(self, rows: int, n: int, r: I64, c: I64, v: F32) -> None:
        self.n = n
        self.empty = v.size == 0 or not np.any(v)
        self.dense: F32 | None = None
        self.sparse: sp.csr_matrix | None = None
        if self.empty:
            return
        if rows * n <= BLOCK_ELEMENTS:
            self.dense = np.zeros((rows, n), dtype=np.float32)
            self.dense[r, c] = v
        else:
            self.sparse = sp.csr_matrix((v, (r, c)), shape=(rows, n), dtype=np.float32)

    def take(self, ids: I32) -> F32 | None:
        if self.empty:
            return None
        if self.dense is not None:
            return np.take(self.dense, ids, axis=0)
        assert self.sparse is not None
        out: F32 = self.sparse[ids].toarray()
        return out


@dataclass(frozen=True, slots=True)
class _Hits:
    """One kind of rule: per hit (rule, paper), its term values (arrays of equal length)."""

    rule: I64
    col: I64
    values: dict[str, F32]

    def at(self, rule: int, col: int) -> dict[str, float]:
        lo, hi = np.searchsorted(self.rule, [rule, rule + 1])
        where = lo + np.searchsorted(self.col[lo:hi], col)
        if where >= hi or self.col[where] != col:
            return {}
        return {k: float(v[where]) for k, v in self.values.items()}


class RankTables:
    """The ranking terms of one match call (see the module docstring)."""

    def __init__(
        self,
        period: Period,
        rules: RuleTables,
        settings: MatchSettings,
        lsa: Lsa | None,
        model: TfidfModel | None = None,
        coreaders: CoreaderCounts | None = None,
    ) -> None:
        self.settings = s = settings
        n = period.n
        self.n = n
        self._space = _space(period, lsa)
        self._lsa = lsa
        self._model = model
        self.query_hits = self._query_hits(period, rules)
        self.author_hits = self._typical_only(rules.authors, rules.n)
        self.category_hits = self._category_hits(period, rules)
        self.query = self._rows(
            self.query_hits,
            len(rules.queries),
            {"bm25": s.rank_bm25, "clauses": s.rank_clauses, "typical": s.rank_typical},
        )
        self.authors = self._rows(
            self.author_hits, len(rules.author_lists), {"typical": s.rank_typical}
        )
        self.categories = self._rows(
            self.category_hits,
            len(rules.category_lists),
            {"typical": s.rank_category_typical, "primary": s.rank_primary},
        )
        self.trending_value, self.trending_age = _trending(period)
        self.coreader_value, self.coreader_more, self.coreader_less = coreader_values(
            period, coreaders
        )
        # The terms of the paper alone, weighted: one row added to every profile's.
        self.per_paper = (
            np.float32(s.rank_trending) * self.trending_value
            + np.float32(s.rank_coreaders) * self.coreader_value
        ).astype(np.float32)
        self.has_trending = bool(s.rank_trending and self.trending_value.any())
        self.has_coreaders = bool(s.rank_coreaders and self.coreader_value.any())

    @property
    def space(self) -> F32 | sp.csr_matrix:
        """The papers' rows the centroids (and diversity) use: LSA or TF-IDF, normalised."""
        return self._space

    # --- per chunk ----------------------------------------------------------------------

    def bonus(self, query: I32, authors: I32, categories: I32) -> F32 | None:
        """The weighted ranking terms of a chunk (rows × papers), None when all zero.
        Zero wherever the rule does not hit; the caller adds it to admitted papers only."""
        total: F32 | None = None
        for table, ids in (
            (self.query, query),
            (self.authors, authors),
            (self.categories, categories),
        ):
            part = table.take(ids)
            if part is None:
                continue
            if total is None:
                total = part
            else:
                total += part
        if self.has_trending or self.has_coreaders:
            if total is None:
                total = np.broadcast_to(self.per_paper, (len(query), self.n)).copy()
            else:
                total += self.per_paper
        return total

    # --- one pair, for explain ----------------------------------------------------------

    def parts(
        self,
        query: int,
        authors: int,
        categories: int,
        col: int,
        code_hits: tuple[bool, bool, bool],
    ) -> tuple[RankPart, ...]:
        """The weighted terms that apply to paper ``col`` for these rule rows (hit flags given)."""
        s = self.settings
        out: list[RankPart] = []
        if code_hits[0]:
            v = self.query_hits.at(query, col)
            if v:
                out.append(
                    RankPart(
                        "bm25",
                        "query",
                        v["bm25"],
                        s.rank_bm25,
                        "BM25 of the matched terms (title × 2)",
                    )
                )
                out.append(
                    RankPart(
                        "clauses",
                        "query",
                        v["clauses"],
                        s.rank_clauses,
                        "share of the query's terms present",
                    )
                )
                out.append(
                    RankPart(
                        "typical",
                        "query",
                        v["typical"],
                        s.rank_typical,
                        "cosine with the centroid of the query's words and its strongest hits",
                    )
                )
        if code_hits[1]:
            v = self.author_hits.at(authors, col)
            if v:
                out.append(
                    RankPart(
                        "typical",
                        "authors",
                        v["typical"],
                        s.rank_typical,
                        "cosine with the centroid of the authors' papers",
                    )
                )
        if code_hits[2]:
            v = self.category_hits.at(categories, col)
            if v:
                out.append(
                    RankPart(
                        "typical",
                        "categories",
                        v["typical"],
                        s.rank_category_typical,
                        "cosine with the centroid of the category hits",
                    )
                )
                primary = "primary category followed" if v["primary"] else "cross-listed only"
                out.append(RankPart("primary", "categories", v["primary"], s.rank_primary, primary))
        if self.has_trending and self.trending_value[col] > 0:
            age = float(self.trending_age[col])
            out.append(
                RankPart(
                    "trending",
                    "",
                    float(self.trending_value[col]),
                    s.rank_trending,
                    f"Hugging Face upvotes, {age:.1f} day(s) old",
                )
            )
        if self.has_coreaders and self.coreader_value[col] > 0:
            more, less = int(self.coreader_more[col]), int(self.coreader_less[col])
            out.append(
                RankPart(
                    "coreaders",
                    "",
                    float(self.coreader_value[col]),
                    s.rank_coreaders,
                    describe(more, less),
                )
            )
        return tuple(p for p in out if p.weight)  # a term with weight 0 moved nothing

    # --- building -----------------------------------------------------------------------

    def _rows(self, hits: _Hits, rows: int, weights: dict[str, float]) -> _Rows:
        total = np.zeros(hits.col.size, dtype=np.float32)
        for key, w in weights.items():
            if w:
                total += np.float32(w) * hits.values[key]
        return _Rows(rows, self.n, hits.rule, hits.col, total)

    def _typical_only(self, packed: npt.NDArray[np.uint8], n: int) -> _Hits:
        rule, col = _pairs(packed, n)
        typical = self._typical(rule, col, packed.shape[0], self.settings.rank_typical)
        return _Hits(rule, col, {"typical": typical})

    def _category_hits(self, period: Period, rules: RuleTables) -> _Hits:
        """Per distinct category pattern (few), its typicality and "primary" over its
        hits; a list's value at a paper is the mean over the patterns of the list that
        hit it (a list of several categories is thus judged per category)."""
        lists = rules.category_lists
        patterns = sorted({p for values in lists for p in values})
        n = self.n
        index = period.index
        hit = np.zeros((len(patterns), n), dtype=np.float32)
        for m, pattern in enumerate(patterns):
            hit[m] = mask_to_bools(index.category(pattern), n)
        m_rule, m_col = np.nonzero(hit)
        typical = np.zeros_like(hit)
        typical[m_rule, m_col] = self._typical(
            m_rule.astype(np.int64),
            m_col.astype(np.int64),
            len(patterns),
            self.settings.rank_category_typical,
        )
        primary = np.zeros_like(hit)
        first = [c[0] if c else "" for c in index.categories]
        kinds = sorted(set(first))
        code = np.array([kinds.index(f) for f in first], dtype=np.int64)
        for m, pattern in enumerate(patterns):
            is_primary = np.array([bool(f) and category_matches(pattern, f) for f in kinds])
            primary[m] = is_primary[code] if code.size else 0.0
        primary *= hit
        column = {p: m for m, p in enumerate(patterns)}
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        members = sp.csr_matrix(
            (
                np.ones(int(lengths.sum()), dtype=np.float32),
                np.fromiter((column[p] for values in lists for p in values), dtype=np.int64),
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(len(lists), len(patterns)),
        )
        rule_parts: list[I64] = []
        col_parts: list[I64] = []
        typ_parts: list[F32] = []
        pri_parts: list[F32] = []
        for a, b in row_blocks(len(lists), n):
            block = members[a:b]
            count = np.asarray(block @ hit, dtype=np.float32)
            r, c = np.nonzero(count)
            keep = r + a > 0
            r, c = r[keep], c[keep]
            denominator = count[r, c]
            typ_parts.append((np.asarray(block @ typical)[r, c] / denominator).astype(np.float32))
            pri_parts.append(np.minimum(np.asarray(block @ primary)[r, c], 1.0).astype(np.float32))
            rule_parts.append(r.astype(np.int64) + a)
            col_parts.append(c.astype(np.int64))
        rule = np.concatenate(rule_parts) if rule_parts else np.zeros(0, dtype=np.int64)
        col = np.concatenate(col_parts) if col_parts else np.zeros(0, dtype=np.int64)
        return _Hits(
            rule,
            col,
            {
                "typical": np.concatenate(typ_parts) if typ_parts else np.zeros(0, np.float32),
                "primary": np.concatenate(pri_parts) if pri_parts else np.zeros(0, np.float32),
            },
        )

    def _query_hits(self, period: Period, rules: RuleTables) -> _Hits:
        """BM25F and clause share of every query hit: one sparse (queries × terms)
        matrix times (terms × papers) matrices of BM25F values and of presence."""
        rule, col = _pairs(rules.query, rules.n)
        bm25 = np.zeros(col.size, dtype=np.float32)
        clauses = np.zeros(col.size, dtype=np.float32)
        if col.size:
            term_id: dict[Term, int] = {}
            q_rows: list[int] = []
            q_cols: list[int] = []
            for q in np.unique(rule).tolist():
                distinct = {to_string(t): t for t in positive_terms(parse(rules.queries[q]))}
                for term in distinct.values():
                    q_rows.append(q)
                    q_cols.append(term_id.setdefault(term, len(term_id)))
            terms = list(term_id)
            share = sp.csr_matrix(
                (np.ones(len(q_rows), dtype=np.float32), (q_rows, q_cols)),
                shape=(len(rules.queries), len(terms)),
            )
            size = np.asarray(share.sum(axis=1), dtype=np.float32).ravel()
            scorer = _Bm25(period.index)
            values = scorer.matrix(terms)  # terms × papers
            present = scorer.presence(terms)
            bounds = np.searchsorted(rule, [a for a, _ in row_blocks(len(rules.queries), self.n)])
            for (a, b), lo in zip(row_blocks(len(rules.queries), self.n), bounds, strict=True):
                hi = int(np.searchsorted(rule, b))
                if hi == lo:
                    continue
                r, c = rule[lo:hi] - a, col[lo:hi]
                total = np.asarray((share[a:b] @ values).todense(), dtype=np.float32)[r, c]
                hits = np.asarray((share[a:b] @ present).todense(), dtype=np.float32)[r, c]
                bm25[lo:hi] = total / (total + np.float32(BM25_HALF))
                clauses[lo:hi] = hits / np.maximum(size[rule[lo:hi]], np.float32(1.0))
        typical = self._typical(
            rule,
            col,
            rules.query.shape[0],
            self.settings.rank_typical,
            self._query_text(rules),
            # pseudo-relevance feedback: the strongest hits make the centroid
            ((bm25 + clauses) ** CENTROID_POWER).astype(np.float32),
        )
        return _Hits(rule, col, {"bm25": bm25, "clauses": clauses, "typical": typical})

    def _query_text(self, rules: RuleTables) -> F32 | sp.csr_matrix | None:
        """Each query's positive text terms as one text, in the period's space (Rocchio's
        query vector: it joins the centroid of the query's hits)."""
        if self._model is None:
            return None
        texts = [(list[str](), list[str]())]
        for query in rules.queries[1:]:
            terms = positive_terms(parse(query))
            texts.append(
                (
                    [
                        w
                        for t in terms
                        if t.field != "au" and t.field != "cat"
                        for w in words(t.text)
                    ],
                    [],
                )
            )
        vectors = self._model.transform(texts)
        if isinstance(self._space, np.ndarray) and self._lsa is not None:
            with threadpool_limits(1):
                return self._lsa.embed(vectors)
        return vectors

    def _typical(
        self,
        rule: I64,
        col: I64,
        rows: int,
        weight: float,
        extra: F32 | sp.csr_matrix | None = None,
        member_weight: F32 | None = None,
    ) -> F32:
        """Cosine of each hit paper with its rule's centroid (≥ 0), in the period's space;
        ``extra`` (one normalised row per rule) is added to the normalised centroid."""
        if col.size == 0 or not weight:
            return np.zeros(col.size, dtype=np.float32)
        space = self._space
        members = sp.csr_matrix(
            (
                np.ones(col.size, dtype=np.float32) if member_weight is None else member_weight,
                (rule, col),
            ),
            shape=(rows, self.n),
        )
        if isinstance(space, np.ndarray):
            centroid = np.asarray(members @ space, dtype=np.float32)
            norms = np.linalg.norm(centroid, axis=1, keepdims=True)
            centroid /= np.where(norms > 0, norms, 1.0).astype(np.float32)
            if isinstance(extra, np.ndarray):
                centroid += extra
                norms = np.linalg.norm(centroid, axis=1, keepdims=True)
                centroid /= np.where(norms > 0, norms, 1.0).astype(np.float32)
            values = np.empty(col.size, dtype=np.float32)
            step = max(1, BLOCK_ELEMENTS // max(space.shape[1], 1))  # pairs × dims per block
            for a in range(0, col.size, step):
                b = a + step
                values[a:b] = np.einsum("ij,ij->i", centroid[rule[a:b]], space[col[a:b]])
        else:
            centroid = sp.csr_matrix(members @ space)
            norms = np.sqrt(np.asarray(centroid.multiply(centroid).sum(axis=1))).ravel()
            centroid = (
                sp.diags((1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)) @ centroid
            )
            if isinstance(extra, sp.csr_matrix):
                centroid = sp.csr_matrix(centroid + extra)
                norms = np.sqrt(np.asarray(centroid.multiply(centroid).sum(axis=1))).ravel()
                scale = (1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)
                centroid = sp.csr_matrix(sp.diags(scale) @ centroid)
            values = np.empty(col.size, dtype=np.float32)
            step = 65_536  # pairs per block (sparse rows)
            for a in range(0, col.size, step):
                b = a + step
                part = centroid[rule[a:b]].multiply(space[col[a:b]])
                values[a:b] = np.asarray(part.sum(axis=1)).ravel()
        out: F32 = np.maximum(values, 0.0).astype(np.float32)
        return out


def _space(period: Period, lsa: Lsa | None) -> F32 | sp.csr_matrix:
    """The papers' rows for centroids: LSA coordinates (L2-normalised) or TF-IDF rows."""
    if lsa is None or period.n == 0:
        return period.vectors
    with threadpool_limits(1):
        return lsa.embed(period.vectors)


def _pairs(packed: npt.NDArray[np.uint8], n: int) -> tuple[I64, I64]:
    """Every (rule row ≥ 1, paper) hit of a packed rule table, sorted by row then paper."""
    rules: list[I64] = []
    cols: list[I64] = []
    for a, b in row_blocks(packed.shape[0], n):
        r, c = np.nonzero(unpack_rows(packed[a:b], n, 1))
        rules.append(r.astype(np.int64) + a)
        cols.append(c.astype(np.int64))
    rule = np.concatenate(rules) if rules else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    keep = rule > 0
    return rule[keep], col[keep]


class _Bm25:
    """BM25F values and presence of many query terms over the period's papers, as sparse
    (terms × papers) matrices. Single words, the common case, are computed together from
    papers × stems count matrices; phrases and ``word*`` prefixes one by one."""

    def __init__(self, index: PeriodIndex) -> None:
        self.index = index
        self.n = index.n
        self.norm: dict[str, npt.NDArray[np.float64]] = {}
        for field, fi in (("ti", index.title), ("abs", index.abstract)):
            length = np.array([len(s) for s in fi.sequences], dtype=np.float64)
            mean = float(length.mean()) if length.size else 1.0
            self.norm[field] = 1.0 - B + B * length / max(mean, 1e-9)
        self._surface: dict[str, tuple[sp.csr_matrix, list[str]]] = {}

    def presence(self, terms: Sequence[Term]) -> sp.csr_matrix:
        """1 where the paper contains the term in its field (any field, ``au:``/``cat:`` too)."""
        rows: list[npt.NDArray[np.int64]] = []
        for term in terms:
            rows.append(np.flatnonzero(mask_to_bools(self.index.term(term), self.n)))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return sp.csr_matrix(
            (
                np.ones(int(lengths.sum()), dtype=np.float32),
                np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(len(terms), self.n),
        )

    def matrix(self, terms: Sequence[Term]) -> sp.csr_matrix:
        """BM25F of each term (rows) in each paper (columns); 0 for ``au:``/``cat:``."""
        tf = sp.csr_matrix((len(terms), self.n), dtype=np.float64)
        for field in ("ti", "abs"):
            weight = TITLE_WEIGHT if field == "ti" else 1.0
            part = self._tf(terms, field)
            part = part @ sp.diags(weight / self.norm[field])
            tf = tf + part
        tf = sp.csr_matrix(tf)
        tf.eliminate_zeros()
        df = np.diff(tf.indptr)
        idf = np.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
        owner = np.repeat(np.arange(len(terms)), df)
        tf.data = idf[owner] * tf.data / (K1 + tf.data)
        return sp.csr_matrix(tf, dtype=np.float32)

    def _tf(self, terms: Sequence[Term], field: str) -> sp.csr_matrix:
        """Raw term frequencies in ``field`` (terms × papers); zero rows for other fields."""
        fields = {"ti": ("ti",), "abs": ("abs",), "all": ("ti", "abs")}
        counts, ids = self._count_matrix(field)
        single_rows: list[int] = []
        single_cols: list[int] = []
        prefix_rows: list[int] = []
        prefix_cols: list[int] = []
        other: list[tuple[int, npt.NDArray[np.float64]]] = []
        wildcards = any(t.wildcard for t in terms)
        surface_counts, surface = self._surface_matrix(field) if wildcards else (None, [])
        for j, term in enumerate(terms):
            if field not in fields.get(term.field, ()):
                continue
            if term.wildcard:
                spelled = words(term.text)
                if spelled:  # every surface word with the prefix: a column range
                    lo = bisect.bisect_left(surface, spelled[0])
                    hi = bisect.bisect_left(surface, spelled[0] + "\U0010ffff")
                    prefix_rows += [j] * (hi - lo)
                    prefix_cols += range(lo, hi)
                continue
            stems = analyze(term.text)
            if len(stems) == 1:
                k = ids.get(stems[0])
                if k is not None:
                    single_rows.append(j)
                    single_cols.append(k)
            elif stems:
                other.append((j, self._phrase(stems, field)))
        pick = sp.csr_matrix(
            (np.ones(len(single_rows)), (single_rows, single_cols)),
            shape=(len(terms), counts.shape[1]),
        )
        out = sp.csr_matrix(pick @ counts.T)
        if surface_counts is not None and prefix_rows:
            pick = sp.csr_matrix(
                (np.ones(len(prefix_rows)), (prefix_rows, prefix_cols)),
                shape=(len(terms), surface_counts.shape[1]),
            )
            out = sp.csr_matrix(out + pick @ surface_counts.T)
        if other:
            at = np.array([j for j, _ in other], dtype=np.int64)
            block = sp.csr_matrix(np.stack([row for _, row in other]))
            place = sp.csr_matrix(
                (np.ones(at.size), (at, np.arange(at.size))), shape=(len(terms), at.size)
            )
            out = sp.csr_matrix(out + place @ block)
        return out

    def _phrase(self, stems: list[str], field: str) -> npt.NDArray[np.float64]:
        fi = self.index.title if field == "ti" else self.index.abstract
        tf = np.zeros(self.n, dtype=np.float64)
        needle = f" {' '.join(stems)} "
        for i in np.flatnonzero(mask_to_bools(fi.word(stems), self.n)).tolist():
            tf[i] = fi.joined[i].count(needle)
        return tf

    def _surface_matrix(self, field: str) -> tuple[sp.csr_matrix, list[str]]:
        """Papers × surface words (sorted, so a prefix is a column range), for ``word*``."""
        found = self._surface.get(field)
        if found is None:
            docs = self.index.title_words if field == "ti" else self.index.abstract_words
            surface = sorted({w for doc in docs for w in doc})
            ids = {w: j for j, w in enumerate(surface)}
            found = self._surface[field] = (_counts(docs, ids, self.n), surface)
        return found

    def _count_matrix(self, field: str) -> tuple[sp.csr_matrix, dict[str, int]]:
        """Papers × stems counts of ``field``."""
        fi = self.index.title if field == "ti" else self.index.abstract
        ids = {s: j for j, s in enumerate(fi.stems)}
        return _counts(fi.sequences, ids, self.n), ids


def _counts(docs: Sequence[Sequence[str]], ids: dict[str, int], n: int) -> sp.csr_matrix:
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    cols = np.fromiter((ids[w] for doc in docs for w in doc), dtype=np.int64)
    out = sp.csr_matrix(
        (np.ones(cols.size), cols, np.concatenate([[0], np.cumsum(lengths)])),
        shape=(n, len(ids)),
    )
    out.sum_duplicates()
    return out


def _trending(period: Period) -> tuple[F32, F32]:
    """Per paper: the trending value in [0, 1] (upvotes, decayed by age) and its age in days."""
    n = period.n
    value = np.zeros(n, dtype=np.float32)
    age = np.zeros(n, dtype=np.float32)
    if not period.trending_cols.size:
        return value, age
    dates: list[datetime | None] = [
        p.published or p.announced or p.first_seen for p in period.papers
    ]
    known = [d for d in dates if d is not None]
    newest = max(known, key=_timestamp) if known else None
    full = math.log1p(TRENDING_FULL)
    for i in period.trending_cols.tolist():
        votes = float(period.upvotes[i])
        days = 0.0
        d = dates[i]
        if newest is not None and d is not None:
            days = max(0.0, (_timestamp(newest) - _timestamp(d)) / 86400.0)
        age[i] = days
        value[i] = min(1.0, math.log1p(votes) / full) * 0.5 ** (days / TRENDING_HALF_LIFE)
    return value, age


def _timestamp(d: datetime) -> float:
    """Seconds since the epoch; a naive datetime is read as UTC."""
    if d.tzinfo is None:
        return (d - datetime(1970, 1, 1)).total_seconds()
    return d.timestamp()
