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
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import signal
import traceback
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from multiprocessing.connection import Connection
from typing import NamedTuple, Protocol

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


class Composing(Protocol):
    """What the sender needs: the letters of the rows it claims, in order, and a way to
    release what composing holds (worker processes) at the end of the run."""

    def letters(
        self, jobs: AsyncIterator[Job], *, clock: Clock, keep_html: bool = False
    ) -> AsyncGenerator[Letter, None]: ...

    def close(self) -> None: ...


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

    def load(self, jobs: Sequence[Job]) -> dict[int, Delivery]:
        """The rows of ``jobs`` with their papers, read in one go (blocking)."""
        return self.store.load_deliveries([i for i, _ in jobs], papers=self.papers)

    def compose_rows(
        self,
        jobs: Sequence[Job],
        *,
        clock: Clock,
        keep_html: bool = False,
        deliveries: Mapping[int, Delivery] | None = None,
    ) -> Iterator[Letter]:
        """The letters of ``jobs``, in order, each composed when asked for; the rows are
        read in one go first, unless ``deliveries`` brings them."""
        if deliveries is None:
            deliveries = self.load(jobs)
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
        """The letters of ``jobs`` in order, each composed as the sender asks for it (rows
        are read 64 at a time)."""
        while part := await _take(jobs, _MAX_CHUNK):
            rows = await asyncio.to_thread(self.load, part)  # no database read on the loop
            for letter in self.compose_rows(
                part, clock=clock, keep_html=keep_html, deliveries=rows
            ):
                yield letter

    def close(self) -> None:
        """Nothing to release here (``ComposePool.close`` stops its workers)."""


class ComposeWorkerError(PaperpostError):
    """A compose worker died (killed, out of memory) or failed on a chunk."""


class ComposePool:
    """Composes in ``processes`` worker processes, in order, a few chunks ahead.

    Workers start on first use (``spawn``: the daemon has threads, so no ``fork``) with a
    copy of the configuration minus its subscriber and source lists, open their own
    database connection, and stop at the end of the run (``letters``). Each has its own
    pipe (not ``ProcessPoolExecutor``, whose shared result pipe hangs the sender for good
    when a worker is killed halfway through writing a reply); a reader thread per worker
    takes replies as they come, so a worker never waits for the sender to read. Workers
    ignore SIGINT and SIGTERM (the sender decides when they stop) and exit when the
    sender does, even after a SIGKILL (their pipe closes). A worker that dies raises
    ``ComposeWorkerError`` out of ``letters``: the sender aborts the run and gives its
    unsent rows back.
    """

    def __init__(self, config: Config, processes: int) -> None:
        self.config = config
        self.processes = processes
        self._workers: list[_Worker] = []
        self._readers: ThreadPoolExecutor | None = None

    def _start(self) -> list[_Worker]:
        if not self._workers:
            slim = dataclasses.replace(
                self.config,
                file=self.config.file.model_copy(update={"subscribers": [], "sources": []}),
            )
            context = multiprocessing.get_context("spawn")
            # One thread per worker waits for its replies: not asyncio's default pool, which
            # has only a few threads (6 on 2 cores) and is shared with everything else.
            self._readers = ThreadPoolExecutor(self.processes, "paperpost-compose-reader")
            self._workers = [_Worker(context, slim, self._readers) for _ in range(self.processes)]
        return self._workers

    async def letters(
        self, jobs: AsyncIterator[Job], *, clock: Clock, keep_html: bool = False
    ) -> AsyncGenerator[Letter, None]:
        workers = self._start()
        readers = [asyncio.create_task(worker.read_replies()) for worker in workers]
        window = 2 * len(workers)
        sizes = _chunk_sizes()
        in_flight: list[_Worker] = []  # which worker has each chunk, oldest first
        turn = 0
        more = True

        async def top_up() -> None:
            # Keep the workers' queues full while this process sends what came back.
            nonlocal more, turn
            while more and len(in_flight) < window:
                if part := await _take(jobs, next(sizes)):
                    worker = workers[turn % len(workers)]
                    worker.submit(part, clock(), keep_html)
                    in_flight.append(worker)
                    turn += 1
                else:
                    more = False

        try:
            await top_up()
            while in_flight:
                done = await in_flight.pop(0).reply()
                await top_up()
                for letter in done:
                    yield letter
        finally:
            for task in readers:
                task.cancel()
            # Workers live for one run: stopping them also ends the reader threads (EOF).
            # Stopped early or after a worker died, replies may be left unread: they go too.
            # Joining them blocks, so not on the event loop (shielded: also when cancelled).
            await asyncio.shield(asyncio.to_thread(self.close))

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None


class _Worker:
    """One compose worker process and its end of the pipe."""

    def __init__(
        self,
        context: multiprocessing.context.SpawnContext,
        config: Config,
        readers: ThreadPoolExecutor,
    ) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, config), name="paperpost-compose", daemon=True
        )
        self.process.start()
        child.close()  # only the worker holds its end: its death is EOF here
        self.replies: asyncio.Queue[list[Letter] | BaseException] = asyncio.Queue()
        self._readers = readers

    def submit(self, part: list[Job], now: datetime, keep_html: bool) -> None:
        try:
            self.conn.send((part, now, keep_html))
        except OSError as exc:
            raise self._died() from exc

    async def read_replies(self) -> None:
        while True:
            try:
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(self._readers, self.conn.recv)
            except (EOFError, OSError):
                self.replies.put_nowait(self._died())
                return
            if isinstance(reply, str):  # the worker's traceback
                self.replies.put_nowait(ComposeWorkerError(f"compose worker failed: {reply}"))
            else:
                self.replies.put_nowait(reply)

    async def reply(self) -> list[Letter]:
        reply = await self.replies.get()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _died(self) -> ComposeWorkerError:
        self.process.join(timeout=1)
        return ComposeWorkerError(
            f"compose worker {self.process.pid} exited (exit code {self.process.exitcode})"
        )

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)  # finish the chunk in hand, then exit
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def make_composer(config: Config, store: Store) -> Composing:
    """Composing as ``[mail] render_processes`` says: here (0) or in that many workers."""
    processes = config.file.mail.render_processes
    if processes and is_in_memory(config.database_url):
        log.warning(
            "mail.render_processes = %d ignored: an in-memory database cannot be shared "
            "with worker processes; composing in this process",
            processes,
        )
        processes = 0
    return ComposePool(config, processes) if processes else Composer(config, store)


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
def _serve(conn: Connection, config: Config) -> None:
    """A worker's life: compose each chunk that arrives, until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = Store.open(config.database_url, auto_upgrade=False)
    composer = Composer(config, store)
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the sender is gone
                return
            if task is None:
                return
            part, now, keep_html = task
            clock = itertools.repeat(now).__next__  # one reading for the whole chunk
            try:
                reply: list[Letter] | str = list(
                    composer.compose_rows(part, clock=clock, keep_html=keep_html)
                )
            except Exception:
                reply = traceback.format_exc()
            try:
                conn.send(reply)
            except OSError:
                return
    finally:
        store.close()


__all__ = [
    "ComposePool",
    "ComposeWorkerError",
    "Composer",
    "Composing",
    "Job",
    "Letter",
    "make_composer",
    "make_renderer",
    "make_signer",
]
