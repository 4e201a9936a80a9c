"""Matching a large window in blocks: no papers × papers (or profiles × papers) array
beyond ``dense.BLOCK_ELEMENTS``, and the same result as one block.

The large-window test runs a 30,000-paper match in a subprocess under an
address-space limit (``RLIMIT_AS``). numpy, scipy and OpenBLAS reserve virtual
memory at import; the limit was measured (see bench/MATCH.md): the code before
blocking failed at 30,000 papers under 2 GiB and 4 GiB (a 6.8 GiB terms × papers
matrix in ``tables.cosines``; it passed under 8 GiB at 7.8 GB peak RSS), while
at 2,000 papers it ran under 1 GiB; the blocked code passes under 2 GiB (0.9 GB
peak RSS).
"""

from __future__ import annotations

import html
import random
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the subprocess runs this file as a script
    sys.path.insert(0, str(ROOT))

import pipeline.match.select as match_select  # noqa: E402
from pipeline.domain import Paper, Profile  # noqa: E402
from pipeline.match import Matcher, MatchSettings, dense, tables  # noqa: E402

SAMPLES = ROOT / "config" / "samples"
LIMIT = 2 * 1024**3  # address space of the large-window subprocess
CATS = ("cs.CL", "cs.LG", "cs.CV", "cs.AI", "cs.RO", "stat.ML", "cs.IR", "q-bio.QM")


def _vocabulary() -> tuple[list[str], list[str]]:
    """Titles and abstract sentences of the Daily Papers sample listings."""
    titles: list[str] = []
    sentences: list[str] = []
    for path in sorted(SAMPLES.glob("daily-papers-*.rss")):
        text = path.read_text(encoding="utf-8")
        for item in re.findall(r"<item>(.*?)</item>", text, re.S):
            title = re.search(r"<title>(.*?)</title>", item, re.S)
            body = re.search(r"<description>(.*?)</description>", item, re.S)
            if title:
                titles.append(html.unescape(title.group(1)).strip())
            if body:
                parts = re.split(r"(?<=[.!?])\s+", html.unescape(body.group(1)).strip())
                sentences += [s for s in parts if len(s.split()) > 3]
    return titles, sentences


def synthetic_papers(n: int, seed: int = 0, prefix: str = "2601") -> list[Paper]:
    """``n`` papers whose titles and abstracts recombine real titles and sentences."""
    rng = random.Random(seed)
    titles, sentences = _vocabulary()
    title_words = [t.split() for t in titles]
    out = []
    for i in range(n):
        a, b = rng.choice(title_words), rng.choice(title_words)
        title = " ".join(a[: len(a) // 2] + b[len(b) // 2 :])
        abstract = " ".join(rng.sample(sentences, rng.randrange(3, 7)))
        out.append(
            Paper(
                f"{prefix}.{i:05d}",
                title,
                abstract,
                (f"Author {rng.randrange(5000)}", f"Author {rng.randrange(5000)}"),
                tuple(rng.sample(CATS, rng.randrange(1, 3))),
                upvotes=rng.randrange(1, 300) if rng.random() < 0.05 else None,
                announce_type=rng.choice(["new", "new", "cross", "replace"]),
            )
        )
    return out


def profiles_of_each_kind(papers: list[Paper], seed: int = 1) -> list[Profile]:
    """A handful of profiles of each kind: query, categories, about, liked, trending, mixed."""
    rng = random.Random(seed)
    vocab = sorted({w.lower() for p in papers[:300] for w in p.title.split() if w.isalpha()})
    vocab = [w for w in vocab if len(w) > 5]
    ids = [p.id for p in papers]
    out = []
    for _ in range(5):
        a, b, c = rng.sample(vocab, 3)
        out.append(Profile(query=f"{a} OR abs:{b} OR ti:{c}", max_items=20))
        out.append(Profile(categories=tuple(rng.sample(CATS, 2)), max_items=20))
        out.append(Profile(about=rng.choice(papers).title, max_items=20))
        out.append(Profile(like=tuple(rng.sample(ids, 3)), max_items=20))
        out.append(Profile(categories=(rng.choice(CATS),), trending=5, max_items=10))
        out.append(
            Profile(
                query=f"abs:{a}",
                about=rng.choice(papers).abstract[:200],
                like=(rng.choice(ids),),
                dislike=(rng.choice(ids),),
                exclude=f"ti:{c}",
                trending=3,
                max_items=15,
            )
        )
    return out


def _digest(matcher: Matcher, profiles: list[Profile], papers: list[Paper]) -> list[list]:  # type: ignore[type-arg]
    return [
        [(i.paper_id, i.score, i.reason, i.trending) for i in items]
        for items in matcher.match(profiles, papers)
    ]


def test_blocks_give_the_same_scores_and_selections(monkeypatch: pytest.MonkeyPatch) -> None:
    window = synthetic_papers(600, seed=3)
    new = window[-300:]
    settings = MatchSettings(lsa_dimensions=16, chunk_size=64, threads=2)
    matcher = Matcher.fit(window, settings)
    assert matcher.lsa is not None
    profiles = profiles_of_each_kind(new, seed=4) * 3
    one_block = _digest(matcher, profiles, new)
    rows_one = matcher.match_compact(profiles, new).compiled.texts.rows.copy()  # type: ignore[union-attr]
    # a budget of a few thousand elements: dozens of term, cosine and chunk blocks
    for module in (dense, match_select, tables):
        monkeypatch.setattr(module, "BLOCK_ELEMENTS", 3000)
    assert (
        len(list(tables._right_blocks(matcher.match_compact(profiles[:1], new).period.vectors))) > 5
    )
    blocked = _digest(matcher, profiles, new)
    rows_blocked = matcher.match_compact(profiles, new).compiled.texts.rows  # type: ignore[union-attr]
    assert (rows_one == rows_blocked).all()  # bit for bit
    assert blocked == one_block
    assert sum(map(len, one_block)) > 100


def _child(n: int, limit: int) -> None:
    """Run in the subprocess: fit and match ``n`` papers under ``limit`` bytes of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    papers = synthetic_papers(n)
    matcher = Matcher.fit(papers)
    profiles = profiles_of_each_kind(papers)
    result = matcher.match(profiles, papers)
    print(sum(map(len, result)), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def run_under_limit(n: int, limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, __file__, str(n), str(limit)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_thirty_thousand_papers_under_two_gib() -> None:
    done = run_under_limit(30_000, LIMIT)
    assert done.returncode == 0, done.stderr[-2000:]
    items, _peak_mb = map(int, done.stdout.split())
    assert items > 0


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
