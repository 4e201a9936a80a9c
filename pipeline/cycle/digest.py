"""Turn an outbox row into what templates and the message builder need: the Digest (with
signed links) and the message headers."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote

from pipeline.config import Config
from pipeline.cycle.wording import describe_schedule, zoned_label
from pipeline.domain import Digest, DigestItem, MessageHeaders, Period, Schedule
from pipeline.store import Delivery
from pipeline.web.tokens import TokenSigner


def _link(config: Config, path: str, token: str) -> str:
    return f"{config.file.web.base_url}/{path}/{quote(token, safe='')}"


def feedback_url(config: Config, token: str, position: int, signal: str) -> str:
    """``/feedback/<digest token>/<n>/<more|less>``: ``n`` is the paper's 1-based position
    among the outbox row's items (rank order), which the server looks up."""
    return f"{_link(config, 'feedback', token)}/{position}/{signal}"


def build_digest(
    config: Config,
    signer: TokenSigner,
    delivery: Delivery,
    schedule: Schedule,
    *,
    now: datetime,
) -> Digest:
    """The digest of one outbox row. Its links carry ONE signed token, (reader id, row id),
    and no address (docs/daemon.md, "Link tokens"). A delivery that is no outbox row (id 0:
    a send-test, a preview of a digest not planned yet) has no unsubscribe or feedback
    links; a preview of a known reader keeps a manage link (a reader token)."""
    token = (
        signer.digest_token(subscriber_id=delivery.subscriber_id, delivery_id=delivery.id, now=now)
        if delivery.id > 0 and delivery.subscriber_id > 0
        else None
    )
    if token is not None:
        manage: str | None = _link(config, "manage", token)
    elif delivery.subscriber_id > 0:
        manage = _link(
            config,
            "manage",
            signer.reader_token(subscriber_id=delivery.subscriber_id, purpose="manage", now=now),
        )
    else:
        manage = None

    def item(entry_index: int) -> DigestItem:
        entry = delivery.items[entry_index]
        return DigestItem(
            paper=entry.paper,
            score=entry.score,
            reason=entry.reason,
            more_url=feedback_url(config, token, entry_index + 1, "more") if token else None,
            less_url=feedback_url(config, token, entry_index + 1, "less") if token else None,
        )

    interest = [item(i) for i, e in enumerate(delivery.items) if not e.trending]
    trending = [item(i) for i, e in enumerate(delivery.items) if e.trending]
    label = zoned_label(schedule, Period(key=delivery.period_key, due_at=delivery.window_end))
    return Digest(
        recipient_email=delivery.email,
        recipient_name=delivery.name,
        period_key=delivery.period_key,
        period_label=label,
        generated_at=now,
        items=tuple(interest),
        trending=tuple(trending),
        unsubscribe_url=_link(config, "unsubscribe", token) if token else None,
        manage_url=manage,
        list_name=config.file.mail.list_name,
        reason_for_receiving=(
            f"You receive this because {delivery.email} is subscribed to "
            f"{config.file.mail.list_name}, {describe_schedule(schedule, now=now)}."
        ),
    )


def message_headers(
    config: Config, delivery: Delivery, digest: Digest, subject: str, *, now: datetime
) -> MessageHeaders:
    mail = config.file.mail
    domain = mail.sender_domain
    # RFC 2919: a stable list identifier under the operator's domain, e.g.
    # "Lab digest <lab-digest.lab.example>".
    slug = re.sub(r"[^a-z0-9]+", "-", mail.list_name.lower()).strip("-") or "paperpost"
    return MessageHeaders(
        from_addr=mail.from_,
        to_addr=delivery.email,
        to_name=delivery.name,
        subject=subject,
        message_id=delivery.message_id,
        date=now,
        list_id=f"{mail.list_name} <{slug}.{domain}>",
        # RFC 8058 one-click needs an https URL; a plain-http base URL (allowed only with
        # [web] allow_insecure_links, for local testing) keeps its link in the body and
        # only the mailto in the header. The mailto is always there (docs/email.md).
        unsubscribe_url=(
            digest.unsubscribe_url
            if digest.unsubscribe_url and digest.unsubscribe_url.startswith("https://")
            else None
        ),
        unsubscribe_mailto=f"mailto:{mail.unsubscribe_address}?subject=unsubscribe",
    )
