"""How long the dispatch tick's schedule maths and link signing take at scale.

Every dispatch tick (once a minute) computes ``latest_due_period`` for every
active subscriber; every digest signs 1 + 2 x items link tokens; every click
verifies one. Run:

    .venv/bin/python bench/periods.py [--subscribers 100000] [--repeat 5]

Prints a markdown table of medians (see bench/PERIODS.md for recorded results).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

from pipeline.domain import Schedule
from pipeline.schedule import periods
from pipeline.schedule.periods import latest_due_period, next_due_period
from pipeline.web.tokens import TokenSigner

ZONES = ["Europe/London", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "Pacific/Auckland",
         "America/Los_Angeles", "Europe/Berlin", "Australia/Sydney", "UTC"]  # fmt: skip
FREQUENCIES = ["daily"] * 6 + ["weekdays"] * 3 + ["weekly:mon", "weekly:fri", "cron:0 8 * * 1-5",
                                                  "cron:30 7 1,15 * *"]  # fmt: skip


def schedules(n: int, rng: random.Random) -> list[Schedule]:
    return [
        Schedule(rng.choice(FREQUENCIES), dtime(rng.randrange(24), rng.choice((0, 15, 30, 45))),
                 rng.choice(ZONES))
        for _ in range(n)
    ]  # fmt: skip


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    subs = schedules(args.subscribers, rng)
    now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    n = args.subscribers

    rows = []

    def cold_tick() -> None:
        periods._BRACKETS.clear()
        periods._firings.cache_clear()
        for s in subs:
            latest_due_period(s, now)

    t = median_seconds(cold_tick, args.repeat)
    rows.append((f"latest_due_period x {n:,}, cold caches (first tick)", t, t / n))
    minutes = iter(range(1, 10_000))

    def warm_tick() -> None:  # the next minute's tick: caches filled by the previous one
        tick_now = now + timedelta(minutes=next(minutes))
        for s in subs:
            latest_due_period(s, tick_now)

    t = median_seconds(warm_tick, args.repeat)
    rows.append((f"latest_due_period x {n:,}, warm (every later tick)", t, t / n))
    t = median_seconds(lambda: [next_due_period(s, now) for s in subs], args.repeat)
    rows.append((f"next_due_period x {n:,} (`paperpost status`)", t, t / n))
    ticks = [now + timedelta(minutes=i) for i in range(10)]
    t = median_seconds(lambda: [latest_due_period(subs[0], x) for x in ticks * 1000], args.repeat)
    rows.append(("latest_due_period, one daily schedule x 10,000", t, t / 10_000))

    signer = TokenSigner(["k" * 32, "old" * 11])
    m = 20_000
    t = median_seconds(
        lambda: [signer.digest_token(subscriber_id=i + 1, delivery_id=i + 1, now=now)
                 for i in range(m)],
        args.repeat,
    )  # fmt: skip
    rows.append((f"TokenSigner.digest_token x {m:,} (one per digest)", t, t / m))
    tokens = [signer.digest_token(subscriber_id=i + 1, delivery_id=i + 1, now=now)
              for i in range(m)]  # fmt: skip
    t = median_seconds(
        lambda: [signer.verify_digest(tok, use="unsubscribe", now=now) for tok in tokens],
        args.repeat,
    )
    rows.append((f"TokenSigner.verify_digest x {m:,}", t, t / m))

    print(f"Python {platform.python_version()}, {platform.machine()}, "
          f"median of {args.repeat} runs\n")  # fmt: skip
    print("| operation | total (median) | per call |")
    print("|---|---:|---:|")
    for name, total, per in rows:
        print(f"| {name} | {total * 1000:,.0f} ms | {per * 1e6:,.1f} µs |")


if __name__ == "__main__":
    main()
