"""Address and URL rules of the fetcher: which addresses are public, how URLs split,
which hosts share a politeness slot, and how Retry-After reads. Pure, except the system
resolver and the wall clock an HTTP-date ``Retry-After`` is measured against."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import SourceError


def is_public(address: str) -> bool:
    """False for loopback, private, link-local (metadata), CGNAT, reserved, multicast, and
    IPv4-mapped forms of those: anything but a global unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme and len(parts.scheme) > 1:
        return None  # some other scheme: refused by the caller
    return Path(url)


def politeness_group(host: str, host_intervals: tuple[tuple[str, float], ...]) -> str:
    """The key hosts share a connection slot and interval under: the matching
    ``host_intervals`` suffix (arXiv's limit covers rss.arxiv.org and export.arxiv.org
    together), else the host itself."""
    for suffix, _ in host_intervals:
        if host == suffix or host.endswith("." + suffix):
            return suffix
    return host


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def split_url(source: str, url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``; SourceError when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceError(source, f"invalid URL {url!r} ({exc})") from exc
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)
