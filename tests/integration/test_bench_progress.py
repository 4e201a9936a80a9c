"""The long benchmarks show their progress on stderr (issue 17): plain lines when stderr is
not a terminal (``pipeline.progress.LineProgress``), while stdout carries only the results,
``--json`` as its last line. Runs bench/match_quality.py, the fastest with a ``--json``
option, on a tiny listing in a subprocess (stdout and stderr are pipes, not terminals)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOPICS = {
    "cs.IT": "channel capacity coding theorem for noisy channels",
    "cs.LG": "neural network training with stochastic gradient descent",
    "math.CO": "graph coloring and extremal combinatorics of hypergraphs",
}
FILLER = "We study learning systems and report experiments on standard benchmarks."


def _listing(path: Path) -> Path:
    """Five listing days of three topics, four papers each a day."""
    rows = []
    for day in range(5):
        for k, (category, words) in enumerate(TOPICS.items()):
            for j in range(4):
                rows.append(
                    {
                        "id": f"250{day}.{k}{j:03d}",
                        "listing_date": f"2025-01-0{day + 1}",
                        "title": f"On {words.split()[j]} {words.split()[j + 1]}",
                        "abstract": f"{words}. {FILLER}",
                        "categories": [category] if j % 2 else [category, "cs.LG"],
                    }
                )
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_a_benchmark_shows_plain_progress_lines_on_stderr_and_keeps_json_last_on_stdout(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "match_quality.py"),
            "--file",
            str(_listing(tmp_path / "tiny.jsonl")),
            "--history-days",
            "2",
            "--draws",
            "2",
            "--no-svm",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()

    # (a) LineProgress lines: "<label>: started (0/<total>)", "<label>: <n>/<total> (<p> %)"
    # at each tenth, "<label>: done, <note>"; no terminal escapes.
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

    # (b) stdout: the results only, the JSON summary as its last line, one object.
    out = done.stdout.strip().splitlines()
    assert not [line for line in out if re.search(r": (started|done)\b|\(\d+ %\)$", line)]
    summary = json.loads(out[-1])
    assert isinstance(summary, dict)
    assert summary["5 liked, 2 draws"]["profiles"] == 6
    assert not any(line.lstrip().startswith("{") for line in out[:-1])
