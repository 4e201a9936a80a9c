"""Papers and source fetch state (the ingest stage's port)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from pipeline.domain import AnnounceType, Paper
from pipeline.store.base import StoreBase
from pipeline.store.rows import (
    PAPER_VERSIONS,
    PAPERS,
    PaperRow,
    PaperVersionRow,
    RunRow,
    SourceRow,
)

_CHUNK = 500
# The advisory lock merging writers take on PostgreSQL (any constant bigint; a database
# shared by several installations only serialises their ingest saves a little more).
_MERGE_LOCK = 0x7061_7065_7270_6F73  # "paperpos"


@dataclass(frozen=True)
class SourceState:
    name: str
    etag: str | None = None
    last_modified: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    entries_seen: int = 0


@dataclass(frozen=True)
class SaveStats:
    new: int
    updated: int
    unchanged: int
    lapsed: bool = False  # the ingest run had been closed: nothing was written


def paper_from_row(row: PaperRow | Row[Any]) -> Paper:
    """A ``Paper`` from an ORM row or a Core row of the papers table."""
    return Paper(
        id=row.id,
        title=row.title,
        abstract=row.abstract,
        authors=tuple(row.authors),
        categories=tuple(row.categories),
        url=row.url,
        pdf_url=row.pdf_url,
        hf_url=row.hf_url,
        version=row.version,
        published=row.published,
        announced=row.announced,
        announce_type=cast("AnnounceType | None", row.announce_type),
        doi=row.doi,
        journal_ref=row.journal_ref,
        upvotes=row.upvotes,
        github_repo=row.github_repo,
        github_stars=row.github_stars,
        tldr=row.tldr,
        first_seen=row.first_seen,
        sources=tuple(row.sources),
    )


_FIELDS = (
    "title", "abstract", "url", "pdf_url", "hf_url", "version", "published", "announced",
    "announce_type", "doi", "journal_ref", "upvotes", "github_repo", "github_stars", "tldr",
)  # fmt: skip


_COLUMNS = (*_FIELDS, "authors", "categories", "sources")


def _values(paper: Paper) -> dict[str, object]:
    """The stored columns of ``paper`` (everything but id, first_seen and updated_at)."""
    values: dict[str, object] = {name: getattr(paper, name) for name in _FIELDS}
    for name in ("authors", "categories", "sources"):
        values[name] = list(getattr(paper, name))
    return values


class PaperStore(StoreBase):
    # -- sources -----------------------------------------------------------------------------
    def sync_sources(self, sources: Sequence[tuple[str, str, str]]) -> None:
        """Make sure a row exists for each configured (name, kind, url)."""
        with self.write() as s:
            existing = {r.name: r for r in s.scalars(select(SourceRow))}
            for name, kind, url in sources:
                row = existing.get(name)
                if row is None:
                    s.add(
                        SourceRow(
                            name=name, kind=kind, url=url, consecutive_failures=0, entries_seen=0
                        )
                    )
                elif (row.kind, row.url) != (kind, url):
                    # A different feed under the same name: its validators mean nothing now.
                    row.kind, row.url, row.etag, row.last_modified = kind, url, None, None

    def source_state(self, name: str) -> SourceState:
        with self.read() as s:
            row = s.get(SourceRow, name)
            if row is None:
                return SourceState(name=name)
            return _state(row)

    def source_states(self) -> list[SourceState]:
        with self.read() as s:
            return [_state(r) for r in s.scalars(select(SourceRow).order_by(SourceRow.name))]

    def record_source_success(
        self,
        name: str,
        *,
        etag: str | None,
        last_modified: str | None,
        entries: int,
        now: datetime,
    ) -> None:
        with self.write() as s:
            row = self._source_row(s, name)
            row.etag, row.last_modified = etag, last_modified
            row.last_attempt = row.last_success = now
            row.consecutive_failures = 0
            row.last_error = None
            row.entries_seen = (row.entries_seen or 0) + entries

    def record_source_failure(self, name: str, *, error: str, now: datetime) -> None:
        with self.write() as s:
            row = self._source_row(s, name)
            row.last_attempt = now
            row.consecutive_failures = (row.consecutive_failures or 0) + 1
            row.last_error = error[:2000]

    @staticmethod
    def _source_row(s: Session, name: str) -> SourceRow:
        row = s.get(SourceRow, name)
        if row is None:
            row = SourceRow(name=name, kind="", url="", consecutive_failures=0, entries_seen=0)
            s.add(row)
        return row

    # -- papers ------------------------------------------------------------------------------
    def papers_by_id(self, ids: Collection[str]) -> dict[str, Paper]:
        with self.read() as s:
            return _papers_in(s, ids)

    def save_papers(
        self,
        papers: Sequence[Paper],
        *,
        now: datetime,
        run: int | None = None,
        merge: Callable[[dict[str, Paper]], Sequence[Paper]] | None = None,
    ) -> SaveStats:
        """Insert or replace whole records; keep ``first_seen`` of known ones.

        Core statements in bulk (one executemany per chunk for inserts, updates and new
        versions): the ORM unit of work cost twice the parsing for a 5,000-item listing.

        With ``merge``, the records saved are ``merge(stored)``, where ``stored`` holds the
        stored records of ``papers``' ids read in this transaction, after every other
        merging writer committed: on SQLite the write transaction excludes the others, on
        PostgreSQL a transaction-scoped advisory lock does. Two workers ingesting sources
        that list the same paper then merge one after the other; neither fails on the
        other's insert nor overwrites what the other merged in.

        With ``run``, the ingest run that writes: its row is read first in the same
        transaction (share-locked on PostgreSQL) and nothing is written, ``lapsed`` set,
        when planning has closed it meanwhile (``OpsStore.ingest_fence``).
        """
        new = updated = unchanged = 0
        papers_t = PAPERS
        versions_t = PAPER_VERSIONS
        compared = [papers_t.c[name] for name in ("id", *_COLUMNS)]
        with self.write() as s:
            conn = s.connection()
            if run is not None and _run_closed(s, run):
                return SaveStats(new=0, updated=0, unchanged=0, lapsed=True)
            if merge is not None:
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(_MERGE_LOCK)))
                papers = merge(_papers_in(s, [p.id for p in papers]))
            by_id = {p.id: p for p in papers}  # last one wins within a batch
            ids = list(by_id)
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                existing = {
                    row.id: row._mapping
                    for row in conn.execute(select(*compared).where(papers_t.c.id.in_(chunk)))
                }
                versions = {
                    (pid, version)
                    for pid, version in conn.execute(
                        select(versions_t.c.paper_id, versions_t.c.version).where(
                            versions_t.c.paper_id.in_(chunk)
                        )
                    )
                }
                inserts: list[dict[str, object]] = []
                updates: list[dict[str, object]] = []
                new_versions: list[dict[str, object]] = []
                for pid in chunk:
                    paper = by_id[pid]
                    values = _values(paper)
                    old = existing.get(pid)
                    if old is None:
                        inserts.append(
                            {
                                "id": pid,
                                **values,
                                "first_seen": paper.first_seen or now,
                                "updated_at": now,
                            }
                        )
                        new += 1
                    elif any(old[name] != value for name, value in values.items()):
                        updates.append({"key": pid, **values, "updated_at": now})
                        updated += 1
                    else:
                        unchanged += 1
                    if paper.version is not None and (pid, paper.version) not in versions:
                        new_versions.append(
                            {"paper_id": pid, "version": paper.version, "seen_at": now}
                        )
                        versions.add((pid, paper.version))
                if inserts:
                    conn.execute(insert(papers_t), inserts)
                if updates:
                    conn.execute(update(papers_t).where(papers_t.c.id == bindparam("key")), updates)
                if new_versions:
                    conn.execute(insert(versions_t), new_versions)
        return SaveStats(new=new, updated=updated, unchanged=unchanged)

    def papers_seen_between(self, start: datetime, end: datetime) -> list[Paper]:
        """Papers first seen in (start, end], oldest first, ties by id (deterministic)."""
        with self.read() as s:
            rows = s.scalars(
                select(PaperRow)
                .where(PaperRow.first_seen > start, PaperRow.first_seen <= end)
                .order_by(PaperRow.first_seen, PaperRow.id)
            )
            return [paper_from_row(r) for r in rows]

    def paper_versions(self, paper_id: str) -> list[int]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(PaperVersionRow.version)
                    .where(PaperVersionRow.paper_id == paper_id)
                    .order_by(PaperVersionRow.version)
                )
            )

    def count_papers(self) -> int:
        with self.read() as s:
            return int(s.scalar(select(func.count()).select_from(PaperRow)) or 0)


def _papers_in(s: Session, ids: Collection[str]) -> dict[str, Paper]:
    wanted = list(dict.fromkeys(ids))
    out: dict[str, Paper] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i : i + _CHUNK]
        for row in s.scalars(select(PaperRow).where(PaperRow.id.in_(chunk))):
            out[row.id] = paper_from_row(row)
    return out


def _run_closed(s: Session, run: int) -> bool:
    """Whether ingest run ``run`` is finished (or unknown), its row share-locked on
    PostgreSQL until the caller's commit, so planning cannot close it in between."""
    query = select(RunRow.finished_at, RunRow.id).where(RunRow.id == run)
    if s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    row = s.execute(query).first()
    return row is None or row.finished_at is not None


def _state(row: SourceRow) -> SourceState:
    return SourceState(
        name=row.name,
        etag=row.etag,
        last_modified=row.last_modified,
        last_attempt=row.last_attempt,
        last_success=row.last_success,
        consecutive_failures=row.consecutive_failures or 0,
        last_error=row.last_error,
        entries_seen=row.entries_seen or 0,
    )
