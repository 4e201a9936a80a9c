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


def unsubscribe_url(config: Config, signer: TokenSigner, email: str, *, now: datetime) -> str:
    return _link(
        config, "unsubscribe", signer.sign(subscriber=email, action="unsubscribe", now=now)
    )


def build_digest(
    config: Config,
    signer: TokenSigner,
    delivery: Delivery,
    schedule: Schedule,
    *,
    now: datetime,
) -> Digest:
    def item(entry_index: int) -> DigestItem:
        entry = delivery.items[entry_index]
        paper_id = entry.paper.id
        more = signer.sign(subscriber=delivery.email, action="more", paper=paper_id, now=now)
        less = signer.sign(subscriber=delivery.email, action="less", paper=paper_id, now=now)
        return DigestItem(
            paper=entry.paper,
            score=entry.score,
            reason=entry.reason,
            more_url=_link(config, "feedback", more),
            less_url=_link(config, "feedback", less),
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
        unsubscribe_url=unsubscribe_url(config, signer, delivery.email, now=now),
        manage_url=_link(
            config, "manage", signer.sign(subscriber=delivery.email, action="manage", now=now)
        ),
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
