"""Signed link tokens: plain itsdangerous ``URLSafeTimedSerializer``, ids only, key rotation.

Why this shape (issue 13): a digest used to sign ~41 tokens, each carrying the reader's
address in readable base64 JSON, and its text part was mostly 245-character URLs. Now:

- **One digest token per digest**: ``[subscriber id, outbox row id]``. The digest's
  unsubscribe (RFC 8058), manage and feedback links all carry it; a feedback link adds
  the paper's position (``/feedback/<token>/<n>/more``) and the server accepts only a
  position that outbox row carried.
- **Reader tokens** for links tied to no digest: ``[subscriber id]`` for the manage link
  of a confirmation page and signed ``/preview`` links, ``[subscriber id, nonce]`` for
  a sign-up's confirmation link.

Purposes are kept apart by the salt (``paperpost.<purpose>.v2``): a preview token is no
manage token. Payloads are base64 JSON, i.e. readable: they hold ids only, never an
address. The serializer's own timestamp dates a token; how old it may be is decided when
it is verified, by what the link does (``lifetime``), against the ``now`` the caller
passes, so verification is a pure function of (token, keys, now).

Rotation: ``keys[0]`` signs new tokens; every key verifies (itsdangerous' list of secret
keys, which signs with its last). Put the new key first; remove the old one when the
links it signed have expired (a year: the unsubscribe lifetime).

Old links (format v1: ``URLSafeSerializer``, salt ``paperpost.link.v1``, a JSON object
with the address, action, paper and an expiry claim) are still in inboxes:
:meth:`TokenSigner.verify_legacy` accepts them until their own expiry (366 days after the
last was signed at most), with plain itsdangerous; nothing signs that format any more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from itsdangerous import BadData, TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer

from pipeline.errors import PaperpostError

# What a digest token may open, and reader-token purposes (each its own salt).
DIGEST_USES: Final = ("unsubscribe", "manage", "feedback")
READER_PURPOSES: Final = ("manage", "preview", "confirm")
SIGNALS: Final = ("more", "less")
# RFC 8058 links in old mail must keep working: unsubscribe and manage links live a year.
UNSUBSCRIBE_MAX_AGE_SECONDS: Final = 366 * 86400
DEFAULT_MAX_AGE_SECONDS: Final = 90 * 86400
_LONG_LIVED: Final = ("unsubscribe", "manage")
_DIGEST_SALT: Final = "paperpost.digest.v2"
_LEGACY_SALT: Final = "paperpost.link.v1"
_LEGACY_ACTIONS: Final = ("unsubscribe", "more", "less", "preview", "confirm", "manage")
_SIGNER_KWARGS: Final = {"digest_method": hashlib.sha256}


class InvalidTokenError(PaperpostError):
    """A link token is forged, tampered with, expired or for another purpose.

    ``reason`` is for logs only; readers see one uniform page whatever it is.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid link token: {reason}")


@dataclass(frozen=True, slots=True)
class DigestClaims:
    subscriber_id: int
    delivery_id: int  # the outbox row whose digest carried the link
    signed_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class ReaderClaims:
    subscriber_id: int
    purpose: str
    nonce: str | None  # the sign-up's single-use nonce of a "confirm" token
    signed_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class LegacyClaims:
    """A v1 token's claims: it named the reader by address."""

    subscriber: str
    action: str
    paper: str | None  # the paper of "more"/"less"; the sign-up nonce of "confirm"
    expires_at: datetime  # UTC


