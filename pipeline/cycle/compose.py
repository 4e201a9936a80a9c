"""Composing: turn claimed outbox rows into the bytes to send (load each row with its
papers, sign its links, render, build the message), here or in worker processes.

Composing writes nothing: row ids, their readers' schedules and a clock reading in,
message bytes out. That is what makes worker processes safe for "nothing lost, nothing
twice": the sender keeps the claim, the ``sending`` / ``sent`` marks and the SMTP
exchange, and a worker that dies only costs the batch a retry.

Why workers (``[mail] render_processes``): loading, signing, rendering and building a
digest cost more CPU than its SMTP exchange, and one Python process runs on one core.
With workers, the sender's core does the outbox marks and the wire while another core
composes the next digests. A worker reads the rows from the database itself (its own
connection and paper cache), so only ids go to it and only bytes come back: shipping the
papers there cost more than rendering them (bench/SEND.md has the figures).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import NamedTuple

from pipeline.config import Config
from pipeline.cycle.digest import build_digest, message_headers
from pipeline.domain import Schedule
from pipeline.errors import PaperpostError
from pipeline.mail import build_message
from pipeline.render import Renderer, RenderOptions
from pipeline.store import Delivery, PaperCache, Store
from pipeline.store.engine import is_in_memory
from pipeline.web.tokens import TokenSigner

log = logging.getLogger("paperpost.deliver")

Clock = Callable[[], datetime]
# One job: an outbox row's id and its reader's schedule (the period label and footer).
Job = tuple[int, Schedule]

# Chunks start small, so the sender is not idle long at the start of a batch, and grow
# to amortise the hand-off to a worker (one pickle each way per chunk).
_FIRST_CHUNK = 4
_MAX_CHUNK = 64


def make_signer(config: Config) -> TokenSigner:
    return TokenSigner(config.secrets.link_keys)


def make_renderer(config: Config) -> Renderer:
    return Renderer(
        config.template_dir, RenderOptions(snippet_chars=config.file.render.snippet_chars)
    )


class Letter(NamedTuple):
    """One composed row: the message bytes, or why there are none. (A tuple: it crosses
    the process boundary once per digest.)"""

    delivery_id: int
    data: bytes | None
    error: str | None = None  # why the message could not be built (data is None)
    html: str | None = None  # the HTML part, kept only when previews are written
    papers: int = 0  # how many papers it carries, for the log


class Composer:
    """Composes in this process, reading rows through ``store``.

    Not thread-safe (the renderer's and the paper caches): one per sender.
    """

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.renderer = make_renderer(config)
        self.signer = make_signer(config)
        self.papers: PaperCache = {}  # built once a run, reused while unchanged

    def compose(self, delivery: Delivery, schedule: Schedule, *, now: datetime) -> Letter:
        """One row's message; a row whose message cannot be built gets the reason."""
        try:
            digest = build_digest(self.config, self.signer, delivery, schedule, now=now)
            rendered = self.renderer.render(digest)
            headers = message_headers(self.config, delivery, digest, rendered.subject, now=now)
            data = build_message(headers, rendered)
        except PaperpostError as exc:
            # A hostile name or title that cannot be made safe: this recipient only.
            return Letter(delivery.id, None, error=f"could not build the message: {exc}")
        return Letter(delivery.id, data, html=rendered.html, papers=len(delivery.items))

    def compose_rows(
        self, jobs: Sequence[Job], *, clock: Clock, keep_html: bool = False
    ) -> Iterator[Letter]:
        """The letters of ``jobs``, in order, each composed when asked for; the rows are
        read in one go first."""
        deliveries = self.store.load_deliveries([i for i, _ in jobs], papers=self.papers)
        for delivery_id, schedule in jobs:
            delivery = deliveries.get(delivery_id)
            if delivery is None:
                yield Letter(delivery_id, None, error="the outbox row is gone")
                continue
            letter = self.compose(delivery, schedule, now=clock())
            yield letter if keep_html else letter._replace(html=None)

    async def letters(
        self, jobs: AsyncIterator[Job], *, clock: Clock, keep_html: bool = False
    ) -> AsyncGenerator[Letter, None]:
        """The letters of ``jobs`` in order, composed as the sender asks for them."""
        for size in _chunk_sizes():
            if not (part := await _take(jobs, size)):
                return
            for letter in self.compose_rows(part, clock=clock, keep_html=keep_html):
                yield letter

    def close(self) -> None:
        """Nothing to release here (``ComposePool.close`` stops its workers)."""


class ComposePool(Composer):
    """Composes in ``processes`` worker processes, in order, a few chunks ahead.

    Workers start on first use (``spawn``: the daemon has threads, so no ``fork``) with a
    copy of the configuration minus its subscriber and source lists, and open their own
    database connection. They ignore SIGINT and SIGTERM (the sender decides when they
    stop) and exit when the sender does, even after a SIGKILL (their task pipe closes).
    A worker that dies raises ``BrokenProcessPool`` out of ``letters``: the sender aborts
    the batch and gives its unsent rows back.
    """

    def __init__(self, config: Config, store: Store, processes: int) -> None:
        super().__init__(config, store)
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            slim = dataclasses.replace(
                self.config,
                file=self.config.file.model_copy(update={"subscribers": [], "sources": []}),
            )
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(slim,),
            )
        return self._executor

    async def letters(
        self, jobs: AsyncIterator[Job], *, clock: Clock, keep_html: bool = False
    ) -> AsyncGenerator[Letter, None]:
        pool = self._pool()
        window = 2 * self.processes
        sizes = _chunk_sizes()
        in_flight: list[Future[list[Letter]]] = []
        more = True

        async def top_up() -> None:
            # Keep the workers' queue full while this process sends what came back.
            nonlocal more
            while more and len(in_flight) < window:
                if part := await _take(jobs, next(sizes)):
                    in_flight.append(pool.submit(_compose_chunk, part, clock(), keep_html))
                else:
                    more = False

        try:
            await top_up()
            while in_flight:
                done = await asyncio.wrap_future(in_flight.pop(0))
                await top_up()
                for letter in done:
                    yield letter
        finally:
            for future in in_flight:  # stopped early: drop what was not asked for
                future.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def make_composer(config: Config, store: Store) -> Composer:
    """Composing as ``[mail] render_processes`` says: here (0) or in that many workers."""
    processes = config.file.mail.render_processes
    if processes and is_in_memory(config.database_url):
        log.warning(
            "mail.render_processes = %d ignored: an in-memory database cannot be shared "
            "with worker processes; composing in this process",
            processes,
        )
        processes = 0
    return ComposePool(config, store, processes) if processes else Composer(config, store)


def _chunk_sizes() -> Iterator[int]:
    """4, 8, 16, 32, 64, 64, ...: how many jobs each chunk takes."""
    size = _FIRST_CHUNK
    while True:
        yield size
        size = min(size * 2, _MAX_CHUNK)


async def _take(jobs: AsyncIterator[Job], count: int) -> list[Job]:
    """Up to ``count`` jobs from ``jobs`` (fewer at its end)."""
    part: list[Job] = []
    async for job in jobs:
        part.append(job)
        if len(part) == count:
            break
    return part


# -- inside a worker process ----------------------------------------------------------------
_worker: Composer | None = None


def _start_worker(config: Config) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _worker = Composer(config, Store.open(config.database_url, auto_upgrade=False))


def _compose_chunk(jobs: list[Job], now: datetime, keep_html: bool) -> list[Letter]:
    assert _worker is not None, "worker not started"
    return list(_worker.compose_rows(jobs, clock=lambda: now, keep_html=keep_html))


__all__ = [
    "ComposePool",
    "Composer",
    "Job",
    "Letter",
    "make_composer",
    "make_renderer",
    "make_signer",
]
