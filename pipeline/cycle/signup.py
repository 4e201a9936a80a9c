"""The reader's web forms turned into settings, and the one confirmation message.

A form is validated by the same rules as a ``[[subscribers]]`` entry of the config file
(the pydantic model and the file's semantic checks: address, time zone, ``HH:MM``,
frequency, query syntax), plus the page's own: categories from the picker, something to
match on (or "trending only"), and the operator's ``[web] subscribe_domains``. Every
problem is listed at once, as plain sentences the page can show.

The confirmation message goes through the digest's message builder, so its headers get
the same checks (``pipeline.mail.headers``), and through the configured mailer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from html import escape
from typing import Any
from uuid import uuid4

from pipeline.config import Config
from pipeline.config.load import semantic_checks, to_subscriber
from pipeline.config.models import validate_subscriber
from pipeline.cycle.plan import message_domain, sender_address
from pipeline.domain import Envelope, MessageHeaders, RenderedDigest, Subscriber
from pipeline.mail import build_message, make_message_id
from pipeline.store import ReaderRecord
from pipeline.web.readers import FormError, ManagedReader, Press, ReaderForm
from pipeline.web.taxonomy import CODES

TRENDING_ONLY = 10  # how many trending papers a "trending only" reader gets
_MAX_AUTHORS = 50


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: tuple[Any, ...], message: str) -> None:
        field = next((str(p) for p in reversed(path) if isinstance(p, str)), "form")
        self.items.append(f"{_LABELS.get(field, field)}: {message}")


_LABELS = {
    "email": "Email address",
    "timezone": "Time zone",
    "frequency": "How often",
    "send_at": "Time",
    "query": "Search query",
    "about": "Interests",
    "categories": "Categories",
    "authors": "Authors",
}


def subscriber_from_form(
    config: Config,
    email: str,
    form: ReaderForm,
    *,
    base: Subscriber | None = None,
) -> Subscriber:
    """The settings of ``form`` for ``email`` (over ``base``, a reader's current settings,
    whose other fields are kept); ``FormError`` listing every problem."""
    problems = _Problems()
    known = CODES | set(base.profile.categories if base else ())
    unknown = [c for c in form.categories if c not in known]
    if unknown:
        problems.add(("categories",), "pick categories from the list")
    authors = [a.strip() for a in re.split(r"[\n,;]", form.authors) if a.strip()]
    if len(authors) > _MAX_AUTHORS:
        problems.add(("authors",), f"at most {_MAX_AUTHORS}")
    if len(form.about) > 2000 or len(form.query) > 500:
        problems.add(("about",), "too long")
    if form.trending_only:
        categories: list[str] = []
        about = query = ""
        authors = []
        trending = max(TRENDING_ONLY, base.profile.trending if base else 0)
    else:
        categories = [c for c in form.categories if c in known]
        about, query = form.about, form.query
        trending = base.profile.trending if base else 0
        if not (categories or about or query or authors):
            problems.add(
                ("form",),
                "pick at least one category, describe your interests, give a query or "
                "authors, or choose trending papers only",
            )
    record: dict[str, Any] = {
        "email": email,
        "timezone": form.timezone,
        "frequency": form.frequency,
        "send_at": form.send_at,
        "trending": trending,
        "interests": {
            "categories": categories,
            "about": about or None,
            "query": query or None,
            "authors": authors,
        },
    }
    if base is not None:
        record |= {
            "name": base.name,
            "max_items": base.profile.max_items,
            "on_empty": base.on_empty,
        }
        record["interests"] |= {
            "like": list(base.profile.like),
            "exclude": base.profile.exclude,
            "min_score": base.profile.min_score,
        }
    model, invalid = validate_subscriber(record)
    for location, message in invalid:
        problems.add(location, message)
    semantic_checks({"subscribers": [record]}, problems)
    if base is None and model is not None:
        _check_domain(config.file.web.subscribe_domains, model.email, problems)
    if problems.items or model is None:
        raise FormError(problems.items or ["the form could not be read"])
    return to_subscriber(model)


def form_of(subscriber: Subscriber) -> ReaderForm:
    """A reader's settings as the form shows them."""
    p, s = subscriber.profile, subscriber.schedule
    trending_only = p.trending > 0 and not (p.categories or p.about or p.query or p.authors)
    return ReaderForm(
        categories=p.categories,
        about=p.about or "",
        query=p.query or "",
        authors="\n".join(p.authors),
        trending_only=trending_only,
        frequency=s.frequency,
        send_at=s.send_at.strftime("%H:%M"),
        timezone=s.timezone,
    )


