"""Speed of the whole match stage: N realistic profiles × 500 new papers.

Usage::

    .venv/bin/python bench/match_speed.py               # 10k, 100k, 1M, 3 runs each
    .venv/bin/python bench/match_speed.py 100000 --runs 5

Each size runs in its own process so peak RSS (ru_maxrss) belongs to that size.
The window (fit corpus) is the two labelled files of bench/data
(3,680 real arXiv papers); the 500 new papers are the latest listing days of
arxiv_cs_dev_2025.jsonl. Authors and upvotes are synthesised deterministically
(the eval files carry none). Profiles mix queries, categories, authors, about
texts, liked and disliked papers, excludes, trending and already-sent ids; see
``make_profiles`` for the proportions. The "distinct queries" rows (``--distinct``,
10k by default) give every reader a query of its own, 3 keywords drawn from the
papers' vocabulary, so query parsing, evaluation and reason lines are measured at
realistic diversity (the mixed rows draw queries from 2,000). Timed separately, each a median over
``--runs`` processes: ``fit``; the vectorised core ``Matcher.match_compact``
(compiling profiles, rule bit sets, similarity products, top-k, trending);
building every profile's ``MatchItem`` list with its reason line
(``MatchResult.items_range`` over chunks, dropped as a sender would); peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.domain import Paper, Profile  # noqa: E402
from pipeline.match import Matcher  # noqa: E402

EVAL = ROOT / "bench" / "data"
FIRST = [
    "Wei",
    "Yann",
    "Ada",
    "Rafael",
    "Maria",
    "Li",
    "Chen",
    "Anna",
    "Lukas",
    "Sofia",
    "Omar",
    "Priya",
    "Kenji",
    "Elena",
    "Jan",
]
LAST = [
    "Zhang",
    "LeCun",
    "Lovelace",
    "Rafailov",
    "Garcia",
    "Wang",
    "Müller",
    "Rossi",
    "Kim",
    "Nguyen",
    "Smith",
    "Okafor",
]


def load_papers() -> tuple[list[Paper], list[Paper]]:
    rng = random.Random(7)
    rows = []
    for name in ("arxiv_cs_dev_2025.jsonl", "arxiv_oai_cs_set_1000_2007.jsonl"):
        rows += [json.loads(line) for line in (EVAL / name).open(encoding="utf-8")]
    papers = []
    for r in rows:
        authors = tuple(
            f"{rng.choice(FIRST)} {rng.choice(LAST)}{rng.randrange(40)}"
            for _ in range(rng.randrange(1, 6))
        )
        upvotes = rng.randrange(1, 200) if rng.random() < 0.1 else None
        papers.append(
            Paper(
                id=r["id"],
                title=r["title"],
                abstract=r["abstract"],
                categories=tuple(r["categories"]),
                authors=authors,
                upvotes=upvotes,
            )
        )
    dev = [
        p for p, r in zip(papers, rows, strict=True) if r.get("listing_date", "") >= "2025-01-01"
    ]
    dates = {r["id"]: r.get("listing_date", "") for r in rows}
    new = sorted(dev, key=lambda p: (dates[p.id], p.id), reverse=True)[:500]
    return papers, new


def distinct_queries(n: int, window: list[Paper], rng: random.Random) -> list[str]:
    """``n`` different queries of 3 keywords from the papers' titles and abstracts."""
    vocab = sorted(
        {
            w.lower()
            for p in window
            for w in (p.title + " " + p.abstract).split()
            if w.isalpha() and len(w) > 4
        }
    )
    seen: set[str] = set()
    out = []
    while len(out) < n:
        a, b, c = rng.sample(vocab, 3)
        q = rng.choice([f"{a} {b} {c}", f"{a} OR {b} OR {c}", f"ti:{a} OR abs:{b} OR abs:{c}"])
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def make_profiles(
    n: int, window: list[Paper], new: list[Paper], *, distinct: bool = False
) -> tuple[list[Profile], list[set[str]]]:
    rng = random.Random(n)
    words = [w for p in window[:800] for w in p.title.split() if w.isalpha() and len(w) > 4]
    cats = [c for p in window for c in p.categories[:1]]
    names = sorted({a for p in window for a in p.authors})
    queries = []
    for _ in range(2000):
        a, b, c = rng.sample(words, 3)
        queries.append(
            rng.choice(
                [
                    f"ti:{a}",
                    f'abs:"{a} {b}"',
                    f"ti:{a} OR abs:{b}",
                    f"cat:{rng.choice(cats)} AND abs:{a[:5]}*",
                    f"({a} OR {b}) ANDNOT ti:{c}",
                    f'au:"{rng.choice(names)}"',
                ]
            )
        )
    titles = [p.title for p in window]
    abouts = [
        " ".join(rng.choice(titles).split()[:6] + rng.choice(titles).split()[-6:])
        for _ in range(20000)
    ]
    ids = [p.id for p in window]
    new_ids = [p.id for p in new]
    own = iter(distinct_queries(n, window, rng)) if distinct else None
    profiles, sent = [], []
    for _ in range(n):
        profiles.append(
            Profile(
                query=next(own)
                if own is not None
                else (rng.choice(queries) if rng.random() < 0.6 else None),
                categories=tuple(rng.sample(cats, rng.randrange(1, 4)))
                if rng.random() < 0.5
                else (),
                authors=tuple(rng.sample(names, rng.randrange(1, 4))) if rng.random() < 0.2 else (),
                about=rng.choice(abouts) if rng.random() < 0.3 else None,
                like=tuple(rng.sample(ids, rng.randrange(1, 11))) if rng.random() < 0.3 else (),
                dislike=tuple(rng.sample(ids, rng.randrange(1, 4))) if rng.random() < 0.05 else (),
                exclude=rng.choice(queries) if rng.random() < 0.1 else None,
                max_items=rng.choice([10, 15, 20]),
                trending=3 if rng.random() < 0.2 else 0,
            )
        )
        sent.append(set(rng.sample(new_ids, 2)) if rng.random() < 0.05 else set())
    return profiles, sent


