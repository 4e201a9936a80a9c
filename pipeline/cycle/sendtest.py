"""``paperpost send-test EMAIL``: one real message through the configured transport.

A test message goes where the operator says, but an address that is not a subscriber,
or one that unsubscribed, is most likely a typo or a person who asked for no more mail:
:func:`recipient_warning` names the problem and the command refuses without ``--force``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import uuid4

from pipeline.config import Config
from pipeline.config.models import check_address
from pipeline.cycle.compose import make_dkim, make_renderer, make_signer
from pipeline.cycle.digest import build_digest, message_headers
from pipeline.cycle.plan import message_domain, sender_address
from pipeline.domain import Envelope, Mailer, Paper, Reader, Schedule
from pipeline.errors import PaperpostError, TransportError
from pipeline.mail import build_message, make_message_id
from pipeline.store import Delivery, DeliveryItem


def recipient_warning(email: str, reader: Reader | None) -> str | None:
    """Why ``email`` should not get a test message (None: it is an active reader)."""
    if reader is None:
        return f"{email} is not a subscriber of this list (unknown address)"
    if reader.status == "active":
        return None
    if reader.status == "unsubscribed":
        return f"{email} unsubscribed from this list"
    return f"{email} is not an active subscriber (status {reader.status})"


async def send_test(
    config: Config, email: str, recent: Sequence[Paper], mailer: Mailer, *, now: datetime
) -> str:
    """Send a digest of ``recent`` papers to ``email`` through ``mailer``; return the
    server's reply.

    Nothing is recorded in the outbox: a test message is not a digest of any period.
    """
    try:
        address = check_address(email)
    except ValueError as exc:
        raise PaperpostError(f"send-test: {email!r} is {exc}") from exc
    delivery = Delivery(
        id=0,
        subscriber_id=0,
        email=address,
        name=None,
        period_key=now.date().isoformat(),
        status="test",
        attempts=0,
        message_id=make_message_id(f"test:{uuid4()}", message_domain(config)),
        window_start=now - timedelta(days=30),
        window_end=now,
        created_at=now,
        items=tuple(
            DeliveryItem(p, 1.0, "test message: most recent papers", False)
            for p in reversed(recent)
        ),
        schedule=Schedule("daily", now.time().replace(second=0, microsecond=0), "UTC"),
    )
    schedule = delivery.schedule
    digest = build_digest(config, make_signer(config), delivery, schedule, now=now)
    rendered = make_renderer(config).render(digest)
    headers = message_headers(config, delivery, digest, f"[test] {rendered.subject}", now=now)
    data = build_message(headers, rendered)
    dkim = make_dkim(config)
    envelope = Envelope(
        sender=sender_address(config),
        recipient=address,
        data=dkim.sign(data) if dkim is not None else data,
        message_id=delivery.message_id,
    )
    try:
        return await mailer.send(envelope)
    except TransportError as exc:
        raise PaperpostError(f"send-test to {address}: the server refused: {exc}") from exc
