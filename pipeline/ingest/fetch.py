"""Fetching listings over HTTP(S) with httpx, or from local files. The I/O edge of ingest.

Safety and politeness, all from :class:`FetchPolicy`:

* connect/read timeouts plus a total deadline per fetch (a 1 byte/s trickle cannot hold a
  run hostage); a cap on the bytes on the wire and on the decompressed body (we decompress
  ourselves in bounded steps, so a gzip bomb costs at most the cap);
* http/https only, at most ``max_redirects`` redirects, loops detected;
* every hop's host is resolved and refused when any address is loopback, private,
  link-local (cloud metadata), multicast or otherwise not global, and the connection is
  pinned to the checked address (no DNS-rebinding window). A source may opt in with
  ``allow_private``: its own URL may then be private, and redirects may stay on that same
  origin; a redirect anywhere else is checked as usual;
* conditional GET (``If-None-Match`` / ``If-Modified-Since``); 304 is success, no news;
* 429/503 honour ``Retry-After`` (one wait when it fits the deadline, else the source fails
  for this run and the host is left alone for the rest of the run);
* per-host politeness: one connection per host and a minimum interval between requests
  (3 s for arXiv, its published limit), bounded concurrency across hosts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from pipeline.errors import SourceError
from pipeline.ingest.body import read_body
from pipeline.ingest.urls import (
    is_public,
    local_path,
    politeness_group,
    retry_after,
    split_url,
    system_resolver,
)

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "Fetcher",
    "Resolver",
    "is_public",
    "politeness_group",
]

Resolver = Callable[[str, int], Awaitable[list[str]]]
_ERROR_BODY_MAX = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    """How every fetch of one run behaves. Defaults suit unattended operation."""

    user_agent: str = "Paperpost/0.1 (research paper digests; operator contact not configured)"
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 120.0  # seconds for one fetch, all redirects and body included
    max_bytes: int = 32 * 1024 * 1024  # on the wire
    max_decoded_bytes: int = 64 * 1024 * 1024  # after gzip/deflate
    max_redirects: int = 5
    allow_private: bool = False
    per_host_interval: float = 0.0  # seconds between requests to one host, by default
    host_intervals: tuple[tuple[str, float], ...] = (("arxiv.org", 3.0),)  # host suffix
    max_concurrency: int = 4  # requests in flight across all hosts
    max_retry_after: float = 30.0  # wait at most this long (once) for a 429/503


@dataclass(frozen=True)
class FetchResult:
    status: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    not_modified: bool
    content_type: str | None
    url: str


class FetchError(SourceError):
    """An HTTP error status. ``body`` holds up to 64 KB of the response for diagnosis."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(source, message)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after


@dataclass
class _Host:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0
    blocked_until: float = 0.0


