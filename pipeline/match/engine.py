"""The matcher: fitted once on the window of stored papers, then matches profiles in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import MatchItem, Paper, Profile
from pipeline.match.compile import compile_profiles
from pipeline.match.coreaders import CoreaderCounts
from pipeline.match.decision import Decision, decision
from pipeline.match.embedding import Embedder, EmbeddingBlend, shared_embedder
from pipeline.match.lsa import Lsa
from pipeline.match.period import Period
from pipeline.match.reasons import Reasons
from pipeline.match.result import MatchResult
from pipeline.match.select import select
from pipeline.match.settings import MatchSettings
from pipeline.match.similarity import TfidfModel
from pipeline.match.text import words

__all__ = ["MatchResult", "Matcher"]

_EMPTY: Mapping[str, Paper] = {}
DEFAULT_SETTINGS = MatchSettings()


class Matcher:
    """Scores profiles against the new papers of a period (see docs/matching.md).

    ``fit`` learns the vocabulary, the IDF and the window's mean vector from the
    stored papers; ``match`` is pure and deterministic given the fitted matcher.
    With ``embedding`` (set up by ``fit`` from ``settings.embedding_model``), every
    text cosine and the background blend in their sentence-embedding counterparts.
    """

    def __init__(
        self,
        model: TfidfModel,
        settings: MatchSettings,
        window: Mapping[str, int],
        window_vectors: sp.csr_matrix,
        embedding: EmbeddingBlend | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.window = dict(window)
        self.window_vectors = window_vectors
        if window_vectors.shape[0]:
            mean = np.asarray(window_vectors.mean(axis=0), dtype=np.float32).ravel()
        else:
            mean = np.zeros(model.dimension, dtype=np.float32)
        self.background: npt.NDArray[np.float32] = mean
        self.lsa = Lsa.fit(window_vectors, settings.lsa_dimensions)
        self.embedding = embedding

    @classmethod
    def fit(
        cls,
        corpus: Sequence[Paper],
        settings: MatchSettings = DEFAULT_SETTINGS,
        *,
        embedder: Embedder | None = None,
    ) -> Matcher:
        """Fit on the rolling window of stored papers (normally including the new ones).

        With ``settings.embedding_model`` set (and a weight above 0) the model is
        loaded once per process (``shared_embedder``) unless ``embedder`` is given;
        only a fixed sample of the window is encoded here (the embedding background);
        new papers are encoded when a match needs them. Raises
        ``EmbeddingError`` when the model cannot be found or loaded.
        """
        unique: dict[str, Paper] = {}
        for paper in corpus:
            unique.setdefault(paper.id, paper)
        papers = list(unique.values())
        docs = [(words(p.title), words(p.abstract)) for p in papers]
        model = TfidfModel.fit(
            docs,
            min_df=settings.min_df,
            max_df=settings.max_df,
            bigrams=settings.bigrams,
            title_weight=settings.title_weight,
        )
        window = {p.id: i for i, p in enumerate(papers)}
        embedding = None
        if settings.embedding_weight and (embedder is not None or settings.embedding_model):
            if embedder is None:
                assert settings.embedding_model is not None
                embedder = shared_embedder(
                    settings.embedding_model, threads=settings.embedding_threads
                )
            embedding = EmbeddingBlend.fit(embedder, settings.embedding_weight, papers)
        return cls(model, settings, window, model.transform(docs), embedding)

    def match(
        self,
        profiles: Sequence[Profile],
        papers: Sequence[Paper],
        *,
        exclude_ids: Sequence[AbstractSet[str]] | None = None,
        liked: Mapping[str, Paper] | None = None,
        coreaders: CoreaderCounts | None = None,
    ) -> list[list[MatchItem]]:
        """Ranked items per profile: interest items (≤ max_items), then trending items.

        ``exclude_ids[i]`` holds the ids already sent to the subscriber of
        ``profiles[i]``; they are never returned. Passing only the ids that occur
        among ``papers`` is enough and fastest. ``liked``: the liked and disliked
        papers' metadata; ``coreaders``: {paper id: ("more", "less") presses of the
        readers} for the ``coreaders`` ranking term (``store.coreader_counts``). Both
        are per call, not part of the fit. Same as ``match_compact`` with every
        profile's items built.
        """
        result = self.match_compact(
            profiles, papers, exclude_ids=exclude_ids, liked=liked, coreaders=coreaders
        )
        size = self.settings.chunk_size
        return [
            items for a in range(0, len(result), size) for items in result.items_range(a, a + size)
        ]

    def iter_match(
        self,
        profiles: Sequence[Profile],
        papers: Sequence[Paper],
        *,
        exclude_ids: Sequence[AbstractSet[str]] | None = None,
        liked: Mapping[str, Paper] | None = None,
        coreaders: CoreaderCounts | None = None,
    ) -> Iterator[list[list[MatchItem]]]:
        """Like ``match``, one list per chunk of ``settings.chunk_size`` profiles."""
        result = self.match_compact(
            profiles, papers, exclude_ids=exclude_ids, liked=liked, coreaders=coreaders
        )
        size = self.settings.chunk_size
        for start in range(0, len(result), size):
            yield result.items_range(start, start + size)

    def match_compact(
        self,
        profiles: Sequence[Profile],
        papers: Sequence[Paper],
        *,
        exclude_ids: Sequence[AbstractSet[str]] | None = None,
        liked: Mapping[str, Paper] | None = None,
        coreaders: CoreaderCounts | None = None,
    ) -> MatchResult:
        """The vectorised core of ``match``: arrays of selected papers and scores per
        profile; ``MatchResult.items(i)`` builds profile *i*'s ``MatchItem`` list (with
        reasons) on demand, equal to ``match(...)[i]``."""
        if exclude_ids is not None and len(exclude_ids) != len(profiles):
            raise ValueError(
                f"exclude_ids has {len(exclude_ids)} sets for {len(profiles)} profiles"
            )
        period = Period(papers, self.model, self.background, self.embedding)
        n = len(profiles)
        if period.n == 0 or n == 0:
            zeros = np.zeros(n, dtype=np.int64)
            empty = (zeros, zeros, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
            return MatchResult(period, None, None, empty, empty, self.settings)
        compiled = compile_profiles(
            profiles,
            exclude_ids,
            period,
            self.model,
            self.window,
            self.window_vectors,
            liked or _EMPTY,
            self.settings,
            self.lsa,
            coreaders,
        )
        reasons = Reasons(period, compiled.rules, compiled.texts, self.settings.reason_terms)
        interest, trending = select(compiled, period, self.settings)
        return MatchResult(period, compiled, reasons, interest, trending, self.settings)

    def decide(
        self,
        profile: Profile,
        papers: Sequence[Paper],
        paper_id: str,
        *,
        exclude_ids: AbstractSet[str] | None = None,
        liked: Mapping[str, Paper] | None = None,
        coreaders: CoreaderCounts | None = None,
    ) -> Decision:
        """Why ``paper_id`` is (or is not) in the digest ``match`` makes for ``profile``.

        Pass what the planner passes for this reader: ``papers`` its window (the
        period), ``exclude_ids`` its already-sent/reserved ids, ``liked`` the liked
        and disliked papers' metadata, ``coreaders`` the window's press counts. The
        record comes from the same ``match_compact`` call (``decision``), so it agrees
        with the digest: trending slots, ``max_items`` cut, exclusions and already-sent
        ids included. Raises ``NotInPeriod`` when ``paper_id`` is not among ``papers``.
        """
        result = self.match_compact(
            [profile],
            papers,
            exclude_ids=None if exclude_ids is None else [exclude_ids],
            liked=liked,
            coreaders=coreaders,
        )
        return self.decision(result, 0, paper_id)

    def decision(self, result: MatchResult, i: int, paper_id: str) -> Decision:
        """The ``Decision`` of profile ``i`` of ``result`` (a ``match_compact`` result of
        this matcher) about ``paper_id``: computed now, for that one pair."""
        return decision(result, i, paper_id, lsa=self.lsa)
