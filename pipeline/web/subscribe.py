"""``/subscribe`` and ``/confirm/{token}``: double opt-in on the daemon's web server.

- ``GET /subscribe`` shows the form; ``POST /subscribe`` records a *pending* reader and
  has the backend mail one confirmation link. Every accepted POST gets the same page,
  whether the address is new, pending, already a reader or suppressed: the form reveals
  nothing about who is subscribed.
- ``GET /confirm/{token}`` only asks (link scanners fetch every URL in a message); its
  button POSTs to the same URL, which activates the reader. The token (a reader token:
  ids only, no address) names the pending reader and carries the sign-up's nonce; the
  store accepts it only while that nonce is the reader's current one and the sign-up has
  not expired, and clears it on use, so a link confirms once, for its own reader only.
- Abuse: a honeypot field (a bot that fills it gets the usual answer and nothing
  happens), and moving-window rate limits per client address and per email address
  (``limits``: in process memory by default, where each daemon counts on its own and a
  restart forgets; or in Redis, ``[web] rate_limit_storage``, shared by every daemon;
  behind a reverse proxy the client address is the one uvicorn takes from
  ``X-Forwarded-For`` sent by a trusted proxy, 127.0.0.1 by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

from limits import RateLimitItemPerHour, storage, strategies
from limits.errors import ConfigurationError, StorageError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.errors import PaperpostError
from pipeline.web import pages, reader_pages
from pipeline.web.readers import FormError, ReaderBackend, ReaderForm, SubscribeSettings
from pipeline.web.tokens import InvalidTokenError, TokenSigner

log = logging.getLogger("paperpost.web")

MAX_FORM_BYTES = 32 * 1024
MAX_TOKEN_LENGTH = 2048
Html = Callable[..., Response]  # app.py's _html(body, status=200, *, csp=...)


def rate_storage(uri: str) -> storage.Storage:
    """The shared ``limits`` storage behind ``[web] rate_limit_storage`` (a Redis URL;
    clients connect on first use). ``ConfigurationError`` when the URI's client library
    is missing."""
    found = storage.storage_from_string(uri, wrap_exceptions=True)
    if not isinstance(found, storage.Storage):  # the config refuses async+ schemes
        raise ConfigurationError(f"not a synchronous storage: {uri.split('://', 1)[0]}://")
    return found


def check_rate_storage(uri: str) -> str:
    """``paperpost check``'s line for ``[web] rate_limit_storage``; ``ValueError`` with the
    reason when its client library is missing or the server does not answer."""
    if uri.startswith("memory://"):
        return "subscribe rate limits: this process's memory (each daemon counts alone)"
    parts = urlsplit(uri)
    where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    try:
        shared = rate_storage(uri)
    except ConfigurationError as exc:
        raise ValueError(f"{exc} (install Paperpost with the [redis] extra)") from exc
    if not shared.check():
        raise ValueError(f"the rate-limit storage at {where} does not answer")
    return f"subscribe rate limits: shared in {where}"


class RateLimits:
    """Moving one-hour windows per client and per address, counted in this process's
    memory or in Redis shared by every daemon. While Redis cannot be reached the counts
    are kept in memory (and the log says so): a broken counter neither opens the page to
    a flood nor closes it."""

    def __init__(self, settings: SubscribeSettings) -> None:
        self._local = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._shared: strategies.MovingWindowRateLimiter | None = None
        if not settings.rate_limit_storage.startswith("memory://"):
            shared = rate_storage(settings.rate_limit_storage)
            self._shared = strategies.MovingWindowRateLimiter(shared)
        self._client = RateLimitItemPerHour(settings.per_client_per_hour)
        self._address = RateLimitItemPerHour(settings.per_address_per_hour)

    async def client_ok(self, client: str) -> bool:
        return await self._hit(self._client, "subscribe-client", client)

    async def address_ok(self, address: str) -> bool:
        return await self._hit(self._address, "subscribe-address", address)

    async def _hit(self, item: RateLimitItemPerHour, *keys: str) -> bool:
        if self._shared is not None:
            try:
                return bool(await run_in_threadpool(self._shared.hit, item, *keys))
            except StorageError as exc:
                log.error("subscribe: rate-limit storage failed (%s); counting in memory", exc)
        return bool(self._local.hit(item, *keys))


async def read_form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded body (what a browser's form sends), or None when it is too large or
    not a form. Parsed with the standard library: no multipart, no files."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qs(text, keep_blank_values=True, max_num_fields=200)


def first(fields: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0].strip() if values else default


def reader_form(fields: Mapping[str, list[str]]) -> ReaderForm:
    return ReaderForm(
        categories=tuple(dict.fromkeys(v.strip() for v in fields.get("categories", []))),
        about=first(fields, "about"),
        query=first(fields, "query"),
        authors=first(fields, "authors"),
        trending_only=first(fields, "trending_only") not in ("", "0"),
        frequency=first(fields, "frequency", "daily"),
        send_at=first(fields, "send_at", "08:00"),
        timezone=first(fields, "timezone", "UTC"),
    )


def manage_path(signer: TokenSigner, subscriber_id: int, *, now: datetime) -> str:
    """The reader's manage page outside a digest: a reader token, ids only."""
    token = signer.reader_token(subscriber_id=subscriber_id, purpose="manage", now=now)
    return f"/manage/{quote(token, safe='')}"


