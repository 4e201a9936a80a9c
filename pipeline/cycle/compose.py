"""Composing: turn claimed outbox rows into the bytes to send (load each row with its
papers, sign its links, render, build the message), in the sender's process.

Composing writes nothing: row ids, their readers' schedules and a clock reading in,
message bytes out. The sender keeps the claim, the ``sending`` / ``sent`` marks and the
SMTP exchange.

There is no process pool here any more (``[mail] render_processes`` is retired): one
Python process composes on one core, and several cores or machines run several
``paperpost worker`` processes (``pipeline/runner``, docs/scaling.md), each a sender that
composes what it claims.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from typing import NamedTuple, Protocol

from pipeline.config import Config
from pipeline.cycle.digest import build_digest, message_headers
from pipeline.domain import Schedule
from pipeline.errors import PaperpostError
from pipeline.mail import build_message
from pipeline.mail.dkim import DkimSigner, load_key
from pipeline.render import Renderer, RenderOptions
from pipeline.store import Delivery, PaperCache, Store
from pipeline.web.tokens import TokenSigner

log = logging.getLogger("paperpost.deliver")

Clock = Callable[[], datetime]
# One job: an outbox row's id and its reader's schedule (the period label and footer).
Job = tuple[int, Schedule]

# Rows are read from the database this many at a time.
_MAX_CHUNK = 64


def make_signer(config: Config) -> TokenSigner:
    return TokenSigner(config.secrets.link_keys)


def make_dkim(config: Config) -> DkimSigner | None:
    """The ``[mail.dkim]`` signer (its key read once), or None when DKIM is off."""
    dkim = config.file.mail.dkim
    if dkim is None or config.dkim_key_file is None:
        return None
    return DkimSigner(
        domain=dkim.domain or config.file.mail.sender_domain,
        selector=dkim.selector,
        key=load_key(config.dkim_key_file),
        headers=dkim.headers,
    )


def make_renderer(config: Config) -> Renderer:
    return Renderer(
        config.template_dir, RenderOptions(snippet_chars=config.file.render.snippet_chars)
    )


class Letter(NamedTuple):
    """One composed row: the message bytes, or why there are none."""

    delivery_id: int
    data: bytes | None
    error: str | None = None  # why the message could not be built (data is None)
    html: str | None = None  # the HTML part, kept only when previews are written
    papers: int = 0  # how many papers it carries, for the log


class Composing(Protocol):
    """What the sender needs: the letters of the rows it claims, in order, and a way to
    release what composing holds at the end of the run."""

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
        self.dkim = make_dkim(config)
        self.papers: PaperCache = {}  # built once a run, reused while unchanged

    def compose(self, delivery: Delivery, schedule: Schedule, *, now: datetime) -> Letter:
        """One row's message; a row whose message cannot be built gets the reason."""
        try:
            digest = build_digest(self.config, self.signer, delivery, schedule, now=now)
            rendered = self.renderer.render(digest)
            headers = message_headers(self.config, delivery, digest, rendered.subject, now=now)
            data = build_message(headers, rendered)
            if self.dkim is not None:
                data = self.dkim.sign(data)  # once per message, as the last step
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
        """Nothing to release (the protocol's hook for composers that hold resources)."""


def make_composer(config: Config, store: Store) -> Composing:
    """The composer of one sender: here, reading rows through ``store``."""
    return Composer(config, store)


async def _take(jobs: AsyncIterator[Job], count: int) -> list[Job]:
    """Up to ``count`` jobs from ``jobs`` (fewer at its end)."""
    part: list[Job] = []
    async for job in jobs:
        part.append(job)
        if len(part) == count:
            break
    return part


__all__ = [
    "Composer",
    "Composing",
    "Job",
    "Letter",
    "make_composer",
    "make_dkim",
    "make_renderer",
    "make_signer",
]
