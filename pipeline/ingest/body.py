"""Reading a response body within caps: bytes on the wire and bytes after decompression.

Paperpost asks only for gzip and deflate and decompresses itself, in steps bounded by
what is left under the cap, so a compression bomb costs at most the cap.
"""

from __future__ import annotations

import zlib

import httpx

from pipeline.errors import SourceError


async def read_body(
    source: str,
    url: str,
    response: httpx.Response,
    *,
    wire_cap: int,
    limit: int,
    strict: bool = True,
) -> bytes:
    """The body, decompressed in bounded steps; over a cap is an error (or cut, if lax)."""
    declared = response.headers.get("content-length", "")
    if strict and declared.isdigit() and int(declared) > wire_cap:
        raise SourceError(source, f"{url} announces {declared} bytes, over the cap of {wire_cap}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise SourceError(source, f"{url} used the unsupported Content-Encoding {encoding!r}")
    parts: list[bytes] = []
    wire = size = 0
    try:
        async for chunk in response.aiter_raw():
            wire += len(chunk)
            if wire > wire_cap:
                if not strict:
                    break
                raise SourceError(source, f"{url} sent more than the cap of {wire_cap} bytes")
            data = chunk
            while data:
                piece = decoder.decompress(data, limit - size + 1) if decoder else data
                size += len(piece)
                if size > limit:
                    if not strict:
                        return b"".join(parts)
                    raise SourceError(
                        source,
                        f"{url} decompresses to more than the cap of {limit} bytes "
                        "(a compression bomb or an oversized listing)",
                    )
                parts.append(piece)
                data = decoder.unconsumed_tail if decoder else b""
        if decoder:
            parts.append(decoder.flush())
    except zlib.error as exc:
        raise SourceError(source, f"{url} sent a corrupt {encoding} body ({exc})") from exc
    return b"".join(parts)
