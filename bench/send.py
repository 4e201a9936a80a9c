"""Benchmark: render + build + send digests to an SMTP sink in another process.

Usage (from the repository root)::

    .venv/bin/python bench/send.py                      # 10,000 digests, pool 4, both sinks
    .venv/bin/python bench/send.py --digests 2000 --sink aiosmtpd

Digests are built from real arXiv listings (tests' eval capture: titles,
abstracts, categories) with 20 items each, drawn from a 600-paper "day" so
papers repeat across readers as they do in practice. Stages are timed alone
and together; CPU is this process's CPU time (``time.process_time``), and for
the sink its own CPU from /proc. Prints a markdown table (see bench/SEND.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from send_daemon import run_daemon_path  # noqa: E402

from pipeline.domain import Digest, DigestItem, Envelope, MessageHeaders, Paper  # noqa: E402
from pipeline.mail import (  # noqa: E402
    SmtpMailer,
    SmtpSettings,
    build_message,
    make_message_id,
)
from pipeline.progress import progress_for  # noqa: E402
from pipeline.render import Renderer  # noqa: E402

EVAL = ROOT / "bench" / "data" / "arxiv_cs_dev_2025.jsonl"
WHEN = datetime(2025, 11, 24, 7, 0, tzinfo=UTC)


def load_papers(limit: int = 600, path: Path = EVAL) -> list[Paper]:
    if not path.is_file():
        sys.exit(f"{path} not found: pass --eval with the arxiv_cs_dev_2025.jsonl capture")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:limit]
    rnd = random.Random(7)
    papers = []
    for row in rows:
        authors = tuple(f"Author{rnd.randint(1, 9999)} Surname" for _ in range(rnd.randint(1, 14)))
        papers.append(
            Paper(
                id=row["id"],
                title=row["title"],
                abstract=row["abstract"],
                authors=authors,
                categories=tuple(row["categories"]),
                url=f"https://arxiv.org/abs/{row['id']}",
                pdf_url=f"https://arxiv.org/pdf/{row['id']}",
                hf_url=f"https://huggingface.co/papers/{row['id']}" if rnd.random() < 0.3 else None,
                upvotes=rnd.randint(0, 80) if rnd.random() < 0.3 else None,
                announced=WHEN,
            )
        )
    return papers


def make_digests(count: int, papers: list[Paper]) -> list[Digest]:
    rnd = random.Random(11)
    digests = []
    for n in range(count):
        items = tuple(
            DigestItem(
                paper,
                rnd.random(),
                f"matched cat:{paper.categories[0]}; similar to {rnd.choice(papers).id}",
                more_url=f"https://digest.lab.example/f/more/{n}.{paper.id}.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
                less_url=f"https://digest.lab.example/f/less/{n}.{paper.id}.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
            )
            for paper in rnd.sample(papers, 20)
        )
        digests.append(
            Digest(
                recipient_email=f"reader{n}@lab.example",
                recipient_name=f"Reader {n}",
                period_key="2025-11-24",
                period_label="Monday 24 November 2025",
                generated_at=WHEN,
                items=items,
                unsubscribe_url=f"https://digest.lab.example/u/{n}.dG9rZW4tc2lnbmF0dXJl",
                reason_for_receiving="You receive this because you subscribed to Paperpost.",
            )
        )
    return digests


def headers(digest: Digest, subject: str) -> MessageHeaders:
    return MessageHeaders(
        from_addr="Paperpost <digest@lab.example>",
        to_addr=digest.recipient_email,
        to_name=digest.recipient_name,
        subject=subject,
        message_id=make_message_id(f"{digest.recipient_email}/{digest.period_key}", "lab.example"),
        date=WHEN,
        list_id="Paperpost digest <digest.lab.example>",
        unsubscribe_url=digest.unsubscribe_url,
        unsubscribe_mailto="mailto:unsubscribe@lab.example?subject=unsubscribe",
    )


@dataclass
class Result:
    stage: str
    sink: str
    messages: int
    wall: float
    cpu: float
    sink_cpu: float | None = None

    def row(self, pool: str) -> str:
        rate = self.messages / self.wall
        sink = f"{self.sink_cpu / self.messages * 1000:.3f}" if self.sink_cpu is not None else "–"
        return (
            f"| {self.stage} | {self.sink} | {pool} | {self.messages} | {rate:,.0f} | "
            f"{self.cpu / self.messages * 1000:.3f} | {sink} |"
        )


def timed(stage: str, count: int, work: Callable[[], object], repeats: int = 3) -> Result:
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    return Result(stage, "–", count, wall, cpu)


def median_result(runs: list[Result]) -> Result:
    """The median wall time and CPU of several runs of one row."""
    first = runs[0]
    sink_cpu = [r.sink_cpu for r in runs if r.sink_cpu is not None]
    return Result(
        first.stage,
        first.sink,
        first.messages,
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        statistics.median(sink_cpu) if sink_cpu else None,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sink(kind: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    if kind == "aiosmtpd":
        command = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink"]
        command += ["-l", f"127.0.0.1:{port}"]
    else:
        command = ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{port}", "256"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


Produce = Callable[[], Iterator[Envelope] | AsyncIterator[Envelope]]


async def send_all(port: int, envelopes: Produce, pool: int, per_connection: int) -> int:
    mailer = SmtpMailer(
        SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="none",
            pool_size=pool,
            max_per_connection=per_connection,
        )
    )
    queue: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=pool * 4)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while (envelope := await queue.get()) is not None:
            await mailer.send(envelope)
            sent += 1

    workers = [asyncio.create_task(worker()) for _ in range(pool)]
    source = envelopes()
    if isinstance(source, AsyncIterator):
        async for envelope in source:
            await queue.put(envelope)
    else:
        for envelope in source:
            await queue.put(envelope)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    await mailer.aclose()
    return sent


def run_send(
    stage: str,
    kind: str,
    count: int,
    pool: int,
    per_connection: int,
    produce: Produce,
) -> Result:
    with sink(kind) as (port, pid):
        sink_cpu, wall, cpu = process_cpu(pid), time.perf_counter(), time.process_time()
        sent = asyncio.run(send_all(port, produce, pool, per_connection))
        result = Result(stage, kind, sent, time.perf_counter() - wall, time.process_time() - cpu)
        result.sink_cpu = process_cpu(pid) - sink_cpu
    assert sent == count, (sent, count)
    return result


# Rendering in a separate process: how the scale-out runner would feed a sender.
_WORKER: tuple[Renderer, list[Digest]] | None = None


def _init_worker(count: int, eval_path: Path) -> None:
    global _WORKER
    _WORKER = (Renderer(), make_digests(count, load_papers(path=eval_path)))


def _render_chunk(start: int, stop: int) -> list[tuple[str, bytes, str]]:
    assert _WORKER is not None
    renderer, digests = _WORKER
    out = []
    for digest in digests[start:stop]:
        rendered = renderer.render(digest)
        head = headers(digest, rendered.subject)
        out.append((digest.recipient_email, build_message(head, rendered), head.message_id))
    return out


async def rendered_elsewhere(
    executor: ProcessPoolExecutor, count: int, chunk: int = 100, window: int = 4
) -> AsyncIterator[Envelope]:
    loop = asyncio.get_running_loop()
    starts = iter(range(0, count, chunk))
    pending = [
        loop.run_in_executor(executor, _render_chunk, s, min(s + chunk, count))
        for s in itertools.islice(starts, window)
    ]
    while pending:
        batch = await pending.pop(0)
        for start in itertools.islice(starts, 1):
            pending.append(
                loop.run_in_executor(executor, _render_chunk, start, min(start + chunk, count))
            )
        for recipient, data, message_id in batch:
            yield Envelope("digest@lab.example", recipient, data, message_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digests", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--sink", choices=["aiosmtpd", "smtp-sink", "both", "none"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per pure stage (median)")
    parser.add_argument(
        "--send-repeats", type=int, default=3, help="rounds of the sending rows (median)"
    )
    parser.add_argument("--eval", type=Path, default=EVAL, help="arxiv_cs_dev_2025.jsonl")
    parser.add_argument(
        "--daemon",
        type=int,
        default=2000,
        help="digests sent through the daemon's own path (Deliverer, SQLite outbox); 0: skip",
    )
    parser.add_argument(
        "--daemon-db",
        default="sqlite",
        help="the daemon path's database: sqlite (default) or a PostgreSQL URL "
        "(a fresh schema is made there and dropped)",
    )
    parser.add_argument(
        "--render-processes",
        default="0",
        help="[mail] render_processes values for the daemon path rows, comma-separated "
        "(0, composing in the sender, is the only value the config still takes)",
    )
    args = parser.parse_args()
    count, pool, repeats = args.digests, args.pool, args.repeats
    # Progress on stderr (bars on a terminal, plain lines otherwise), closed before the
    # table is printed: stdout carries only it.
    progress = progress_for(sys.stderr)
    progress.start("stages", f"render and build {count} digests, {repeats} runs each", 3)

    papers = load_papers(path=args.eval)
    digests = make_digests(count, papers)
    renderer = Renderer()
    for d in digests[:200]:
        renderer.render(d)  # warm the entry cache, as the first digests of a run do
    results = [
        timed("render", count, lambda: [renderer.render(d) for d in digests], repeats),
    ]
    progress.advance("stages")
    rendered = [renderer.render(d) for d in digests]
    heads = [headers(d, r.subject) for d, r in zip(digests, rendered, strict=True)]
    results.append(
        timed(
            "build",
            count,
            lambda: [build_message(h, r) for h, r in zip(heads, rendered, strict=True)],
            repeats,
        )
    )
    progress.advance("stages")
    messages = [build_message(h, r) for h, r in zip(heads, rendered, strict=True)]
    size = statistics.mean(len(m) for m in messages) / 1000
    html_size = statistics.mean(len(r.html.encode()) for r in rendered) / 1000

    def render_and_build() -> None:
        fresh = Renderer()  # cold caches every run, as at the start of a real run
        for d in digests:
            r = fresh.render(d)
            build_message(headers(d, r.subject), r)

    results.append(timed("render + build (fresh renderer)", count, render_and_build, repeats))
    progress.advance("stages")
    progress.finish("stages", f"message {size:.1f} KB")

    def prebuilt() -> Iterator[Envelope]:
        for d, h, data in zip(digests, heads, messages, strict=True):
            yield Envelope("digest@lab.example", d.recipient_email, data, h.message_id)

    def end_to_end() -> Iterator[Envelope]:
        e2e = Renderer()
        for d in digests:
            r = e2e.render(d)
            h = headers(d, r.subject)
            yield Envelope(
                "digest@lab.example", d.recipient_email, build_message(h, r), h.message_id
            )

    kinds = {"both": ["aiosmtpd", "smtp-sink"], "none": []}.get(args.sink, [args.sink])
    if "smtp-sink" in kinds and shutil.which("smtp-sink") is None:
        print("smtp-sink not found (Debian package postfix); skipping it", file=sys.stderr)
        kinds.remove("smtp-sink")
    sends: list[tuple[Result, str]] = []
    executor = ProcessPoolExecutor(1, initializer=_init_worker, initargs=(count, args.eval))
    if kinds:
        executor.submit(_render_chunk, 0, 1).result()  # start the worker before timing
    few_sends = min(count, 1000)
    rows: list[tuple[str, int, int, Produce, str]] = [
        (
            "render + build in 1 worker process, send here",
            count,
            10_000,
            lambda: rendered_elsewhere(executor, count),
            str(pool),
        ),
        ("send only (prebuilt)", count, 10_000, prebuilt, str(pool)),
        ("render + build + send", count, 10_000, end_to_end, str(pool)),
        (
            "send only, new connection per message",
            few_sends,
            1,
            lambda: itertools.islice(prebuilt(), few_sends),
            f"{pool} (1 msg/conn)",
        ),
    ]
    for kind in kinds:
        # Rounds of every row, so that load from elsewhere hits all rows alike; medians.
        runs: list[list[Result]] = [[] for _ in rows]
        processes = [int(p) for p in args.render_processes.split(",")]
        daemon_runs: dict[int, list[Result]] = {p: [] for p in processes}
        per_round = len(rows) + (len(processes) if args.daemon else 0)
        progress.start(kind, f"send to {kind}", args.send_repeats * per_round)
        for _ in range(args.send_repeats):
            for n, (stage, total, per_connection, produce, _label) in enumerate(rows):
                runs[n].append(run_send(stage, kind, total, pool, per_connection, produce))
                progress.advance(kind)
            for workers in processes if args.daemon else []:
                sent, wall, cpu, sink_cpu, workers_cpu = run_daemon_path(
                    kind,
                    args.daemon,
                    pool,
                    papers,
                    sink,
                    process_cpu,
                    args.daemon_db,
                    workers,
                    progress=progress,
                )
                progress.advance(kind)
                outbox = "SQLite" if args.daemon_db == "sqlite" else "PostgreSQL"
                where = (
                    f"{workers} render process{'es' if workers > 1 else ''} "
                    f"(+{workers_cpu / sent * 1000:.3f} ms CPU there)"
                    if workers
                    else "composed in the sender"
                )
                stage = f"daemon path (Deliverer: {outbox} outbox, signed links; {where})"
                daemon_runs[workers].append(Result(stage, kind, sent, wall, cpu, sink_cpu))
        progress.finish(kind, f"{args.send_repeats} rounds of {per_round} rows")
        for n, row in enumerate(rows):
            sends.append((median_result(runs[n]), row[4]))
        for daemon_results in daemon_runs.values():
            if daemon_results:
                sends.append((median_result(daemon_results), str(pool)))

    executor.shutdown()
    progress.close()
    print(
        f"\nmachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()}"
    )
    print(f"digests: {count}, 20 items each; HTML part {html_size:.1f} KB, message {size:.1f} KB\n")
    print("| stage | sink | pool | messages | digests/s | client CPU ms/msg | sink CPU ms/msg |")
    print("|---|---|---|---:|---:|---:|---:|")
    for result in results:
        print(result.row("–"))
    for result, pool_label in sends:
        print(result.row(pool_label))


if __name__ == "__main__":
    main()