def run_one(n: int, distinct: bool = False) -> dict[str, float]:
    window, new = load_papers()
    t0 = time.perf_counter()
    matcher = Matcher.fit(window)
    fit = time.perf_counter() - t0
    profiles, sent = make_profiles(n, window, new, distinct=distinct)
    t0 = time.perf_counter()
    result = matcher.match_compact(profiles, new, exclude_ids=sent)
    core = time.perf_counter() - t0
    core_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    items = 0
    step = matcher.settings.chunk_size
    for start in range(0, len(result), step):
        items += sum(map(len, result.items_range(start, start + step)))
    build = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n": n,
        "fit_s": fit,
        "core_s": core,
        "items_s": build,
        "core_rss_mb": core_rss,
        "peak_rss_mb": rss,
        "items": items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--distinct",
        nargs="*",
        type=int,
        default=[10_000],
        help="sizes of the distinct-queries rows (every reader its own query)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.sizes[0], distinct=bool(args.distinct))))
        return
    print(
        "| profiles | core: match_compact | build all items + reasons | core + items "
        "| peak RSS after core | peak RSS after items | items out | fit | runs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(n, False) for n in args.sizes] + [(n, True) for n in args.distinct]
    for n, distinct in rows:
        results = []
        flag = ["--distinct", "1"] if distinct else ["--distinct"]
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, str(n), "--child", *flag],
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(out.stdout))
        core = statistics.median(r["core_s"] for r in results)
        build = statistics.median(r["items_s"] for r in results)
        both = statistics.median(r["core_s"] + r["items_s"] for r in results)
        fit = statistics.median(r["fit_s"] for r in results)
        core_rss = max(r["core_rss_mb"] for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        label = f"{n:,} (distinct queries)" if distinct else f"{n:,}"
        print(
            f"| {label} | {core:.2f} s | {build:.2f} s | {both:.2f} s | {core_rss:,.0f} MB "
            f"| {rss:,.0f} MB | {results[0]['items']:,} | {fit:.2f} s | {len(results)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
