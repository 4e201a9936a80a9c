"""Simulated readers who share an interest and read at different times of the day: does
the co-reader term (what the earlier readers pressed) help the later ones?

Usage::

    .venv/bin/python bench/coreaders_sim.py [--file F.jsonl] [--draws 16] [--days 10]
        [--slots 8] [--weights 0.1,0.2,0.3] [--json]

Protocol (issue 15, the co-reader term). The interests are those of
``bench/feedback_sim.py``: for each of the 20 most frequent categories C, the category D
that co-occurs most with it (at least 10 papers of C ∩ D on the simulated days). A
simulated reader subscribes to ``categories = [C]`` but truly wants C ∩ D. Per draw,
``--slots`` readers share each interest, one in each of ``--slots`` time zones: on each
listing day the slot-1 readers receive their digest (10 papers of the day) first, then
the slot-2 readers, and so on. Each reader presses "more" on each digest paper in C ∩ D
and "less" on each other one, each press with probability 0.5. Every reader of a draw
(all interests) writes to one feedback table, as on one installation: a reader of
slot k is matched with the counts of the presses the readers of slots 1 … k − 1 made
that day on that day's papers (``coreaders=``, as ``store.coreader_counts`` gives them),
so readers of other interests who were sent the same paper count too. Draws are
independent installations.

Worlds (each simulated separately, since presses depend on the digests):

- **none**: ``categories = [C]`` only;
- **coreaders**: the same, with the co-reader term (``rank_coreaders`` = each of
  ``--weights``);
- **learning**: the reader's own presses as the planner folds them in
  (``plan.profile_with_feedback`` + ``liked=``: Rocchio and the ``feedback`` term), no
  co-reader counts;
- **learning + coreaders**: both (the shipped behaviour, at each weight);
- **oracle**: min(10, #C ∩ D that day) / 10.

Reported: P@10 for C ∩ D per day (mean over interests × slots × draws), the mean over
the days, and the mean per slot (slot 1 never sees a co-reader's press).
``--json`` prints ``{"day": {...}, "mean": {...}, "slot": {...}}`` as the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

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
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument(
        "--weights",
        default=str(MatchSettings().rank_coreaders),
        help="comma-separated rank_coreaders values to simulate",
    )
    parser.add_argument("--json", action="store_true")
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
    interests: list[tuple[str, str]] = []
    for c, _ in counts.most_common(20):
        for (a, other), _ in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
            both = sum(c in labels[i] and other in labels[i] for i in simulated)
            if a == c != other and both >= 10:
                interests.append((c, other))
                break

    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    plain = Matcher.fit(list(papers.values()), MatchSettings())  # without counts: no term
    matchers: dict[float, Matcher] = {}
    for w in weights:  # the same fit, another weight (the weight is not part of the fit)
        matchers[w] = copy.copy(plain)
        matchers[w].settings = replace(plain.settings, rank_coreaders=w)
    worlds: dict[str, tuple[Matcher, bool, bool]] = {  # matcher, own learning, counts
        "none": (plain, False, False),
        "learning": (plain, True, False),
    }
    for w in weights:
        worlds[f"coreaders {w:g}"] = (matchers[w], False, True)
        worlds[f"learning + coreaders {w:g}"] = (matchers[w], True, True)

    wanted_by_day = [
        [
            {pid for pid in by_day[day] if c in labels[pid] and d in labels[pid]}
            for c, d in interests
        ]
        for day in sim_days
    ]
    # results[world][day][slot] -> P@10 values over interests × draws
    results: dict[str, list[list[list[float]]]] = {
        k: [[[] for _ in range(args.slots)] for _ in sim_days] for k in [*worlds, "oracle"]
    }
    for day_no, wanted_lists in enumerate(wanted_by_day):
        for wanted in wanted_lists:
            for slot in range(args.slots):
                results["oracle"][day_no][slot] += [min(DIGEST, len(wanted)) / DIGEST] * args.draws
    # Progress on stderr (bars on a terminal, plain lines otherwise), closed before the
    # tables are printed: stdout carries only them.
    progress = progress_for(sys.stderr)
    for name, (matcher, learn, with_counts) in worlds.items():
        progress.start(name, f"simulate: {name}", args.draws)
        for draw in range(args.draws):
            _world(
                matcher,
                learn,
                with_counts,
                draw,
                interests,
                args.slots,
                sim_days,
                by_day,
                papers,
                wanted_by_day,
                results[name],
            )
            progress.advance(name)
        progress.finish(name, f"{len(interests)} interests × {args.slots} slots")
    progress.close()

    names = ", ".join(f"{c} ∩ {d}" for c, d in interests)
    print(f"file: {args.file.name}; interests: {len(interests)} ({names}); ", end="")
    print(f"slots: {args.slots}; draws: {args.draws}; days: {len(sim_days)}")
    kinds = list(results)
    print("| day | " + " | ".join(kinds) + " |")
    print("|---:|" + "---:|" * len(kinds))
    summary: dict[str, dict[str, dict[str, float]]] = {"day": {}, "mean": {}, "slot": {}}
    for day_no in range(len(sim_days)):
        cells = []
        summary["day"][str(day_no + 1)] = {}
        for k in kinds:
            value = float(np.mean([v for slot in results[k][day_no] for v in slot]))
            cells.append(f"{value:.3f}")
            summary["day"][str(day_no + 1)][k] = round(value, 4)
        print(f"| {day_no + 1} | " + " | ".join(cells) + " |")
    means = {
        k: float(np.mean([v for day in results[k] for slot in day for v in slot])) for k in kinds
    }
    print("| mean | " + " | ".join(f"{means[k]:.3f}" for k in kinds) + " |")
    summary["mean"] = {"all": {k: round(v, 4) for k, v in means.items()}}
    print()
    print("| slot | " + " | ".join(kinds) + " |")
    print("|---:|" + "---:|" * len(kinds))
    for slot in range(args.slots):
        values = {k: float(np.mean([v for day in results[k] for v in day[slot]])) for k in kinds}
        summary["slot"][str(slot + 1)] = {k: round(v, 4) for k, v in values.items()}
        print(f"| {slot + 1} | " + " | ".join(f"{values[k]:.3f}" for k in kinds) + " |")
    if args.json:
        print(json.dumps(summary, sort_keys=True))


def _world(
    matcher: Matcher,
    learn: bool,
    with_counts: bool,
    draw: int,
    interests: list[tuple[str, str]],
    slots: int,
    sim_days: list[str],
    by_day: dict[str, list[str]],
    papers: dict[str, Paper],
    wanted_by_day: list[list[set[str]]],
    out: list[list[list[float]]],
) -> None:
    """One installation: ``slots`` readers per interest, their presses in one table."""
    readers = [(j, slot) for slot in range(slots) for j in range(len(interests))]
    rngs = {(j, s): random.Random(f"{draw}:{interests[j]}:{s}") for j, s in readers}
    own: dict[tuple[int, int], tuple[list[str], list[str]]] = {r: ([], []) for r in readers}
    bases = [Profile(categories=(c,), max_items=DIGEST) for c, _ in interests]
    for day_no, day in enumerate(sim_days):
        today = [papers[i] for i in by_day[day]]
        presses: dict[str, tuple[int, int]] = {}  # today's counts, as the store gives them
        for slot in range(slots):
            group = [(j, slot) for j in range(len(interests))]
            profiles = [
                profile_with_feedback(bases[j], *own[(j, s)]) if learn else bases[j]
                for j, s in group
            ]
            liked = (
                {pid: papers[pid] for r in group for pid in (*own[r][0], *own[r][1])}
                if learn
                else None
            )
            digests = matcher.match(
                profiles, today, liked=liked, coreaders=dict(presses) if with_counts else None
            )
            for (j, s), items in zip(group, digests, strict=True):
                wanted = wanted_by_day[day_no][j]
                digest = [i.paper_id for i in items][:DIGEST]
                out[day_no][s].append(sum(pid in wanted for pid in digest) / DIGEST)
                more, less = own[(j, s)]
                for pid in digest:  # presses, each with probability 0.5
                    if rngs[(j, s)].random() < 0.5:
                        m, x = presses.get(pid, (0, 0))
                        if pid in wanted:
                            more.append(pid)
                            presses[pid] = (m + 1, x)
                        else:
                            less.append(pid)
                            presses[pid] = (m, x + 1)


if __name__ == "__main__":
    main()
