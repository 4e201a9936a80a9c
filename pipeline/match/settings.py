"""Tunables of the matching engine, with the defaults measured in bench/MATCH.md."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MatchSettings"]


# The terms that order admitted papers (pipeline.match.ranking, pipeline.match.feedback).
RANKING_TERMS = (
    "rank_bm25",
    "rank_clauses",
    "rank_typical",
    "rank_category_typical",
    "rank_primary",
    "rank_trending",
    "rank_feedback",
    "rank_coreaders",
)


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """How rules and similarity combine (see docs/matching.md for the full semantics).

    score = similarity + query_boost·[query hit] + author_boost·[author hit]
            + category_boost·[category hit]

    similarity = (about_weight·cos(about) + like_weight·mean cos(liked))
                 / (about_weight·[has about] + like_weight·[has liked])
                 − dislike_weight·mean cos(disliked) − background_weight·cos(window mean)
    """

    # A paper with no rule hit is admitted when its similarity reaches this.
    similarity_threshold: float = 0.10
    # Added to the score of a paper that the profile's query matches.
    query_boost: float = 1.0
    # Added when one of the profile's followed authors wrote the paper.
    author_boost: float = 1.0
    # Added when one of the paper's categories matches the profile's categories.
    category_boost: float = 0.5
    # Weight of the `about` text against the liked papers (taken together).
    about_weight: float = 1.0
    # Weight of the liked papers (their cosines are averaged) against `about`.
    like_weight: float = 1.0
    # Weight of the mean cosine to disliked papers, subtracted.
    dislike_weight: float = 1.0
    # Rocchio's negative centroid: subtracts the paper's dot product with the mean
    # vector of the fitted window, so generic papers stop looking similar to everything.
    background_weight: float = 1.0
    # TF-IDF vocabulary: a term is kept when min_df ≤ document frequency ≤ max_df·N.
    min_df: int = 2
    max_df: float = 0.5
    # Also use pairs of adjacent stems ("language model") as features.
    bigrams: bool = True
    # How many times title terms count against abstract terms.
    title_weight: int = 1
    # Latent semantic analysis (pipeline.match.lsa): a text cosine is
    # (1 − lsa_weight)·TF-IDF cosine + lsa_weight·cosine in the top lsa_dimensions
    # singular directions of the window. Skipped (plain TF-IDF) when lsa_dimensions
    # is 0 or the window has fewer than 4·lsa_dimensions papers.
    lsa_dimensions: int = 128
    lsa_weight: float = 0.3
    # Optional sentence embeddings (pipeline.match.embedding), off when None: a local
    # model directory or an installed package carrying one, never downloaded. Every
    # text cosine (and the background) then becomes (1 − embedding_weight)·(the
    # TF-IDF/LSA value above) + embedding_weight·(its embedding counterpart); 0 turns
    # it off too.
    embedding_model: str | None = None
    embedding_weight: float = 0.3
    # torch threads used to encode (process-wide in torch; 1 keeps a busy machine usable).
    embedding_threads: int = 1
    # Profiles scored together; bounds memory at chunk_size × papers × ~20 bytes.
    # A large period scores fewer (at most dense.BLOCK_ELEMENTS profiles × papers).
    chunk_size: int = 4096
    # Threads scoring chunks in parallel (numpy/scipy release the GIL); the result
    # does not depend on it. 1 scores in the calling thread.
    threads: int = 2
    # At most this many query terms are named in a reason line.
    reason_terms: int = 3
    # Ranking terms added to ADMITTED papers only (pipeline.match.ranking; each value in
    # [0, 1]): BM25F of the matched query terms, share of the query's terms present,
    # cosine with the centroid of the rule's hits, primary category followed, Hugging
    # Face upvotes decayed by age. Measured in bench/MATCH.md ("Ranking hard matches").
    rank_bm25: float = 0.2
    rank_clauses: float = 0.1
    rank_typical: float = 0.4
    # The same centroid cosine for category hits; small: central papers of a category are
    # its single-category ones, and readers of a category often want its cross-lists.
    rank_category_typical: float = 0.02
    # 0 by default: measured, it pushes single-category papers up, which the
    # hidden-interest benchmark penalises (bench/MATCH.md); kept for operators.
    rank_primary: float = 0.0
    rank_trending: float = 0.1
    # The per-reader term learned from their liked / "more" and "less" papers' categories
    # (pipeline.match.feedback); added to admitted papers only. Measured in
    # bench/MATCH.md ("Feedback that learns").
    rank_feedback: float = 0.5
    # What other readers the paper was sent to pressed on it (pipeline.match.coreaders):
    # log(1 + more − less) / log(11), capped at 1, once at least two of them pressed; the
    # counts are passed per call (``coreaders=``). Measured in bench/MATCH.md ("Co-readers").
    rank_coreaders: float = 0.1
    # Diversity (pipeline.match.diversity, MMR cut at a threshold): of two candidates
    # whose cosine in the ranking space (LSA when fitted) reaches diversity_threshold,
    # the lower-scored loses rank_diversity · (cosine − threshold) / (1 − threshold).
    rank_diversity: float = 0.5
    diversity_threshold: float = 0.75

    def without_ranking(self) -> MatchSettings:
        """These settings with every ranking term at 0 (diversity stays): the order the rules
        and similarity alone give, for "before" figures and tie-break tests."""
        off: dict[str, Any] = dict.fromkeys(RANKING_TERMS, 0.0)
        return replace(self, **off)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"MatchSettings.chunk_size must be >= 1, got {self.chunk_size}")
        if self.lsa_dimensions < 0:
            raise ValueError(
                f"MatchSettings.lsa_dimensions must be >= 0, got {self.lsa_dimensions}"
            )
        if not 0.0 <= self.lsa_weight <= 1.0:
            raise ValueError(f"MatchSettings.lsa_weight must be in [0, 1], got {self.lsa_weight}")
        if not 0.0 <= self.embedding_weight <= 1.0:
            raise ValueError(
                f"MatchSettings.embedding_weight must be in [0, 1], got {self.embedding_weight}"
            )
        if self.embedding_threads < 1:
            raise ValueError(
                f"MatchSettings.embedding_threads must be >= 1, got {self.embedding_threads}"
            )
        if self.threads < 1:
            raise ValueError(f"MatchSettings.threads must be >= 1, got {self.threads}")
        if self.min_df < 1:
            raise ValueError(f"MatchSettings.min_df must be >= 1, got {self.min_df}")
        if not 0.0 < self.max_df <= 1.0:
            raise ValueError(f"MatchSettings.max_df must be in (0, 1], got {self.max_df}")
        for name in (*RANKING_TERMS, "rank_diversity", "diversity_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MatchSettings.{name} must be in [0, 1], got {value}")
        if self.title_weight < 1:
            raise ValueError(f"MatchSettings.title_weight must be >= 1, got {self.title_weight}")
