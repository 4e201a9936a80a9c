"""Prometheus text exposition format 0.0.4 (pure).

A few gauges and counters do not justify a client library: this renders
``Metric`` values, escaping label values as the format requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Sample = tuple[Mapping[str, str], float]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: tuple[Sample, ...]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        for labels, _ in self.samples:
            bad = [k for k in labels if not _LABEL.match(k)]
            if bad:
                raise ValueError(f"metric {self.name}: invalid label names {bad}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def exposition(metrics: Iterable[Metric]) -> str:
    """Render metrics as Prometheus text: HELP, TYPE, then one line per sample."""
    lines: list[str] = []
    for metric in metrics:
        help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {metric.name} {help_text}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            braces = f"{{{label_text}}}" if label_text else ""
            lines.append(f"{metric.name}{braces} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


# Process counters the daemon keeps (name without prefix and suffix -> help text).
COUNTERS = {
    "papers_ingested": "New papers stored by this process.",
    "digests_sent": "Digests sent by this process.",
    "digests_failed": "Digests that failed permanently.",
    "digests_deferred": "Digest sends deferred for a retry.",
    "digests_ambiguous": "Digest sends whose outcome is unknown.",
    "source_failures": "Failed source fetches.",
    "dispatch_runs": "Dispatch ticks run.",
    "dispatch_seconds": "Time spent planning and sending, summed over dispatch ticks.",
    "send_seconds": "Time from hand-off to the transport's reply, summed over sent digests "
    "(divide by digests_sent for the mean send latency).",
}


def pipeline_metrics(
    *,
    papers: int,
    outbox: Mapping[str, int],
    source_failures: Mapping[str, int],
    lease_held: bool,
    counters: Mapping[str, float],
) -> list[Metric]:
    """The pipeline's metric families from plain numbers (``counters`` keyed as ``COUNTERS``)."""
    unknown = set(counters) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown counters {sorted(unknown)}")
    families = [Metric("paperpost_papers", "gauge", "Papers in the store.", (({}, papers),))]
    families += [
        Metric(f"paperpost_{name}_total", "counter", COUNTERS[name], (({}, value),))
        for name, value in counters.items()
    ]
    families += [
        Metric(
            "paperpost_outbox",
            "gauge",
            "Outbox rows by state.",
            tuple(({"state": k}, v) for k, v in sorted(outbox.items())),
        ),
        Metric(
            "paperpost_source_consecutive_failures",
            "gauge",
            "Consecutive failed fetches per source.",
            tuple(({"source": k}, v) for k, v in sorted(source_failures.items())),
        ),
        Metric(
            "paperpost_scheduler_lease_held",
            "gauge",
            "1 if this instance runs the scheduled jobs.",
            (({}, 1 if lease_held else 0),),
        ),
    ]
    return families


def bounce_metrics(*, days: int, sent: int, bounces: int, complaints: int) -> list[Metric]:
    """Bounce and complaint rates over the last ``days`` (events / digests sent; 0 without
    sends), with the counts they come from (docs/bounces.md)."""
    window = {"window": f"{days}d"}
    return [
        Metric(
            "paperpost_bounce_rate",
            "gauge",
            "Bounces (hard and soft) per digest sent over the window.",
            ((window, bounces / sent if sent else 0.0),),
        ),
        Metric(
            "paperpost_complaint_rate",
            "gauge",
            "Complaints (ARF reports) per digest sent over the window.",
            ((window, complaints / sent if sent else 0.0),),
        ),
        Metric(
            "paperpost_bounce_events",
            "gauge",
            "Bounces and complaints received over the window.",
            (
                ({**window, "kind": "bounce"}, bounces),
                ({**window, "kind": "complaint"}, complaints),
            ),
        ),
        Metric(
            "paperpost_digests_sent_window",
            "gauge",
            "Digests sent over the window (the rates' denominator).",
            ((window, sent),),
        ),
    ]
