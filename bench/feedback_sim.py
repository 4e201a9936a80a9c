"""Simulated readers who press "more" and "less": does the next digest learn?

Usage::

    .venv/bin/python bench/feedback_sim.py [--file F.jsonl] [--draws 16] [--days 10] [--json]

Protocol (issue 15). Each simulated reader subscribes to a category C but truly
wants C ∩ D, for the category D that co-occurs most with C (at least 10 papers of
C ∩ D on the simulated days; pairs as in bench/match_quality.py, e.g. cs.CL ∩
cs.AI). The first ``--history-days`` listing days are history; on each of the next
``--days`` listing days the reader receives a digest of 10 papers from that day's
papers, then presses "more" on each digest paper in C ∩ D and "less" on each other
one, each press with probability 0.5. Three readers per (C, draw):

- **learning** (ours): the profile the planner builds from the feedback table
  (``pipeline.cycle.plan.profile_with_feedback``: "more" presses join ``like``,
  "less" presses ``dislike``), matched by the shipped matcher with the pressed
  papers' metadata as ``liked=`` — a Rocchio update (mean cosine to the "more"
  papers − mean cosine to the "less" ones − the window's background) and the
  ``feedback`` ranking term (a per-reader linear model over categories,
  ``pipeline.match.feedback``; ``--rank-feedback 0`` turns it off) on top of the
  category hit and its ranking terms;
- **no learning**: ``categories = [C]`` only, every day;
- **SVM**: arxiv-sanity-lite's method, a LinearSVC(C=0.01, balanced) over its TF-IDF,
  retrained each day on the reader's "more" papers (positives) against every other
  paper of the window so far; it ranks the day's papers of C (before any "more"
  press it has nothing to learn from and ranks as "no learning").

- **oracle**: the best possible digest, min(10, #C ∩ D papers that day) / 10.

Reported: P@10 for C ∩ D on each day, mean and median over readers × draws;
``--json`` prints ``{"day": {"1": {"learning": p, "none": p, "oracle": p, "svm": p},
...}}`` as the last line. The matcher is fitted once on the whole file (text only).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import replace
from itertools import chain
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from match_quality import DEFAULT, load, paper_of  # noqa: E402

from pipeline.cycle.plan import profile_with_feedback  # noqa: E402
from pipeline.domain import Paper, Profile  # noqa: E402
from pipeline.match import Matcher, MatchSettings  # noqa: E402
from pipeline.progress import progress_for  # noqa: E402

DIGEST = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT)
    parser.add_argument("--history-days", type=int, default=3)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--no-svm", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--rank-feedback",
        type=float,
        default=MatchSettings().rank_feedback,
        help="weight of the learned category term (0: the Rocchio similarity alone)",
    )
    args = parser.parse_args()

    rows = load(args.file)
    papers = {str(r["id"]): paper_of(r) for r in rows}
    days = sorted({str(r["listing_date"]) for r in rows})
    sim_days = days[args.history_days : args.history_days + args.days]
    by_day = {d: [str(r["id"]) for r in rows if str(r["listing_date"]) == d] for d in days}
    labels = {pid: set(p.categories) for pid, p in papers.items()}
    simulated = [pid for d in sim_days for pid in by_day[d]]
    counts = Counter(c for p in papers.values() for c in p.categories)
    pairs = Counter((a, b) for p in papers.values() for a in p.categories for b in p.categories)
    readers: list[tuple[str, str]] = []
    for c, _ in counts.most_common(20):
        for (a, other), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
            both = sum(c in labels[i] and other in labels[i] for i in simulated)
            if a == c != other and both >= 10:
                readers.append((c, other))
                break

    # Progress on stderr (bars on a terminal, plain lines otherwise), closed before the
    # table is printed: stdout carries only it.
    progress = progress_for(sys.stderr)
    progress.start("fit", "fit")
    settings = replace(MatchSettings(), rank_feedback=args.rank_feedback)
    matcher = Matcher.fit(list(papers.values()), settings)
    order = list(papers)
    where = {pid: n for n, pid in enumerate(order)}
    x = None
    if not args.no_svm:
        vectoriser = TfidfVectorizer(
            strip_accents="unicode",
            lowercase=True,
            stop_words="english",
            token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
            ngram_range=(1, 2),
            max_features=20000,
            sublinear_tf=True,
            max_df=0.1,
            min_df=5,
        )
        x = vectoriser.fit_transform([papers[i].title + ". " + papers[i].abstract for i in order])
    progress.finish("fit", f"{len(papers)} papers, SVM {x is not None}")

    results: dict[str, list[list[float]]] = {
        k: [[] for _ in sim_days] for k in ("learning", "none", "svm", "oracle")
    }
    readers_drawn = [(draw, c, d) for draw in range(args.draws) for c, d in readers]
    rngs = [random.Random(f"{draw}:{c}:{d}") for draw, c, d in readers_drawn]
    state: list[dict[str, tuple[list[str], list[str]]]] = [
        {k: ([], []) for k in results} for _ in readers_drawn
    ]  # (more, less) presses
    history = [pid for past in days[: args.history_days] for pid in by_day[past]]
    progress.start("days", f"simulate {len(readers_drawn)} readers", len(sim_days))
    for day_no, day in enumerate(sim_days):
        today = [papers[i] for i in by_day[day]]
        bases = [Profile(categories=(c,), max_items=DIGEST) for _, c, _ in readers_drawn]
        # every reader of the day in one call, as the planner matches a window group
        pressed = {pid for s in state for pid in chain(*s["learning"])}
        learning = matcher.match(
            [profile_with_feedback(b, *s["learning"]) for b, s in zip(bases, state, strict=True)],
            today,
            liked={pid: papers[pid] for pid in pressed},  # as the planner passes them
        )
        plain = matcher.match(bases, today)
        seen = [pid for past in sim_days[: day_no + 1] for pid in by_day[past]]
        for j, (_, c, d) in enumerate(readers_drawn):
            wanted = {p.id for p in today if c in labels[p.id] and d in labels[p.id]}
            digests = {
                "learning": [i.paper_id for i in learning[j]],
                "none": [i.paper_id for i in plain[j]],
            }
            if x is not None:
                digests["svm"] = _svm(
                    x, where, state[j]["svm"][0], [*history, *seen], today, c, digests["none"]
                )
            results["oracle"][day_no].append(min(DIGEST, len(wanted)) / DIGEST)
            for kind, digest in digests.items():
                hits = sum(pid in wanted for pid in digest[:DIGEST])
                results[kind][day_no].append(hits / DIGEST)
                more, less = state[j][kind]
                for pid in digest:  # presses, each with probability 0.5
                    if rngs[j].random() < 0.5:
                        (more if pid in wanted else less).append(pid)
        progress.advance("days")
    progress.finish("days", f"{len(readers)} interests × {args.draws} draws")
    progress.close()

    interests = ", ".join(f"{c} ∩ {d}" for c, d in readers)
    print(f"file: {args.file.name}; readers: {len(readers)} ({interests}); ", end="")
    print(f"draws: {args.draws}; days: {len(sim_days)}")
    kinds = [k for k in results if results[k][0]]
    print("| day | " + " | ".join(f"{k}: mean / median P@10" for k in kinds) + " |")
    print("|---:|" + "---:|" * len(kinds))
    summary: dict[str, dict[str, float]] = {}
    for day_no in range(len(sim_days)):
        cells = []
        summary[str(day_no + 1)] = {}
        for k in kinds:
            values = results[k][day_no]
            cells.append(f"{np.mean(values):.3f} / {np.median(_per_draw(values, args.draws)):.3f}")
            summary[str(day_no + 1)][k] = round(float(np.mean(values)), 4)
        print(f"| {day_no + 1} | " + " | ".join(cells) + " |")
    if args.json:
        print(json.dumps({"day": summary}, sort_keys=True))


def _per_draw(values: list[float], draws: int) -> list[float]:
    """Values are appended draw by draw: the mean of each draw's readers."""
    per = len(values) // max(draws, 1)
    return (
        [float(np.mean(values[i * per : (i + 1) * per])) for i in range(draws)] if per else values
    )


def _svm(
    x: object,
    where: dict[str, int],
    more: list[str],
    window: list[str],
    today: list[Paper],
    category: str,
    fallback: list[str],
) -> list[str]:
    """The day's papers of the category ranked by a LinearSVC retrained on the presses."""
    if not more:
        return fallback
    ids = list(dict.fromkeys([*window, *more]))
    rows = [where[i] for i in ids]
    positive = set(more)
    y = np.array([1.0 if i in positive else 0.0 for i in ids])
    clf = LinearSVC(class_weight="balanced", max_iter=1_000_000, tol=1e-6, C=0.01)
    clf.fit(x[rows], y)  # type: ignore[index]
    candidates = [p.id for p in today if category in p.categories]
    if not candidates:
        return []
    scores = clf.decision_function(x[[where[i] for i in candidates]])  # type: ignore[index]
    ranked = np.argsort(-scores, kind="stable")[:DIGEST]
    return [candidates[i] for i in ranked]


if __name__ == "__main__":
    main()