def editable_values(subscriber: Subscriber) -> dict[str, Any]:
    """The manage page's fields of ``subscriber``, as the store keeps them."""
    p, s = subscriber.profile, subscriber.schedule
    return {
        "frequency": s.frequency,
        "send_at": s.send_at.strftime("%H:%M"),
        "timezone": s.timezone,
        "categories": list(p.categories),
        "about": p.about,
        "query": p.query,
        "authors": list(p.authors),
        "trending": p.trending,
    }


def confirmation_envelope(config: Config, email: str, url: str, *, now: datetime) -> Envelope:
    """The one message a sign-up sends: the confirmation link, nothing else."""
    list_name = config.file.mail.list_name
    hours = config.file.web.confirm_hours
    text = (
        f"Someone, probably you, asked to receive {list_name} at {email}.\n\n"
        f"To confirm, open this link and press the button on its page:\n{url}\n\n"
        f"The link works once, for {hours} hours. If you did not ask for this, ignore "
        "this message: nothing will be sent to you.\n"
    )
    html = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<p>Someone, probably you, asked to receive {escape(list_name)} at "
        f"<strong>{escape(email)}</strong>.</p>"
        f'<p><a href="{escape(url)}">Confirm your subscription</a> (then press the button '
        "on that page).</p>"
        f"<p>The link works once, for {hours} hours. If you did not ask for this, ignore "
        "this message: nothing will be sent to you.</p></body></html>"
    )
    message_id = make_message_id(f"confirm:{uuid4()}", message_domain(config))
    mail = config.file.mail
    slug = re.sub(r"[^a-z0-9]+", "-", list_name.lower()).strip("-") or "paperpost"
    headers = MessageHeaders(
        from_addr=mail.from_,
        to_addr=email,
        to_name=None,
        subject=f"Confirm your subscription to {list_name}",
        message_id=message_id,
        date=now,
        list_id=f"{list_name} <{slug}.{message_domain(config)}>",
        unsubscribe_url=None,  # nothing to unsubscribe from until the link is pressed
        unsubscribe_mailto=None,
    )
    data = build_message(headers, RenderedDigest(subject=headers.subject, html=html, text=text))
    return Envelope(
        sender=sender_address(config), recipient=email, data=data, message_id=message_id
    )


def _check_domain(domains: Collection[str], email: str, problems: _Problems) -> None:
    if not domains:
        return
    domain = email.rsplit("@", 1)[-1].lower()
    if not any(domain == d or domain.endswith("." + d) for d in domains):
        problems.add(("email",), "this list only takes addresses at " + ", ".join(domains))


def managed_view(record: ReaderRecord, *, now: datetime) -> ManagedReader:
    """What the manage page shows of a stored reader."""
    reader = record.reader
    status = "suppressed" if record.suppressed and reader.status != "active" else reader.status
    paused = record.paused_until if record.paused_until and record.paused_until > now else None
    return ManagedReader(
        email=reader.email,
        status=status,
        origin=reader.origin,
        form=form_of(reader.subscriber),
        overridden=tuple(sorted(record.overrides)),
        paused_until=paused,
        presses=tuple(
            Press(paper_id=m.paper_id, signal=m.signal, title=m.title, at=m.created_at)
            for m in record.feedback
        ),
        can_resubscribe=record.may_resubscribe,
    )
