"""Signed link tokens: HMAC-SHA256 via itsdangerous, with key rotation and explicit expiry.

A token carries the subscriber, the action it authorises, an optional paper id
and its expiry instant. Expiry is a claim inside the signed payload, compared
with the ``now`` the caller passes, so verification is a pure function of
(token, keys, now) and tests need no clock tricks.

Rotation: ``keys[0]`` signs new tokens; every key in ``keys`` verifies. To
rotate, put the new key first and keep the old one until the links it signed
have expired (one year for unsubscribe links), then remove it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin

from pipeline.errors import PaperpostError

ACTIONS: Final = ("unsubscribe", "more", "less", "preview", "confirm", "manage")
# Links that must keep working from old mail (RFC 8058 unsubscribe, the digest's "manage
# your subscription") live a year; a sign-up's "confirm" link carries its own lifetime.
LONG_LIVED: Final = ("unsubscribe", "manage")
# RFC 8058 links in old mail must keep working: unsubscribe links live a year.
UNSUBSCRIBE_MAX_AGE_SECONDS: Final = 366 * 86400
_SALT: Final = "paperpost.link.v1"
# The JSON itsdangerous writes (its ``_CompactJSON``): UTF-8 as is, no spaces.
_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# How many JSON heads ``TokenSigner`` keeps (see ``TokenSigner._json``); a digest needs three.
_HEADS_KEPT: Final = 8


class InvalidTokenError(PaperpostError):
    """A link token is forged, tampered with, expired or for another action.

    ``reason`` is for logs only; readers see one uniform page whatever it is.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid link token: {reason}")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subscriber: str
    action: str
    paper: str | None  # the paper of "more"/"less"; the sign-up nonce of "confirm"
    expires_at: datetime  # UTC


