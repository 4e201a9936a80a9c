"""``/manage/{token}``: the reader's own page, linked from every digest.

The token is the digest's own (ids of the reader and the outbox row; valid a year like
the unsubscribe link), a reader token (the link on the confirmation page), or a v1 token
until it expires; none carries the address. ``GET`` only shows; every change is a
``POST`` to the same URL with an ``action`` field: ``save`` (interests, frequency, time,
time zone), ``reset`` (a config reader's own edits dropped), ``pause`` (``weeks``) and
``resume``, ``undo`` (one "more/less" press, ``paper``), ``resubscribe``, ``export``
(the JSON download) and ``erase`` (needs ``sure``). No cookies, no session: the URL's
token is the authority, as for the unsubscribe link (see ``app.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.errors import PaperpostError
from pipeline.web import pages, reader_pages
from pipeline.web.readers import FormError, ReaderBackend
from pipeline.web.subscribe import MAX_TOKEN_LENGTH, Html, first, read_form, reader_form
from pipeline.web.tokens import InvalidTokenError, TokenSigner

log = logging.getLogger("paperpost.web")

_NOTICES = {
    "save": "Your settings are saved.",
    "reset": "The operator's settings apply again from the next digest.",
    "pause": "Your digests are paused.",
    "resume": "Your digests are resumed.",
    "undo": "That press is forgotten.",
    "resubscribe": "You are subscribed again.",
}


def manage_routes(
    backend: ReaderBackend,
    signer: TokenSigner,
    *,
    clock: Callable[[], datetime],
    list_name: str,
    html: Html,
) -> list[Route]:
    async def reader_of(token: str) -> str | None:
        """The address a manage link names: a digest token (through its outbox row), a
        reader token, or a v1 token until it expires; ``InvalidTokenError`` otherwise."""
        now = clock()
        try:
            digest = signer.verify_digest(token, use="manage", now=now)
        except InvalidTokenError as as_digest:
            try:
                reader = signer.verify_reader(token, purpose="manage", now=now)
            except InvalidTokenError as as_reader:
                try:
                    return signer.verify_legacy(token, action="manage", now=now).subscriber
                except InvalidTokenError as as_v1:
                    raise InvalidTokenError(
                        f"{as_digest.reason} (as a reader token: {as_reader.reason}; "
                        f"as a v1 token: {as_v1.reason})"
                    ) from as_v1
            return await run_in_threadpool(backend.reader_email, reader.subscriber_id)
        linked = await run_in_threadpool(
            backend.linked_digest, digest.subscriber_id, digest.delivery_id
        )
        return linked.email if linked is not None else None

    async def manage(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise InvalidTokenError("token too long")
            found = await reader_of(token)
        except InvalidTokenError as exc:
            log.info("rejected manage link: %s", exc.reason)
            return html(pages.invalid_link(), 400)
        except PaperpostError as exc:
            log.error("could not resolve a manage link: %s", exc)
            return html(pages.unavailable(), 503)
        if found is None:  # the digest or the reader is gone
            return html(pages.link_inactive(), 410)
        email = found
        problems: tuple[str, ...] = ()
        notice = ""
        try:
            if request.method == "POST":
                fields = await read_form(request)
                if fields is None:
                    return html(pages.invalid_link(), 400)
                action = first(fields, "action")
                now = clock()
                if action == "export":
                    data = await run_in_threadpool(backend.export_reader, email)
                    if data is None:
                        return html(pages.link_inactive(), 410)
                    return Response(
                        json.dumps(data, indent=2, ensure_ascii=False),
                        media_type="application/json",
                        headers={
                            "Content-Disposition": 'attachment; filename="paperpost-data.json"',
                            "Cache-Control": "no-store",
                            "X-Content-Type-Options": "nosniff",
                        },
                    )
                if action == "erase":
                    if not first(fields, "sure"):
                        problems = ("Tick the box to confirm the deletion.",)
                    elif await run_in_threadpool(backend.erase_reader, email, now=now):
                        log.info("erased reader %s at their request", email)
                        return html(reader_pages.erased())
                    else:
                        return html(pages.link_inactive(), 410)
                elif action in _NOTICES:
                    try:
                        await _act(backend, email, action, fields, now)
                        notice = _NOTICES[action]
                        log.info("manage page: %s by %s", action, email)
                    except FormError as exc:
                        problems = exc.problems
                else:
                    problems = ("That action is not known.",)
            reader = await run_in_threadpool(backend.managed_reader, email, now=clock())
        except PaperpostError as exc:
            log.error("manage page of %s failed: %s", email, exc)
            return html(pages.unavailable(), 503)
        if reader is None:
            return html(pages.link_inactive(), 410)
        page = reader_pages.manage(reader, list_name, problems=problems, notice=notice)
        return html(page, 400 if problems else 200, csp=reader_pages.SCRIPT_CSP)

    return [Route("/manage/{token}", manage, methods=["GET", "POST"])]


async def _act(
    backend: ReaderBackend,
    email: str,
    action: str,
    fields: dict[str, list[str]],
    now: datetime,
) -> None:
    if action == "save":
        await run_in_threadpool(backend.edit_reader, email, reader_form(fields), now=now)
    elif action == "reset":
        await run_in_threadpool(backend.reset_overrides, email, now=now)
    elif action in ("pause", "resume"):
        weeks = 0
        if action == "pause":
            try:
                weeks = int(first(fields, "weeks"))
            except ValueError:
                weeks = -1
            if not 1 <= weeks <= 52:
                raise FormError(["Pause for 1 to 52 weeks."])
        await run_in_threadpool(backend.pause, email, weeks, now=now)
    elif action == "undo":
        await run_in_threadpool(backend.undo_feedback, email, first(fields, "paper"), now=now)
    elif action == "resubscribe" and not await run_in_threadpool(
        backend.resubscribe, email, now=now
    ):
        raise FormError(["This address cannot be subscribed again."])
