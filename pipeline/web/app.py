"""The reader-facing web app (Starlette): unsubscribe, feedback, preview, health, metrics.

Everything the endpoints need from the rest of Paperpost is the small
``WebBackend`` port; the daemon hands in an adapter over the store and the
cycle, tests hand in an in-memory fake. Backend methods are synchronous (the
store is SQLAlchemy on a thread-safe engine) and run in Starlette's thread
pool so a slow database never blocks the event loop the scheduler shares.

Policies:

- ``GET`` (and ``HEAD``) never changes anything: mail security gateways,
  link scanners and previewers fetch every URL in a message before the reader
  sees it. ``GET /unsubscribe/{token}`` and ``GET /feedback/{token}`` show a
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
from pipeline.web.readers import ReaderBackend, SubscribeSettings
from pipeline.web.subscribe import manage_path, subscribe_routes
from pipeline.web.tokens import InvalidTokenError, TokenClaims, TokenSigner

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

    def claims_of(request: Request, route: str, action: str | tuple[str, ...]) -> TokenClaims:
        token = request.path_params["token"]
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError(f"token longer than {MAX_TOKEN_LENGTH} characters")
        try:
            return signer.verify(token, action=action, now=clock())
        except InvalidTokenError as exc:
            log.info("rejected %s link from %s: %s", route, _client(request), exc.reason)
            raise

    async def unsubscribe(request: Request) -> Response:
        try:
            claims = claims_of(request, "unsubscribe", "unsubscribe")
        except InvalidTokenError:
            return _html(pages.invalid_link(), 400)
        if request.method != "POST":  # GET and HEAD: scanners fetch links, only ask
            return _html(pages.confirm_unsubscribe(claims.subscriber, list_name))
        try:
            was_active = await run_in_threadpool(
                backend.unsubscribe, claims.subscriber, now=clock()
            )
        except PaperpostError as exc:
            log.error("could not unsubscribe %s: %s", claims.subscriber, exc, extra=_who(claims))
            return _html(pages.unavailable(), 503)
        if was_active:  # the backend's use case logs the "unsubscribe" event (INFO)
            log.debug("unsubscribed %s via link", claims.subscriber, extra=_who(claims))
        else:
            log.info(
                "unsubscribe link for %s: already not active", claims.subscriber, extra=_who(claims)
            )
        manage = manage_path(signer, claims.subscriber, now=clock()) if readers else None
        return _html(pages.unsubscribed(claims.subscriber, list_name, manage))

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
        try:
            claims = claims_of(request, "feedback", ("more", "less"))
        except InvalidTokenError:
            return _html(pages.invalid_link(), 400)
        if not claims.paper:
            log.info("rejected feedback link for %s: no paper", claims.subscriber)
            return _html(pages.invalid_link(), 400)
        if request.method != "POST":  # GET and HEAD: scanners fetch links, only ask
            title = await paper_title(claims.paper)
            return _html(
                pages.confirm_feedback(
                    claims.action, claims.paper, title=title, list_name=list_name
                )
            )
        try:
            recorded = await run_in_threadpool(
                backend.record_feedback, claims.subscriber, claims.paper, claims.action, now=clock()
            )
        except PaperpostError as exc:
            log.error(
                "could not record feedback of %s: %s", claims.subscriber, exc, extra=_who(claims)
            )
            return _html(pages.unavailable(), 503)
        if not recorded:
            log.info(
                "feedback link for unknown subscriber %s ignored",
                claims.subscriber,
                extra=_who(claims),
            )
            return _html(pages.link_inactive(), 410)
        log.debug(  # the backend's use case logs the "feedback" event (INFO)
            "feedback %s on %s from %s",
            claims.action,
            claims.paper,
            claims.subscriber,
            extra=_who(claims),
        )
        title = await paper_title(claims.paper)
        return _html(
            pages.feedback_recorded(claims.action, claims.paper, title=title, list_name=list_name)
        )

    async def preview(request: Request) -> Response:
        subscriber = request.path_params["subscriber"]
        given = request.query_params.get("token")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        allowed = _admin_ok(given, admin_token)
        if not allowed and given and len(given) <= MAX_TOKEN_LENGTH:
            try:
                claims = signer.verify(given, action="preview", now=clock())
                allowed = hmac.compare_digest(claims.subscriber.encode(), subscriber.encode())
            except InvalidTokenError:
                allowed = False
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
        Route("/feedback/{token}", counted("feedback", feedback), methods=["GET", "POST"]),
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


def _who(claims: TokenClaims) -> dict[str, str]:
    return {"subscriber": claims.subscriber}


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