class _UncompressedSerializer(URLSafeSerializer):
    """``URLSafeSerializer`` that never tries zlib on the way out.

    A token's JSON is about 80 bytes, which zlib never shortens, yet the attempt
    was 40 % of the cost of signing, and a digest signs 41 links (a "more" and
    a "less" per paper, and the unsubscribe link). The tokens are the same bytes
    as before for such payloads; loading still accepts compressed ones (the leading ".").
    ``TokenSigner.sign`` makes this class's tokens without its per-token overhead; its
    ``dumps`` is the reference the tests hold ``sign`` to.
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(super(URLSafeSerializerMixin, self).dump_payload(obj))


class TokenSigner:
    """Signs and verifies link tokens; ``keys[0]`` signs, all keys verify."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        max_age_seconds: int = 90 * 86400,
        unsubscribe_max_age_seconds: int = UNSUBSCRIBE_MAX_AGE_SECONDS,
    ) -> None:
        if isinstance(keys, str):
            raise TypeError("keys must be a sequence of strings, not one string")
        if not keys or any(not k for k in keys):
            raise ValueError("at least one non-empty link-signing key is required")
        if max_age_seconds <= 0 or unsubscribe_max_age_seconds <= 0:
            raise ValueError("token lifetimes must be positive")
        self._max_age = timedelta(seconds=max_age_seconds)
        self._unsubscribe_max_age = timedelta(seconds=unsubscribe_max_age_seconds)
        # itsdangerous signs with the LAST key of its list and verifies with all.
        self._serializer = _UncompressedSerializer(
            list(reversed(keys)),
            salt=_SALT,
            signer_kwargs={"digest_method": hashlib.sha256},
        )
        # Signing, prepared once: ``dumps`` builds a Signer and derives its key (a hash) for
        # every token, then a new HMAC, and goes through three layers to write the JSON; a
        # digest signs 41 tokens. ``sign`` writes the same JSON and copies an HMAC keyed
        # once with the same derived key: byte for byte the tokens of ``dumps`` (tested).
        signer = self._serializer.make_signer()
        self._separator = signer.sep
        self._mac = hmac.new(signer.derive_key(), digestmod=signer.digest_method)
        self._heads: dict[tuple[str, str, int], str] = {}

    def lifetime(self, action: str) -> timedelta:
        return self._unsubscribe_max_age if action in LONG_LIVED else self._max_age

    def sign(
        self,
        *,
        subscriber: str,
        action: str,
        paper: str | None = None,
        now: datetime,
        lifetime: timedelta | None = None,
    ) -> str:
        """A token for ``action``. ``paper`` is the paper of a "more"/"less" token and the
        sign-up's single-use nonce of a "confirm" token; ``lifetime`` overrides the
        action's default (a confirmation link lives as long as ``[web] confirm_hours``)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown token action {action!r}; expected one of {ACTIONS}")
        if action in ("more", "less") and not paper:
            raise ValueError(f"a {action!r} token needs the paper it is about")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if lifetime is not None and lifetime <= timedelta(0):
            raise ValueError("a token lifetime must be positive")
        expires = int((now + (lifetime or self.lifetime(action))).timestamp())
        # Encoding to UTF-8 raises on a lone surrogate, as itsdangerous does.
        body = base64_encode(self._json(subscriber, action, expires, paper).encode("utf-8"))
        mac = self._mac.copy()
        mac.update(body)
        return (body + self._separator + base64_encode(mac.digest())).decode("ascii")

    def _json(self, subscriber: str, action: str, expires: int, paper: str | None) -> str:
        """``_JSON.encode`` of the payload, its head written once for many papers.

        A digest signs 41 tokens for one reader and one ``now``: a "more" and a "less"
        link for each of its ~20 papers and one "unsubscribe" link. Their JSON differs
        only in the paper, which comes last, so the head ``{"s":...,"a":...,"e":...``
        is kept for the last few (subscriber, action, expires) instead of writing the
        whole dict each time (a third of the cost of a token). The paper is written by
        ``_JSON.encode`` itself, which escapes a string alone exactly as it does one in
        a dict. The cache is cleared when full, so it stays small; each entry is a pure
        function of its key and each dict operation is atomic, so tasks or threads that
        share the signer can at worst make one another write a head again.
        """
        key = (subscriber, action, expires)
        head = self._heads.get(key)
        if head is None:
            head = _JSON.encode({"s": subscriber, "a": action, "e": expires})[:-1]
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[key] = head
        if paper is None:
            return head + "}"
        return f'{head},"p":{_JSON.encode(paper)}}}'

    def verify(self, token: str, *, action: str | Collection[str], now: datetime) -> TokenClaims:
        """Claims of a valid token for one of ``action``; else raise ``InvalidTokenError``."""
        wanted = {action} if isinstance(action, str) else set(action)
        try:
            payload = self._serializer.loads(token)
        except BadData as exc:
            raise InvalidTokenError("bad signature or malformed token") from exc
        claims = _claims(payload)
        if claims.action not in wanted:
            raise InvalidTokenError(
                f"token is for {claims.action!r}, this link needs {sorted(wanted)}"
            )
        if now >= claims.expires_at:
            raise InvalidTokenError(f"token expired at {claims.expires_at.isoformat()}")
        return claims


def _claims(payload: object) -> TokenClaims:
    """Shape-check a payload that carried a valid signature (signed by us, but be strict)."""
    if not isinstance(payload, dict):
        raise InvalidTokenError("payload is not an object")
    subscriber, action, expires = payload.get("s"), payload.get("a"), payload.get("e")
    paper = payload.get("p")
    if not isinstance(subscriber, str) or not subscriber:
        raise InvalidTokenError("payload has no subscriber")
    if action not in ACTIONS:
        raise InvalidTokenError(f"payload has unknown action {action!r}")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise InvalidTokenError("payload has no expiry")
    if paper is not None and not isinstance(paper, str):
        raise InvalidTokenError("payload paper is not a string")
    try:
        expires_at = datetime.fromtimestamp(expires, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidTokenError("payload expiry is out of range") from exc
    return TokenClaims(
        subscriber=subscriber, action=str(action), paper=paper, expires_at=expires_at
    )