class Fetcher:
    """Fetches source documents; one instance per ingest run (it holds the politeness state).

    ``clock``/``sleep`` and ``resolver`` are injectable so tests can observe politeness
    waits and address checks without waiting or resolving for real.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resolver: Resolver | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._resolve = resolver or system_resolver
        self._hosts: dict[str, _Host] = {}
        self._slots = asyncio.Semaphore(policy.max_concurrency)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(
                connect=policy.connect_timeout,
                read=policy.read_timeout,
                write=policy.read_timeout,
                pool=policy.deadline,
            ),
            limits=httpx.Limits(max_connections=policy.max_concurrency * 2),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- entry point -----------------------------------------------------------------------
    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        allow_private: bool | None = None,
    ) -> FetchResult:
        """Fetch ``url`` (http, https, file:// or a local path). Raises SourceError."""
        try:
            local = local_path(url)
        except ValueError as exc:
            raise SourceError(url, f"invalid URL {url!r} ({exc})") from exc
        if local is not None:
            return self._read_file(url, local, etag=etag)
        scheme = split_url(url, url)[0]
        if scheme not in ("http", "https"):
            raise SourceError(url, f"only http and https URLs are fetched, not {scheme!r}")
        private_ok = self.policy.allow_private if allow_private is None else allow_private
        trusted = split_url(url, url) if private_ok else None
        seen: set[str] = set()
        current = url
        retried = False
        budget = [self.policy.deadline]  # network seconds left for this fetch, all hops
        while True:
            if current in seen:
                raise SourceError(url, f"redirect loop: {current} was already visited")
            seen.add(current)
            if len(seen) > self.policy.max_redirects + 1:
                raise SourceError(url, f"more than {self.policy.max_redirects} redirects")
            outcome = await self._hop(
                url,
                current,
                etag,
                last_modified,
                budget,
                private_ok=split_url(url, current) == trusted,
            )
            if isinstance(outcome, FetchResult):
                return outcome
            if isinstance(outcome, float):  # Retry-After worth waiting for, once
                if retried:
                    raise SourceError(url, "still throttled after waiting for Retry-After")
                retried = True
                seen.discard(current)
                await self._sleep(outcome)
                continue
            current = outcome

    # -- one request -----------------------------------------------------------------------
    async def _hop(
        self,
        source: str,
        url: str,
        etag: str | None,
        last_modified: str | None,
        budget: list[float],
        *,
        private_ok: bool,
    ) -> FetchResult | str | float:
        scheme, host, port = split_url(source, url)
        if scheme not in ("http", "https") or not host:
            raise SourceError(source, f"refused redirect to {url!r}: only http(s) URLs")
        target = await self._checked_address(source, host, port, private_ok=private_ok)
        slot = self._hosts.setdefault(self._slot_key(host), _Host())
        async with slot.lock:
            now = self._clock()
            if slot.blocked_until > now:
                raise SourceError(
                    source, f"{host} asked us to retry after {slot.blocked_until - now:.0f} s"
                )
            if slot.next_at > now:
                await self._sleep(slot.next_at - now)
            async with self._slots:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(max(budget[0], 0.0)):
                        return await self._request(source, url, target, etag, last_modified, slot)
                except TimeoutError as exc:
                    raise SourceError(
                        source,
                        f"no complete answer from {url} within {self.policy.deadline:g} s "
                        "(the total deadline of one fetch)",
                    ) from exc
                except httpx.TimeoutException as exc:
                    raise SourceError(source, f"timed out talking to {url} ({exc!r})") from exc
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    raise SourceError(source, f"could not fetch {url}: {exc!r}") from exc
                finally:
                    budget[0] -= time.monotonic() - started
                    slot.next_at = self._clock() + self._interval(host)

    def _interval(self, host: str) -> float:
        for suffix, seconds in self.policy.host_intervals:
            if host == suffix or host.endswith("." + suffix):
                return seconds
        return self.policy.per_host_interval

    def _slot_key(self, host: str) -> str:
        return politeness_group(host, self.policy.host_intervals)

    async def _checked_address(
        self, source: str, host: str, port: int, *, private_ok: bool
    ) -> str | None:
        """The address to pin the connection to, or None to connect by name (opted in)."""
        if private_ok:
            return None
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise SourceError(source, f"cannot resolve {host!r} ({exc})") from exc
        if not addresses:
            raise SourceError(source, f"{host!r} has no address")
        for address in addresses:
            if not is_public(address):
                raise SourceError(
                    source,
                    f"refused {host!r}: it resolves to the non-public address {address} "
                    "(set allow_private = true on the source to trust it)",
                )
        return addresses[0]

    async def _request(
        self,
        source: str,
        url: str,
        address: str | None,
        etag: str | None,
        last_modified: str | None,
        slot: _Host,
    ) -> FetchResult | str | float:
        parts = urlsplit(url)
        headers = {
            "User-Agent": self.policy.user_agent,
            "Accept-Encoding": "gzip, deflate",
            "Accept": "application/rss+xml, application/atom+xml, application/xml, "
            "application/json;q=0.9, text/xml;q=0.9, */*;q=0.5",
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        request_url = httpx.URL(url)
        extensions: dict[str, str] = {}
        if address is not None:  # pin to the checked address; Host and SNI keep the name
            headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
            # A pooled connection is keyed by address, not name: never reuse one, or a TLS
            # session verified for one host name could carry a request for another.
            headers["Connection"] = "close"
            request_url = request_url.copy_with(host=address)
            extensions["sni_hostname"] = parts.hostname or ""
        request = self._client.build_request(
            "GET", request_url, headers=headers, extensions=extensions
        )
        response = await self._client.send(request, stream=True)
        try:
            return await self._handle(source, url, response, etag, last_modified, slot)
        finally:
            await response.aclose()

    async def _handle(
        self,
        source: str,
        url: str,
        response: httpx.Response,
        etag: str | None,
        last_modified: str | None,
        slot: _Host,
    ) -> FetchResult | str | float:
        status = response.status_code
        content_type = response.headers.get("content-type")
        if status in (301, 302, 303, 307, 308):
            location = response.headers.get("location")
            if not location:
                raise SourceError(source, f"{url} answered {status} without a Location")
            return str(urljoin(url, location.strip()))
        if status == 304:
            return FetchResult(
                status=304,
                body=None,
                etag=response.headers.get("etag") or etag,
                last_modified=response.headers.get("last-modified") or last_modified,
                not_modified=True,
                content_type=content_type,
                url=url,
            )
        if status in (429, 503):
            wait = retry_after(response.headers.get("retry-after"))
            if wait is not None and wait <= self.policy.max_retry_after:
                return wait
            if wait is not None:
                slot.blocked_until = self._clock() + wait
            hint = f"; Retry-After {wait:.0f} s" if wait is not None else ""
            raise FetchError(
                source,
                f"{url} answered {status} (throttled{hint})",
                status=status,
                retry_after=wait,
            )
        if status >= 400 or status < 200 or status >= 300:
            body = await read_body(
                source,
                url,
                response,
                wire_cap=self.policy.max_bytes,
                limit=_ERROR_BODY_MAX,
                strict=False,
            )
            meaning = {404: "not found", 410: "gone for good"}.get(status, response.reason_phrase)
            advice = "; check the source URL" if status in (404, 410) else ""
            raise FetchError(
                source,
                f"{url} answered {status} {meaning}{advice}",
                status=status,
                body=body,
                content_type=content_type,
            )
        body = await read_body(
            source,
            url,
            response,
            wire_cap=self.policy.max_bytes,
            limit=self.policy.max_decoded_bytes,
        )
        return FetchResult(
            status=status,
            body=body,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            not_modified=False,
            content_type=content_type,
            url=url,
        )

    # -- local files -----------------------------------------------------------------------
    def _read_file(self, url: str, path: Path, *, etag: str | None) -> FetchResult:
        try:
            stat = path.stat()
            if stat.st_size > self.policy.max_decoded_bytes:
                raise SourceError(url, f"{path} is {stat.st_size} bytes, over the cap")
            tag = f'"file-{stat.st_mtime_ns}-{stat.st_size}"'
            if etag == tag:
                return FetchResult(304, None, tag, None, True, None, url)
            body = path.read_bytes()
        except OSError as exc:
            raise SourceError(url, f"cannot read {path}: {exc.strerror or exc}") from exc
        kind = "application/json" if path.suffix == ".json" else "application/xml"
        return FetchResult(200, body, tag, None, False, kind, url)
