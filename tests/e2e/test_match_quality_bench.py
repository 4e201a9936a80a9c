"""The match quality benchmark (bench/match_quality.py) runs end to end on a tiny listing
whose categories have no hand-written description text (split from tests/unit/test_ranking.py:
it runs the script in a subprocess)."""

from __future__ import annotations

import json
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
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["query"]["ours"]) == {"p10", "r50", "ndcg20"}
    assert summary["query"]["svm"] is None  # --no-svm
    assert summary["skipped"] == {"authors": "tiny.jsonl has no authors"}
    for kind in ("categories", "query", "about", "5 liked, 2 draws"):
        assert 0.0 <= summary[kind]["tie_rate"] <= 1.0
