"""The matcher: fitted once on the window of stored papers, then matches profiles in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import MatchItem, Paper, Profile
from pipeline.match.period import Components, Period, RuleTables
from pipeline.match.reasons import Reasons
from pipeline.match.scoring import Chunk, Scored, compile_chunk, score_chunk
from pipeline.match.settings import MatchSettings
from pipeline.match.similarity import TfidfModel
from pipeline.match.text import words

__all__ = ["Matcher"]

_EMPTY: Mapping[str, Paper] = {}
DEFAULT_SETTINGS = MatchSettings()


class Matcher:
    """Scores profiles against the new papers of a period (see docs/matching.md).

    ``fit`` learns the vocabulary, the IDF and the window's mean vector from the
    stored papers; ``match`` is pure and deterministic given the fitted matcher.
    """

    def __init__(
        self,
        model: TfidfModel,
        settings: MatchSettings,
        window: Mapping[str, int],
        window_vectors: sp.csr_matrix,
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

    @classmethod
    def fit(cls, corpus: Sequence[Paper], settings: MatchSettings = DEFAULT_SETTINGS) -> Matcher:
        """Fit on the rolling window of stored papers (normally including the new ones)."""
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
        return cls(model, settings, window, model.transform(docs))

    def match(
        self,
        profiles: Sequence[Profile],
        papers: Sequence[Paper],
        *,
        exclude_ids: Sequence[AbstractSet[str]] | None = None,
        liked: Mapping[str, Paper] | None = None,
    ) -> list[list[MatchItem]]:
        """Ranked items per profile: interest items (≤ max_items), then trending items.

        ``exclude_ids[i]`` holds the ids already sent to the subscriber of
        ``profiles[i]``; they are never returned. Passing only the ids that occur
        among ``papers`` is enough and fastest.
        """
        return [
            items
            for chunk in self.iter_match(profiles, papers, exclude_ids=exclude_ids, liked=liked)
            for items in chunk
        ]

    def iter_match(
        self,
        profiles: Sequence[Profile],
        papers: Sequence[Paper],
        *,
        exclude_ids: Sequence[AbstractSet[str]] | None = None,
        liked: Mapping[str, Paper] | None = None,
    ) -> Iterator[list[list[MatchItem]]]:
        """Like ``match``, one list per chunk of ``settings.chunk_size`` profiles.

        Memory stays bounded by the chunk: a caller that renders and sends each
        chunk before asking for the next never holds all results at once.
        """
        if exclude_ids is not None and len(exclude_ids) != len(profiles):
            raise ValueError(
                f"exclude_ids has {len(exclude_ids)} sets for {len(profiles)} profiles"
            )
        period = Period(papers, self.model, self.background)
        references = [pid for p in profiles for pid in (*p.like, *p.dislike)]
        components = Components(
            references,
            period,
            self.model,
            self.window,
            self.window_vectors,
            liked or _EMPTY,
            self.background,
        )
        tables = RuleTables(period)
        reasons = Reasons(period, components, self.settings.reason_terms)
        size = self.settings.chunk_size
        for start in range(0, len(profiles), size):
            chunk_profiles = profiles[start : start + size]
            chunk_excludes = None if exclude_ids is None else exclude_ids[start : start + size]
            chunk = compile_chunk(
                chunk_profiles, chunk_excludes, tables, components, period, self.settings
            )
            if period.n == 0:
                yield [[] for _ in chunk_profiles]
                continue
            scored = score_chunk(chunk, period, tables, components, self.model, self.settings)
            yield _items(chunk_profiles, chunk, scored, period, reasons)

    def explain(
        self, profile: Profile, paper: Paper, *, liked: Mapping[str, Paper] | None = None
    ) -> str:
        """Multi-line score breakdown of one (profile, paper) pair."""
        from pipeline.match.explain import explain

        return explain(self, profile, paper, liked or _EMPTY)


def _items(
    profiles: Sequence[Profile],
    chunk: Chunk,
    scored: Scored,
    period: Period,
    reasons: Reasons,
) -> list[list[MatchItem]]:
    ids = period.ids
    selected = scored.selected.tolist()
    valid = scored.valid.tolist()
    scores = scored.score.tolist()
    query_hit = scored.query_hit.tolist()
    author_hit = scored.author_hit.tolist()
    category_hit = scored.category_hit.tolist()
    about_sim = scored.about_sim.tolist()
    like_best = scored.like_best.tolist()
    like_sim = scored.like_sim.tolist()
    has_sim = chunk.has_sim.tolist()
    has_about = (chunk.about_row >= 0).tolist()
    out: list[list[MatchItem]] = []
    for r, profile in enumerate(profiles):
        items: list[MatchItem] = []
        row_valid = valid[r]
        row_selected = selected[r]
        for j in range(len(row_valid)):
            if not row_valid[j]:
                break
            p = row_selected[j]
            parts: list[str] = []
            if query_hit[r][j]:
                parts.append(reasons.query(profile.query or "", p))
            if author_hit[r][j]:
                parts.append(reasons.authors(profile.authors, p))
            if category_hit[r][j]:
                parts.append(reasons.categories(profile.categories, p))
            if has_sim[r]:
                best = like_best[r][j]
                if best >= 0 and (not has_about[r] or like_sim[r][j] >= about_sim[r][j]):
                    parts.append(reasons.liked(best, like_sim[r][j]))
                else:
                    parts.append(reasons.about(about_sim[r][j]))
            items.append(MatchItem(ids[p], scores[r][j], "; ".join(parts)))
        if profile.trending > 0:
            items.extend(_trending(profile.trending, items, scored.allowed[r], period))
        out.append(items)
    return out


def _trending(
    count: int, chosen: list[MatchItem], allowed: npt.NDArray[np.bool_], period: Period
) -> list[MatchItem]:
    taken = {item.paper_id for item in chosen}
    found: list[MatchItem] = []
    for p in period.trending_order:
        if len(found) == count:
            break
        paper = period.papers[p]
        if allowed[p] and paper.id not in taken:
            upvotes = paper.upvotes or 0
            found.append(MatchItem(paper.id, float(upvotes), Reasons.trending(upvotes), True))
    return found
