"""Two writers (two Store objects, as two `paperpost worker` processes have) ingesting
sources that list the same new papers at the same moment: neither fails on the other's
insert, and every stored record carries both sources (neither merge is overwritten)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from pipeline.domain import Paper
from pipeline.ingest.run import _merge_and_save
from pipeline.store import Store

NOW = datetime(2026, 7, 20, 6, 0, tzinfo=UTC)
WRITERS = 3
ROUNDS = 8
PAPERS_PER_ROUND = 40


def listing(round_no: int) -> list[Paper]:
    return [
        Paper(
            id=f"2607.{round_no:02d}{n:03d}",
            title=f"Paper {n} of round {round_no}",
            abstract="An abstract.",
            categories=("cs.LG",),
            version=1,
        )
        for n in range(PAPERS_PER_ROUND)
    ]


def test_concurrent_sources_listing_the_same_papers_merge_one_after_the_other(
    db_url: str,
) -> None:
    Store.open(db_url, auto_upgrade=True).close()
    stores = [Store.open(db_url) for _ in range(WRITERS)]
    errors: list[BaseException] = []
    try:
        for round_no in range(ROUNDS):
            papers = listing(round_no)
            start = threading.Barrier(WRITERS)

            def write(
                i: int, papers: list[Paper] = papers, start: threading.Barrier = start
            ) -> None:
                start.wait()
                try:
                    _merge_and_save(stores[i], papers, source=f"source-{i}", now=NOW, run=None)
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        assert errors == []
        stored = stores[0].papers_by_id([p.id for r in range(ROUNDS) for p in listing(r)])
        assert len(stored) == ROUNDS * PAPERS_PER_ROUND
        expected = {f"source-{i}" for i in range(WRITERS)}
        lost = {pid: p.sources for pid, p in stored.items() if set(p.sources) != expected}
        assert lost == {}
    finally:
        for store in stores:
            store.close()