class _SignedAt(TimestampSigner):
    """A ``TimestampSigner`` that dates its token with the caller's ``now``.

    ``get_timestamp`` is itsdangerous' documented hook for the signing time; overriding
    it keeps signing a pure function of the caller's clock (tests, previews rendered for
    a given moment) instead of the process's ``time.time()``.
    """

    def __init__(self, *args: Any, signed_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signed_at = signed_at

    def get_timestamp(self) -> int:
        return self._signed_at


class TokenSigner:
    """Signs and verifies link tokens; ``keys[0]`` signs, all keys verify."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
        unsubscribe_max_age_seconds: int = UNSUBSCRIBE_MAX_AGE_SECONDS,
    ) -> None:
        if isinstance(keys, str):
            raise TypeError("keys must be a sequence of strings, not one string")
        if not keys or any(not k for k in keys):
            raise ValueError("at least one non-empty link-signing key is required")
        if max_age_seconds <= 0 or unsubscribe_max_age_seconds <= 0:
            raise ValueError("token lifetimes must be positive")
        self._max_age = timedelta(seconds=max_age_seconds)
        self._long_max_age = timedelta(seconds=unsubscribe_max_age_seconds)
        # itsdangerous signs with the LAST key of its list and verifies with all.
        self._keys = list(reversed(keys))
        self._verifier = URLSafeTimedSerializer(self._keys, signer_kwargs=_SIGNER_KWARGS)
        self._legacy = URLSafeSerializer(
            self._keys, salt=_LEGACY_SALT, signer_kwargs=_SIGNER_KWARGS
        )

    def lifetime(self, use: str) -> timedelta:
        """How long a link for ``use`` (unsubscribe, manage, feedback, preview, ...) works."""
        return self._long_max_age if use in _LONG_LIVED else self._max_age

    # -- signing ---------------------------------------------------------------------------
    def digest_token(self, *, subscriber_id: int, delivery_id: int, now: datetime) -> str:
        """The one token of a digest: its unsubscribe, manage and feedback links carry it."""
        return self._dumps([_id(subscriber_id), _id(delivery_id)], _DIGEST_SALT, now)

    def reader_token(
        self, *, subscriber_id: int, purpose: str, now: datetime, nonce: str | None = None
    ) -> str:
        """A token for a link tied to no digest: ``manage`` (the confirmation page's link),
        ``preview``, or ``confirm`` with the sign-up's ``nonce``."""
        if purpose not in READER_PURPOSES:
            raise ValueError(
                f"unknown token purpose {purpose!r}; expected one of {READER_PURPOSES}"
            )
        if (purpose == "confirm") != bool(nonce):
            raise ValueError("a 'confirm' token, and only that, carries the sign-up's nonce")
        payload: list[object] = [_id(subscriber_id)]
        if nonce:
            payload.append(nonce)
        return self._dumps(payload, _reader_salt(purpose), now)

    def _dumps(self, payload: list[object], salt: str, now: datetime) -> str:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        serializer = URLSafeTimedSerializer(
            self._keys,
            salt=salt,
            signer=_SignedAt,
            signer_kwargs={**_SIGNER_KWARGS, "signed_at": int(now.timestamp())},
        )
        token = serializer.dumps(payload)
        assert isinstance(token, str)  # URLSafeTimedSerializer's text serializer
        return token

    # -- verifying -------------------------------------------------------------------------
    def verify_digest(self, token: str, *, use: str, now: datetime) -> DigestClaims:
        """Claims of a valid digest token opened for ``use`` (one of ``DIGEST_USES``: it sets
        the lifetime); else raise ``InvalidTokenError``."""
        if use not in DIGEST_USES:
            raise ValueError(f"unknown digest link use {use!r}; expected one of {DIGEST_USES}")
        payload, signed_at = self._loads(token, _DIGEST_SALT, self.lifetime(use), now)
        if not isinstance(payload, list) or len(payload) != 2:
            raise InvalidTokenError("digest payload is not [subscriber, delivery]")
        return DigestClaims(_claim_id(payload[0]), _claim_id(payload[1]), signed_at)

    def verify_reader(
        self, token: str, *, purpose: str, now: datetime, lifetime: timedelta | None = None
    ) -> ReaderClaims:
        """Claims of a valid reader token for ``purpose``; ``lifetime`` overrides the
        purpose's default (a confirmation link lives ``[web] confirm_hours``)."""
        if purpose not in READER_PURPOSES:
            raise ValueError(
                f"unknown token purpose {purpose!r}; expected one of {READER_PURPOSES}"
            )
        max_age = lifetime or self.lifetime(purpose)
        payload, signed_at = self._loads(token, _reader_salt(purpose), max_age, now)
        size = 2 if purpose == "confirm" else 1
        if not isinstance(payload, list) or len(payload) != size:
            raise InvalidTokenError(f"{purpose} payload has the wrong shape")
        nonce = payload[1] if size == 2 else None
        if nonce is not None and (not isinstance(nonce, str) or not nonce):
            raise InvalidTokenError("confirm payload has no nonce")
        return ReaderClaims(_claim_id(payload[0]), purpose, nonce, signed_at)

    def _loads(
        self, token: str, salt: str, max_age: timedelta, now: datetime
    ) -> tuple[object, datetime]:
        try:
            payload, signed_at = self._verifier.loads(token, salt=salt, return_timestamp=True)
        except BadData as exc:
            raise InvalidTokenError("bad signature or malformed token") from exc
        if now >= signed_at + max_age:
            raise InvalidTokenError(f"token expired at {(signed_at + max_age).isoformat()}")
        return payload, signed_at

    def verify_legacy(
        self, token: str, *, action: str | Collection[str], now: datetime
    ) -> LegacyClaims:
        """Claims of a valid v1 token (links mailed before one token per digest) for one of
        ``action``, until its own expiry claim; else raise ``InvalidTokenError``."""
        wanted = {action} if isinstance(action, str) else set(action)
        try:
            payload = self._legacy.loads(token)
        except BadData as exc:
            raise InvalidTokenError("bad signature or malformed token") from exc
        claims = _legacy_claims(payload)
        if claims.action not in wanted:
            raise InvalidTokenError(
                f"token is for {claims.action!r}, this link needs {sorted(wanted)}"
            )
        if now >= claims.expires_at:
            raise InvalidTokenError(f"token expired at {claims.expires_at.isoformat()}")
        return claims


def _reader_salt(purpose: str) -> str:
    return f"paperpost.{purpose}.v2"


def _id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"a token carries positive integer ids, not {value!r}")
    return value


def _claim_id(value: object) -> int:
    """Shape-check an id from a payload that carried a valid signature (be strict)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidTokenError("payload id is not a positive integer")
    return value


def _legacy_claims(payload: object) -> LegacyClaims:
    """Shape-check a v1 payload that carried a valid signature (signed by us, but be strict)."""
    if not isinstance(payload, dict):
        raise InvalidTokenError("payload is not an object")
    subscriber, action, expires = payload.get("s"), payload.get("a"), payload.get("e")
    paper = payload.get("p")
    if not isinstance(subscriber, str) or not subscriber:
        raise InvalidTokenError("payload has no subscriber")
    if action not in _LEGACY_ACTIONS:
        raise InvalidTokenError(f"payload has unknown action {action!r}")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise InvalidTokenError("payload has no expiry")
    if paper is not None and not isinstance(paper, str):
        raise InvalidTokenError("payload paper is not a string")
    try:
        expires_at = datetime.fromtimestamp(expires, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidTokenError("payload expiry is out of range") from exc
    return LegacyClaims(
        subscriber=subscriber, action=str(action), paper=paper, expires_at=expires_at
    )