def subscribe_routes(
    backend: ReaderBackend,
    signer: TokenSigner,
    *,
    settings: SubscribeSettings,
    clock: Callable[[], datetime],
    list_name: str,
    html: Html,
) -> list[Route]:
    limits = RateLimits(settings)

    async def subscribe(request: Request) -> Response:
        if not settings.enabled:
            return html(reader_pages.subscribe_closed(), 404)
        csp = reader_pages.SCRIPT_CSP
        if request.method != "POST":
            return html(reader_pages.subscribe_form(list_name, ReaderForm()), csp=csp)
        client = request.client.host if request.client else "unknown"
        if not await limits.client_ok(client):
            log.warning("subscribe: too many sign-ups from %s; throttled", client)
            return html(reader_pages.slow_down(), 429)
        fields = await read_form(request)
        if fields is None:
            return html(reader_pages.subscribe_form(list_name, ReaderForm()), 400, csp=csp)
        email, form = first(fields, "email"), reader_form(fields)
        if first(fields, "website"):  # the honeypot: people never see it
            log.info("subscribe: honeypot filled by %s; ignored", client)
            return html(reader_pages.check_your_inbox())
        if not await limits.address_ok(email.lower()):
            log.warning("subscribe: too many sign-ups for one address from %s", client)
            return html(reader_pages.slow_down(), 429)
        try:
            send = await run_in_threadpool(backend.request_signup, email, form, now=clock())
        except FormError as exc:
            page = reader_pages.subscribe_form(list_name, form, email, exc.problems)
            return html(page, 400, csp=csp)
        except PaperpostError as exc:
            log.error("subscribe: could not record a sign-up from %s: %s", client, exc)
            return html(pages.unavailable(), 503)
        answer = html(reader_pages.check_your_inbox())
        # The confirmation goes out after the answer (Starlette runs a sync task in its
        # thread pool): a new address and a known one answer alike, and equally fast.
        answer.background = BackgroundTask(send) if send is not None else None
        return answer

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        lifetime = timedelta(hours=settings.confirm_hours)
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise InvalidTokenError("token too long")
            claims = signer.verify_reader(token, purpose="confirm", now=clock(), lifetime=lifetime)
            email = await run_in_threadpool(backend.reader_email, claims.subscriber_id)
        except InvalidTokenError as exc:
            log.info("rejected confirm link: %s", exc.reason)
            return html(pages.invalid_link(), 400)
        except PaperpostError as exc:
            log.error("could not resolve a confirm link: %s", exc)
            return html(pages.unavailable(), 503)
        if email is None:  # expired and deleted, or erased
            log.info("confirm link of a sign-up that is gone")
            return html(pages.invalid_link(), 400)
        if request.method != "POST":  # GET and HEAD: scanners fetch links, only ask
            return html(reader_pages.confirm_signup(email, list_name))
        try:
            done = await run_in_threadpool(
                backend.confirm_signup, email, claims.nonce or "", now=clock()
            )
        except PaperpostError as exc:
            log.error("could not confirm %s: %s", email, exc)
            return html(pages.unavailable(), 503)
        if not done:  # used already, expired, or replaced by a newer sign-up
            log.info("confirm link for %s: no pending sign-up with its nonce", email)
            return html(pages.invalid_link(), 400)
        log.info("sign-up of %s confirmed", email)
        link = manage_path(signer, claims.subscriber_id, now=clock())
        return html(reader_pages.confirmed(email, list_name, link))

    return [
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
    ]
