"""The reader-facing web app (Starlette): unsubscribe, feedback, preview, health, metrics.

Everything the endpoints need from the rest of Paperpost is the small
``WebBackend`` port; the daemon hands in an adapter over the store and the
cycle, tests hand in an in-memory fake. Backend methods are synchronous (the
store is SQLAlchemy on a thread-safe engine) and run in Starlette's thread
pool so a slow database never blocks the event loop the scheduler shares.

Policies:

- Links carry the digest's one token, ids only (``tokens.py``): ``/unsubscribe/{token}``
  and ``/feedback/{token}/{n}/{more|less}``, the ``n``-th paper of that outbox row (the
  backend's ``linked_digest``); ``/feedback/{token}`` and an address-bearing
  unsubscribe token are old (v1) links, verified until they expire.
- ``GET`` (and ``HEAD``) never changes anything: mail security gateways,
  link scanners and previewers fetch every URL in a message before the reader
  sees it. ``GET /unsubscribe/...`` and ``GET /feedback/...`` show a
  page whose one button POSTs to the same URL; only ``POST`` acts.
- ``POST /unsubscribe/{token}`` unsubscribes (RFC 8058): no cookie, no login,
  no body required (the signed token is the authority, so urlencoded,
  multipart or empty bodies all work), idempotent, 200 with a page, never a
  redirect. ``POST /feedback/{token}`` records the signal the same way: the
  store keeps one row per (subscriber, paper), latest signal wins, so pressing
  twice records once.
- No CSRF token: nothing is authenticated by ambient credentials (no cookies,
  no sessions), so a forged cross-site POST needs the URL's token, and whoever
  holds it can POST it directly anyway. See docs/daemon.md.
- Every bad token (forged, tampered, expired, wrong purpose, malformed) gets
  the same 400 page; the reason goes to the log only.
- Responses carry ``Cache-Control: no-store``, a restrictive CSP, no cookies.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.errors import PaperpostError
from pipeline.web import pages
from pipeline.web.manage import manage_routes
from pipeline.web.metrics import Metric, exposition
from pipeline.web.readers import LinkedDigest, ReaderBackend, SubscribeSettings
from pipeline.web.subscribe import subscribe_routes
from pipeline.web.tokens import (
    SIGNALS,
    DigestClaims,
    InvalidTokenError,
    LegacyClaims,
    TokenSigner,
)

log = logging.getLogger("paperpost.web")

MAX_TOKEN_LENGTH = 2048
_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; " + (
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WebBackend(Protocol):
    """What the endpoints need. Implemented over the store by the daemon."""

    def unsubscribe(self, email: str, *, now: datetime) -> bool:
        """Suppress ``email``; idempotent. Returns whether it was active."""

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        """Record "more"/"less" for one paper. False if the subscriber is unknown."""

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        """The reader and papers of the outbox row a digest token names; None when the row
        is gone or is not that reader's."""

    def reader_email(self, subscriber_id: int) -> str | None:
        """The address of the reader a reader token names; None if there is none."""

    def render_preview(self, email: str) -> str | None:
        """HTML of the subscriber's next digest, or None for an unknown subscriber."""

    def health(self) -> Mapping[str, object]:
        """JSON-able status; ``{"ok": False, ...}`` answers 503."""

    def metrics_text(self) -> str:
        """Prometheus text exposition of the pipeline's counters."""


Endpoint = Callable[[Request], Awaitable[Response]]


def _html(body: str, status: int = 200, *, csp: str = _PAGE_CSP) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": csp,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )


