"""Read one message from the bounce mailbox: a DSN, a complaint, a mailed unsubscribe, or
something else.

- **DSNs** (RFC 3464, ``multipart/report; report-type=delivery-status``) and the older
  non-standard bounce formats: ``flufl.bounce`` says which recipients failed for good and
  which are only delayed; the DSN's per-recipient ``Status`` then tells a hard bounce
  (5.x.x) from a soft one (4.x.x: the server gave up after retrying, a full mailbox). A
  ``delayed`` notice is not a bounce and records nothing.
- **Complaints** (ARF, RFC 5965, ``report-type=feedback-report``): read with the stdlib
  ``email`` package: the ``Feedback-Type``, the ``Original-Rcpt-To`` and
  ``Original-Mail-From`` fields, and the enclosed original message's headers.
- **Mailed unsubscribes**: a message to the ``[mail] unsubscribe_mailto`` address (the
  ``mailto:`` of ``List-Unsubscribe``) unsubscribes its ``From`` address.

With VERP, a DSN or complaint addressed to one of our return paths (``bounces+…``) must
carry a token that verifies: one that does not is a forgery and is reported as
``unverified``, with no events. With ``require_token`` a report with no token at all is
``unverified`` too (docs/bounces.md, "Trust").

Every field is hostile: addresses are checked and lower-cased, texts lose control
characters and are cut short before they reach the database or a terminal. A report from
which no recipient can be read is :class:`MalformedReport`; a message that is none of the
above (spam, an auto-reply) is a report of kind ``other`` with no events.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Final, Literal

from flufl.bounce import all_failures

from pipeline.bounces.verp import VerpSigner
from pipeline.errors import PaperpostError

EventKind = Literal["hard", "soft", "complaint", "unsubscribe"]
ReportKind = Literal["dsn", "delayed", "complaint", "unsubscribe", "other", "unverified"]

_DETAIL_MAX: Final = 300
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ADDRESS: Final = re.compile(r"^[^\s@<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9.-]{1,253}$")
_STATUS: Final = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}")
# Where the envelope recipient of a delivered message shows (most reliable first).
_RECIPIENT_HEADERS: Final = ("delivered-to", "x-original-to", "envelope-to", "to", "cc")
_NOT_COMPLAINTS: Final = frozenset({"not-spam"})


class MalformedReport(PaperpostError):
    """A report Paperpost cannot read (no headers, no recipient, a broken part)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a report says about one address."""

    kind: EventKind
    address: str | None  # normalised; None when only the VERP token names the digest
    detail: str
    delivery_id: int | None = None  # from a valid VERP token


@dataclass(frozen=True, slots=True)
class Report:
    report_id: str  # the Message-ID (or a hash of the bytes when there is none)
    kind: ReportKind
    events: tuple[Event, ...]
    date: datetime | None  # the report's Date, when it parses and is not in the future


def normal_address(value: str | None) -> str | None:
    """``value`` as a plain lower-case addr-spec, or None when it is not one."""
    if not value:
        return None
    addr = parseaddr(value.strip())[1] if "<" in value else value.strip()
    addr = addr.strip().strip("<>").lower()
    return addr if _ADDRESS.match(addr) and ".." not in addr else None


def clean_text(value: object, limit: int = _DETAIL_MAX) -> str:
    """Hostile text made safe to store and print: no control characters, cut short."""
    text = _CONTROL.sub(" ", str(value)).strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_report(
    data: bytes,
    *,
    verp: VerpSigner | None = None,
    unsubscribe_address: str | None = None,
    require_token: bool = False,
) -> Report:
    """Classify one message of the bounce mailbox and say what it reports."""
    if not data.strip():
        raise MalformedReport("empty message")
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as exc:  # the parser is lenient; this is a safety net
        raise MalformedReport(f"not a mail message: {exc}") from exc
    report = _classify(msg, data, verp, unsubscribe_address)
    if report.kind not in ("dsn", "complaint") or verp is None:
        return report
    if any(e.delivery_id is None for e in report.events) and (
        require_token or _claims_return_path(msg, verp)
    ):
        return Report(report.report_id, "unverified", (), report.date)
    return report


def _classify(
    msg: Message, data: bytes, verp: VerpSigner | None, unsubscribe_address: str | None
) -> Report:
    if not msg.keys() or not any(k.lower() in ("from", "to", "message-id", "date") for k in msg):
        raise MalformedReport("not a mail message: no From, To, Message-ID or Date header")
    report_id = _report_id(msg, data)
    date = _date(msg)
    delivery_id = _verp_delivery(msg, verp)
    content_type = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "", header="content-type") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return Report(report_id, "complaint", _complaint(msg, verp), date)
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _dsn(msg, report_id, date, delivery_id)
    unsubscribe = normal_address(unsubscribe_address)
    if unsubscribe and unsubscribe in _recipients(msg):
        return _unsubscribe(msg, report_id, date)
    # A bounce in one of the older non-standard formats (qmail, Exchange, ...).
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:
        raise MalformedReport(f"bounce detectors failed: {clean_text(exc, 120)}") from exc
    events = [
        Event("hard", a, "non-standard bounce report", delivery_id)
        for a in sorted(filter(None, (normal_address(_text(b)) for b in permanent)))
    ]
    if events:
        return Report(report_id, "dsn", tuple(_by_token(events, delivery_id)), date)
    return Report(report_id, "delayed" if temporary else "other", (), date)


# -- the kinds ---------------------------------------------------------------------------------
def _dsn(msg: Message, report_id: str, date: datetime | None, delivery_id: int | None) -> Report:
    blocks = list(_status_blocks(msg))
    if not blocks:
        raise MalformedReport("delivery-status report without per-recipient fields")
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:
        raise MalformedReport(f"bounce detectors failed: {clean_text(exc, 120)}") from exc
    failed = {a for a in (normal_address(_text(b)) for b in permanent) if a}
    delayed = {a for a in (normal_address(_text(b)) for b in temporary) if a}
    events: list[Event] = []
    for block in blocks:
        action = str(block.get("action", "")).strip().lower()
        if not action.startswith(("fail", "error")):
            continue
        address = _block_address(block, failed)
        status = str(block.get("status", "")).strip()
        match = _STATUS.match(status)
        kind: EventKind = "soft" if match and match.group(1) == "4" else "hard"
        diagnostic = block.get("diagnostic-code", "")
        detail = clean_text(f"{status or 'no status'} {diagnostic}".strip())
        events.append(Event(kind, address, detail, delivery_id))
    if not events and not delayed and not any(str(b.get("action", "")).strip() for b in blocks):
        raise MalformedReport("delivery-status report whose recipients carry no Action field")
    if not events:
        quiet: ReportKind = "delayed" if delayed or _any_action(blocks, "delayed") else "other"
        return Report(report_id, quiet, (), date)
    if delivery_id is None and not any(e.address for e in events):
        raise MalformedReport("delivery-status report names no recipient address")
    return Report(report_id, "dsn", tuple(_by_token(events, delivery_id)), date)


def _complaint(msg: Message, verp: VerpSigner | None) -> tuple[Event, ...]:
    fields = _feedback_fields(msg)
    if fields is None:
        raise MalformedReport("feedback report without a message/feedback-report part")
    feedback_type = clean_text(fields.get("feedback-type", ""), 40).lower()
    if not feedback_type:
        raise MalformedReport("feedback report without a Feedback-Type field")
    if feedback_type in _NOT_COMPLAINTS:
        return ()
    original = _enclosed_headers(msg)
    delivery_id = None
    if verp is not None:
        for value in (fields.get("original-mail-from"), original.get("return-path")):
            address = normal_address(str(value)) if value else None
            if address and (found := verp.delivery_for_address(address)) is not None:
                delivery_id = found
                break
    address = normal_address(str(fields.get("original-rcpt-to") or "")) or next(
        iter(_addresses(original.get_all("to") or [])), None
    )
    if address is None and delivery_id is None:
        raise MalformedReport("feedback report names no recipient (Original-Rcpt-To or To)")
    reporter = fields.get("user-agent") or fields.get("reporting-mta") or "?"
    detail = clean_text(f"{feedback_type} report by {reporter}")
    return (Event("complaint", address, detail, delivery_id),)


def _unsubscribe(msg: Message, report_id: str, date: datetime | None) -> Report:
    auto = str(msg.get("auto-submitted", "no")).strip().lower()
    sender = next(iter(_addresses(msg.get_all("from") or [])), None)
    if auto != "no" or sender is None:
        # An auto-reply to the unsubscribe address is nobody's request.
        return Report(report_id, "other", (), date)
    subject = clean_text(msg.get("subject", ""), 80)
    detail = f"mail to the unsubscribe address ({subject or 'no subject'})"
    return Report(report_id, "unsubscribe", (Event("unsubscribe", sender, detail),), date)


# -- helpers -----------------------------------------------------------------------------------
def _by_token(events: list[Event], delivery_id: int | None) -> list[Event]:
    """A digest has one recipient: with a valid token, one event (the worst) stands for it."""
    if delivery_id is None or len(events) <= 1:
        return events
    return [next((e for e in events if e.kind == "hard"), events[0])]


def _report_id(msg: Message, data: bytes) -> str:
    message_id = clean_text(msg.get("message-id", ""), 250)
    if message_id:
        return message_id
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _date(msg: Message) -> datetime | None:
    try:
        value = parsedate_to_datetime(str(msg.get("date", "")))
    except (TypeError, ValueError, IndexError):
        return None
    if value.tzinfo is None:
        return None
    value = value.astimezone(UTC)
    return value if value <= datetime.now(UTC) else None


def _addresses(values: Iterable[object]) -> list[str]:
    pairs = getaddresses([str(v) for v in values])
    return [a for a in (normal_address(addr) for _, addr in pairs) if a]


def _recipients(msg: Message) -> list[str]:
    out: list[str] = []
    for name in _RECIPIENT_HEADERS:
        out.extend(_addresses(msg.get_all(name) or []))
    return out


def _claims_return_path(msg: Message, verp: VerpSigner) -> bool:
    """Whether the report is addressed to one of our return paths (its token, then, did
    not verify), or a complaint encloses a message sent from one."""
    addresses = _recipients(msg)
    fields = _feedback_fields(msg)
    if fields is not None:
        addresses += _addresses(fields.get_all("original-mail-from") or [])
        addresses += _addresses(_enclosed_headers(msg).get_all("return-path") or [])
    return any(verp.is_return_path(a) for a in addresses)


def _verp_delivery(msg: Message, verp: VerpSigner | None) -> int | None:
    if verp is None:
        return None
    for address in _recipients(msg):
        found = verp.delivery_for_address(address)
        if found is not None:
            return found
    return None


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _status_blocks(msg: Message) -> Iterable[Message]:
    """The per-recipient field blocks of every message/delivery-status part."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        # The first block is about the whole message (Reporting-MTA ...), the rest one
        # per recipient; a block is per-recipient when it names one.
        for block in payload:
            if isinstance(block, Message) and (
                block.get("final-recipient") or block.get("original-recipient")
            ):
                yield block


def _any_action(blocks: list[Message], action: str) -> bool:
    return any(str(b.get("action", "")).strip().lower().startswith(action) for b in blocks)


def _block_address(block: Message, failed: set[str]) -> str | None:
    """The block's recipient, preferring the one ``flufl.bounce`` reported."""
    candidates: list[str | None] = []
    for name in ("original-recipient", "final-recipient"):
        value = str(block.get(name, ""))
        kind, _, address = value.partition(";")
        if address and kind.strip().lower() == "rfc822":
            candidates.append(normal_address(address))
    for candidate in candidates:
        if candidate in failed:
            return candidate
    return next((a for a in candidates if a), None)


def _feedback_fields(msg: Message) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        if isinstance(payload, str):
            return HeaderParser(policy=email.policy.compat32).parsestr(payload.lstrip())
    return None


def _enclosed_headers(msg: Message) -> Message:
    """The headers of the original message a complaint encloses (empty if none)."""
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser(policy=email.policy.compat32).parsestr(
                    text.decode("utf-8", "replace")
                )
    return Message()
