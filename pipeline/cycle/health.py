"""Is the pipeline doing its job? The verdict ``/healthz`` and ``paperpost status`` show.

"ok" or "degraded", with one plain reason per problem. Degraded is not down: the web
endpoints (unsubscribe links above all) still work, so ``/healthz`` answers 200 with
``"status": "degraded"`` and keeps 503 for a daemon that cannot reach its database
(docs/daemon.md). The three reasons, from what the database records:

- the last delivery run that tried to send anything failed as a whole (it aborted, or
  every digest it tried failed or was deferred). Runs with nothing due do not count, so
  the next idle tick does not hide a failure;
- an enabled source has been failing for 24 hours: since its last success, or, for a
  source that never succeeded, over its consecutive failures at its fetch interval;
- the outbox holds ``failed`` digests from the last hour: rows whose last due time
  (planned, or retried after a deferral) is less than an hour old. The outbox does not
  record the moment a row failed, so a digest that waited longer than an hour (a daemon
  that was down) and then failed is caught by the first reason, not this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.store import OutboxEntry, Run, SourceState

SOURCE_FAILING = timedelta(hours=24)
RECENT_FAILURES = timedelta(hours=1)


@dataclass(frozen=True)
class Health:
    status: str  # "ok" or "degraded"
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_failed(summary: Mapping[str, Any]) -> bool:
    """Whether a recorded dispatch run failed as a whole (see the module docstring)."""
    if summary.get("aborted"):
        return True
    sent, ambiguous = int(summary.get("sent") or 0), int(summary.get("ambiguous") or 0)
    tried = int(summary.get("failed") or 0) + int(summary.get("deferred") or 0)
    return sent == 0 and ambiguous == 0 and tried > 0


def _tried(summary: Mapping[str, Any]) -> bool:
    keys = ("sent", "failed", "deferred", "ambiguous")
    return bool(summary.get("aborted")) or any(int(summary.get(k) or 0) for k in keys)


def assess(
    *,
    runs: Sequence[Run],
    sources: Sequence[SourceState],
    intervals: Mapping[str, timedelta],
    failed: Sequence[OutboxEntry],
    now: datetime,
) -> Health:
    """The verdict from the newest runs (newest first), the enabled sources' states
    (``intervals``: each enabled source's fetch interval) and recent ``failed`` rows."""
    reasons: list[str] = []
    last = next((r for r in runs if r.kind == "dispatch" and _tried(r.summary)), None)
    if last is not None and run_failed(last.summary):
        s = last.summary
        what = (
            f"aborted: {s['aborted']}"
            if s.get("aborted")
            else f"{s.get('failed', 0)} failed, {s.get('deferred', 0)} deferred, none sent"
        )
        reasons.append(
            f"the last delivery run ({last.started_at.isoformat(timespec='seconds')}) "
            f"failed: {what}"
        )
    for state in sources:
        if state.name not in intervals or state.consecutive_failures == 0:
            continue
        if state.last_success is not None:
            failing_for = now - state.last_success
        else:  # never succeeded: the span of its failures at its interval
            failing_for = intervals[state.name] * (state.consecutive_failures - 1)
        if failing_for >= SOURCE_FAILING:
            hours = int(failing_for.total_seconds() // 3600)
            reasons.append(
                f"source {state.name} has been failing for {hours} h "
                f"({state.consecutive_failures} failures in a row): {state.last_error or '?'}"
            )
    cutoff = now - RECENT_FAILURES
    recent = [e for e in failed if max(e.created_at, e.next_attempt_at) >= cutoff]
    if recent:
        reasons.append(
            f"{len(recent)} digest(s) failed in the last hour "
            f"(`paperpost outbox --status failed`): {(recent[0].last_error or '?')[:200]}"
        )
    return Health("degraded" if reasons else "ok", tuple(reasons))


__all__ = ["Health", "assess", "run_failed"]