def _admin_ok(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def create_app(
    backend: WebBackend,
    signer: TokenSigner,
    *,
    admin_token: str | None,
    clock: Callable[[], datetime],
    list_name: str = "Paperpost",
    readers: ReaderBackend | None = None,
    subscribe: SubscribeSettings | None = None,
) -> Starlette:
    """The ASGI app. ``admin_token`` None disables admin access to ``/preview``.
    ``readers`` mounts the subscribe, confirm and manage pages (docs/readers.md)."""
    requests: Counter[tuple[str, str, int]] = Counter()

    def counted(name: str, endpoint: Endpoint) -> Endpoint:
        async def wrapper(request: Request) -> Response:
            response = await endpoint(request)
            requests[(name, request.method, response.status_code)] += 1
            return response

        return wrapper

    def token_of(request: Request) -> str:
        token: str = request.path_params["token"]
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError(f"token longer than {MAX_TOKEN_LENGTH} characters")
        return token

    def rejected(request: Request, route: str, exc: InvalidTokenError) -> Response:
        log.info("rejected %s link from %s: %s", route, _client(request), exc.reason)
        return _html(pages.invalid_link(), 400)

    async def linked(claims: DigestClaims) -> LinkedDigest | None:
        """The digest a token names, while its outbox row exists and is its reader's."""
        return await run_in_threadpool(
            backend.linked_digest, claims.subscriber_id, claims.delivery_id
        )

    async def unsubscribe(request: Request) -> Response:
        manage: str | None = None
        try:
            token = token_of(request)
            try:
                claims = signer.verify_digest(token, use="unsubscribe", now=clock())
            except InvalidTokenError as exc:
                email: str | None = _legacy(signer, token, exc, "unsubscribe", clock()).subscriber
            else:
                digest = await linked(claims)
                email = digest.email if digest is not None else None
                manage = f"/manage/{quote(token, safe='')}" if readers else None
        except InvalidTokenError as exc:
            return rejected(request, "unsubscribe", exc)
        except PaperpostError as exc:
            log.error("could not resolve an unsubscribe link: %s", exc)
            return _html(pages.unavailable(), 503)
        if email is None:
            log.info("unsubscribe link of a digest that is gone; ignored")
            return _html(pages.link_inactive(), 410)
        who = {"subscriber": email}
        if request.method != "POST":  # GET and HEAD: scanners fetch links, only ask
            return _html(pages.confirm_unsubscribe(email, list_name))
        try:
            was_active = await run_in_threadpool(backend.unsubscribe, email, now=clock())
        except PaperpostError as exc:
            log.error("could not unsubscribe %s: %s", email, exc, extra=who)
            return _html(pages.unavailable(), 503)
        if was_active:  # the backend's use case logs the "unsubscribe" event (INFO)
            log.debug("unsubscribed %s via link", email, extra=who)
        else:
            log.info("unsubscribe link for %s: already not active", email, extra=who)
        return _html(pages.unsubscribed(email, list_name, manage))

    async def paper_title(paper_id: str) -> str | None:
        """The paper's title for the feedback pages, from a backend with an optional
        ``paper_title(paper_id)``; None (the page shows the id) when it has none."""
        lookup = getattr(backend, "paper_title", None)
        if lookup is None:
            return None
        try:
            title = await run_in_threadpool(lookup, paper_id)
        except PaperpostError as exc:
            log.warning("no title for paper %s: %s", paper_id, exc)
            return None
        return title if isinstance(title, str) else None

    async def feedback(request: Request) -> Response:
        """``/feedback/<digest token>/<n>/<more|less>``: the n-th paper of that digest."""
        signal, position = request.path_params["signal"], request.path_params["position"]
        try:
            if signal not in SIGNALS:
                raise InvalidTokenError(f"unknown feedback signal {signal[:20]!r}")
            claims = signer.verify_digest(token_of(request), use="feedback", now=clock())
        except InvalidTokenError as exc:
            return rejected(request, "feedback", exc)
        try:
            digest = await linked(claims)
        except PaperpostError as exc:
            log.error("could not resolve a feedback link: %s", exc)
            return _html(pages.unavailable(), 503)
        if digest is None:
            log.info("feedback link of a digest that is gone; ignored")
            return _html(pages.link_inactive(), 410)
        ascii_digits = position.isascii() and position.isdigit()
        n = int(position) if ascii_digits and len(position) <= 4 else 0
        if not 1 <= n <= len(digest.papers):
            log.info(
                "rejected feedback link from %s: position %.20r is not in the digest",
                _client(request),
                position,
            )
            return _html(pages.invalid_link(), 400)
        paper, title = digest.papers[n - 1]
        return await record(request, digest.email, paper, signal, title)

    async def legacy_feedback(request: Request) -> Response:
        """``/feedback/<token>``: a v1 link mailed before one token per digest."""
        try:
            claims = _legacy(signer, token_of(request), None, ("more", "less"), clock())
            if not claims.paper:
                raise InvalidTokenError("no paper")
        except InvalidTokenError as exc:
            return rejected(request, "feedback", exc)
        return await record(
            request, claims.subscriber, claims.paper, claims.action, await paper_title(claims.paper)
        )

    async def record(
        request: Request, email: str, paper: str, signal: str, title: str | None
    ) -> Response:
        """GET and HEAD ask (scanners fetch links); POST records one reader's signal."""
        if request.method != "POST":
            return _html(pages.confirm_feedback(signal, paper, title=title, list_name=list_name))
        who = {"subscriber": email}
        try:
            recorded = await run_in_threadpool(
                backend.record_feedback, email, paper, signal, now=clock()
            )
        except PaperpostError as exc:
            log.error("could not record feedback of %s: %s", email, exc, extra=who)
            return _html(pages.unavailable(), 503)
        if not recorded:
            log.info("feedback link for unknown subscriber %s ignored", email, extra=who)
            return _html(pages.link_inactive(), 410)
        # the backend's use case logs the "feedback" event (INFO)
        log.debug("feedback %s on %s from %s", signal, paper, email, extra=who)
        return _html(pages.feedback_recorded(signal, paper, title=title, list_name=list_name))

    async def preview_allowed(given: str, subscriber: str) -> bool:
        """A signed preview link (a reader token; a v1 one until it expires) for exactly
        the reader the path names."""
        try:
            claims = signer.verify_reader(given, purpose="preview", now=clock())
        except InvalidTokenError as exc:
            try:
                email: str | None = _legacy(signer, given, exc, "preview", clock()).subscriber
            except InvalidTokenError:
                return False
        else:
            try:
                email = await run_in_threadpool(backend.reader_email, claims.subscriber_id)
            except PaperpostError as exc:
                log.error("could not resolve a preview link: %s", exc)
                return False
        return email is not None and hmac.compare_digest(email.encode(), subscriber.encode())

    async def preview(request: Request) -> Response:
        subscriber = request.path_params["subscriber"]
        given = request.query_params.get("token")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        allowed = _admin_ok(given, admin_token)
        if not allowed and given and len(given) <= MAX_TOKEN_LENGTH:
            allowed = await preview_allowed(given, subscriber)
        if not allowed:
            log.info("refused preview of %s from %s", subscriber, _client(request))
            return _html(pages.invalid_link(), 403)
        html = await run_in_threadpool(backend.render_preview, subscriber)
        if html is None:
            return _html(pages.not_found(), 404)
        return _html(html, csp=_PREVIEW_CSP)

    async def healthz(request: Request) -> Response:
        try:
            status = dict(await run_in_threadpool(backend.health))
        except Exception as exc:  # a health check reports failures, it does not raise them
            log.error("health check failed: %s", exc)
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)
        # "degraded" (the pipeline has trouble, the endpoints work) is still 200; only a
        # backend that says ok: False (no database) answers 503.
        status.setdefault("ok", True)
        return JSONResponse(status, status_code=200 if status["ok"] else 503)

    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(backend.metrics_text)
        if text and not text.endswith("\n"):
            text += "\n"
        return PlainTextResponse(
            text + _request_metrics(requests), media_type=PROMETHEUS_CONTENT_TYPE
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 404
        return _html(pages.not_found(), code)

    routes = [
        Route("/unsubscribe/{token}", counted("unsubscribe", unsubscribe), methods=["GET", "POST"]),
        Route(
            "/feedback/{token}/{position}/{signal}",
            counted("feedback", feedback),
            methods=["GET", "POST"],
        ),
        Route("/feedback/{token}", counted("feedback", legacy_feedback), methods=["GET", "POST"]),
        Route("/preview/{subscriber}", counted("preview", preview), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if readers is not None:
        for route in subscribe_routes(
            readers,
            signer,
            settings=subscribe or SubscribeSettings(),
            clock=clock,
            list_name=list_name,
            html=_html,
        ) + manage_routes(readers, signer, clock=clock, list_name=list_name, html=_html):
            name = route.path.strip("/").split("/")[0]
            routes.append(Route(route.path, counted(name, route.endpoint), methods=["GET", "POST"]))
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _legacy(
    signer: TokenSigner,
    token: str,
    current: InvalidTokenError | None,
    action: str | tuple[str, ...],
    now: datetime,
) -> LegacyClaims:
    """A v1 token's claims; when it is none either, the error names both formats' reasons."""
    try:
        return signer.verify_legacy(token, action=action, now=now)
    except InvalidTokenError as exc:
        if current is None:
            raise
        raise InvalidTokenError(f"{current.reason} (as a v1 token: {exc.reason})") from exc


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _request_metrics(requests: Counter[tuple[str, str, int]]) -> str:
    return exposition(
        [
            Metric(
                "paperpost_web_requests_total",
                "counter",
                "Reader-facing web requests by route, method and status.",
                tuple(
                    ({"route": route, "method": method, "status": str(status)}, n)
                    for (route, method, status), n in sorted(requests.items())
                ),
            )
        ]
    )
