"""Read the bounce mailbox once: parse every new message, record what it reports, apply
the suppression rules, and mark the message.

One message at a time, each in its own transaction: a malformed report is logged with
its file or UID, flagged and skipped, and never stops the others; a database failure
stops the run and leaves the message unmarked, to be read again next time (recording a
report twice changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.bounces.mailbox import BounceMailbox, Item
from pipeline.bounces.parse import Event, MalformedReport, Report, parse_report
from pipeline.bounces.settings import BounceSettings
from pipeline.store import Store

log = logging.getLogger("paperpost.bounces")


@dataclass
class BounceReport:
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    duplicates: int = 0  # already recorded (the mailbox was read before)
    ignored: int = 0  # delayed notices and mail that reports nothing
    malformed: int = 0
    suppressed: list[str] = field(default_factory=list)  # addresses suppressed now
    unsubscribed: list[str] = field(default_factory=list)


def process_mailbox(
    store: Store, mailbox: BounceMailbox, settings: BounceSettings, *, now: datetime
) -> BounceReport:
    report = BounceReport()
    for item in mailbox.messages():
        report.read += 1
        try:
            parsed = parse_report(
                item.data,
                verp=settings.verp,
                unsubscribe_address=settings.unsubscribe_address,
                require_token=settings.require_token,
            )
        except MalformedReport as exc:
            report.malformed += 1
            log.warning("bounce mailbox: skipping malformed report %s: %s", item.ref, exc)
            mailbox.rejected(item)
            continue
        if parsed.kind == "unverified":
            report.ignored += 1
            log.warning(
                "bounce mailbox: %s carries no VERP token that verifies (a forgery, an old "
                "key, or require_token); nothing recorded",
                item.ref,
            )
        elif not parsed.events:
            report.ignored += 1
            log.info("bounce mailbox: %s is a %s message; nothing to record", item.ref, parsed.kind)
        for event in parsed.events:
            _record(store, settings, item, parsed, event, report, now=now)
        mailbox.processed(item)
    return report


def _record(
    store: Store,
    settings: BounceSettings,
    item: Item,
    parsed: Report,
    event: Event,
    report: BounceReport,
    *,
    now: datetime,
) -> None:
    address = event.address
    if event.delivery_id is not None:
        recipient = store.delivery_recipient(event.delivery_id)
        if recipient is not None:
            address = recipient[1]
    if address is None:
        report.ignored += 1
        log.warning("bounce mailbox: %s names no address we know; skipped", item.ref)
        return
    received = parsed.date if parsed.date is not None and parsed.date <= now else now
    outcome = store.record_bounce_event(
        address=address,
        kind=event.kind,
        detail=event.detail,
        report_id=parsed.report_id,
        delivery_id=event.delivery_id,
        received_at=received,
        soft_limit=settings.soft_limit,
        soft_days=settings.soft_days,
        now=now,
    )
    if outcome == "duplicate":
        report.duplicates += 1
        return
    counter = {"hard": "hard", "soft": "soft", "complaint": "complaints"}.get(
        event.kind, "unsubscribes"
    )
    setattr(report, counter, getattr(report, counter) + 1)
    fields = {
        "event": "bounce",
        "subscriber": address,
        "kind": event.kind,
        "delivery": event.delivery_id,
        "outcome": outcome,
    }
    if outcome == "suppressed":
        report.suppressed.append(address)
        log.warning(
            "suppressed %s after a %s (%s; %s)",
            address,
            event.kind,
            event.detail,
            item.ref,
            extra=fields,
        )
    elif outcome == "unsubscribed":
        report.unsubscribed.append(address)
        log.info(
            "suppressed %s at their own request, a mail to the unsubscribe address (%s)",
            address,
            item.ref,
            extra=fields,
        )
    else:
        log.info(
            "recorded a %s bounce for %s (%s)", event.kind, address, event.detail, extra=fields
        )
