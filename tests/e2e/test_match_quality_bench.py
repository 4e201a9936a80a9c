"""The match quality benchmark (bench/match_quality.py) runs end to end on a tiny listing
whose categories have no hand-written description text (split from tests/unit/test_ranking.py:
it runs the script in a subprocess), and, like every long benchmark, shows its progress on
stderr as plain lines when stderr is not a terminal (``pipeline.progress.LineProgress``)
while stdout carries only the results, the ``--json`` object as its last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.unit.test_ranking import FILLER

ROOT = Path(__file__).resolve().parents[2]


def test_the_quality_benchmark_runs_on_a_category_without_hand_written_text(
    tmp_path: Path,
) -> None:
    topics = {
        "cs.IT": "channel capacity coding theorem for noisy channels",
        "cs.LG": "neural network training with stochastic gradient descent",
        "math.CO": "graph coloring and extremal combinatorics of hypergraphs",
    }
    rows = []
    for day in range(5):
        for k, (cat, words) in enumerate(topics.items()):
            for j in range(4):
                rows.append(
                    {
                        "id": f"250{day}.{k}{j:03d}",
                        "listing_date": f"2025-01-0{day + 1}",
                        "title": f"On {words.split()[j]} {words.split()[j + 1]}",
                        "abstract": f"{words}. {FILLER}",
                        "categories": [cat] if j % 2 else [cat, "cs.LG"],
                    }
                )
    data = tmp_path / "tiny.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "match_quality.py"),
            "--file",
            str(data),
            "--history-days",
            "2",
            "--draws",
            "2",
            "--no-svm",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().splitlines()
    summary = json.loads(out[-1])
    assert set(summary["query"]["ours"]) == {"p10", "r50", "ndcg20"}
    assert summary["query"]["svm"] is None  # --no-svm
    assert summary["skipped"] == {"authors": "tiny.jsonl has no authors"}
    for kind in ("categories", "query", "about", "5 liked, 2 draws"):
        assert 0.0 <= summary[kind]["tie_rate"] <= 1.0
    assert summary["5 liked, 2 draws"]["profiles"] == 6

    # Progress: "<label>: started (0/<total>)", "<label>: <n>/<total> (<p> %)" at each
    # tenth, "<label>: done, <note>", in order, on stderr only, with no terminal escapes.
    err = done.stderr.splitlines()

    def index(pattern: str) -> int:
        found = [n for n, line in enumerate(err) if re.fullmatch(pattern, line)]
        assert len(found) == 1, (pattern, done.stderr)
        return found[0]

    steps = [
        (r"fit: started", r"fit: done, 60 papers; 2 engines, SVM False"),
        (r"match \d+ profiles: started \(0/2\)", r"match \d+ profiles: done, ours, tfidf"),
        (r"profile kinds: started \(0/\d+\)", r"profile kinds: done, 3 categories each"),
        (r"5 liked, 2 draws: started \(0/2\)", r"5 liked, 2 draws: done, 3 profiles each"),
        (r"admission thresholds: started \(0/7\)", r"admission thresholds: done"),
    ]
    previous = -1
    for started, finished in steps:
        first, last = index(started), index(finished)
        assert previous < first < last, (started, done.stderr)
        previous = last
    assert index(r"5 liked, 2 draws: 1/2 \(50 %\)") < index(r"5 liked, 2 draws: 2/2 \(100 %\)")
    assert "\x1b[" not in done.stderr
    assert not [line for line in out if re.search(r": (started|done)\b|\(\d+ %\)$", line)]
    assert not any(line.lstrip().startswith("{") for line in out[:-1])
