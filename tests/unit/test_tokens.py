"""Signed link tokens: one per digest, reader tokens, rotation, old (v1) links, bad tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from pipeline.errors import PaperpostError
from pipeline.web.tokens import (
    DigestClaims,
    InvalidTokenError,
    LegacyClaims,
    ReaderClaims,
    TokenSigner,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KEY_A = "a-very-secret-key-number-one"
KEY_B = "another-secret-key-number-two"
SHA256 = {"digest_method": hashlib.sha256}


def digest(signer: TokenSigner, sid: int = 7, did: int = 1234, now: datetime = NOW) -> str:
    return signer.digest_token(subscriber_id=sid, delivery_id=did, now=now)


def v1_token(payload: object, key: str = KEY_A) -> str:
    """A link as mailed before one token per digest (format v1), made by plain itsdangerous."""
    token = URLSafeSerializer(key, salt="paperpost.link.v1", signer_kwargs=SHA256).dumps(payload)
    assert isinstance(token, str)
    return token


def v1(action: str, *, expires: datetime, paper: str | None = None) -> str:
    payload: dict[str, Any] = {"s": "ada@lab.example", "a": action, "e": int(expires.timestamp())}
    if paper is not None:
        payload["p"] = paper
    return v1_token(payload)


# ---------------------------------------------------------------- the digest token


def test_a_digest_token_carries_two_ids_and_is_short_and_url_safe() -> None:
    signer = TokenSigner([KEY_A])
    token = digest(signer, sid=123456, did=98765432)
    for use in ("unsubscribe", "manage", "feedback"):
        assert signer.verify_digest(token, use=use, now=NOW) == DigestClaims(123456, 98765432, NOW)
    assert all(c.isalnum() or c in "-_." for c in token)
    assert len(token) < 80


def test_the_token_is_what_plain_itsdangerous_makes_and_reads() -> None:
    """The library is the oracle: its own serializer, given the same keys and salt, reads
    the payload and the signing time; and a token it signs verifies here."""
    signer = TokenSigner([KEY_B, KEY_A])
    plain = URLSafeTimedSerializer([KEY_A, KEY_B], salt="paperpost.digest.v2", signer_kwargs=SHA256)
    payload, signed_at = plain.loads(digest(signer), return_timestamp=True)
    assert (payload, signed_at) == ([7, 1234], NOW)
    theirs = plain.dumps([8, 99])  # signed now, by the machine's clock
    assert isinstance(theirs, str)
    claims = signer.verify_digest(theirs, use="feedback", now=datetime.now(UTC))
    assert (claims.subscriber_id, claims.delivery_id) == (8, 99)


@pytest.mark.parametrize(
    ("use", "lifetime"),
    [
        ("unsubscribe", timedelta(days=366)),
        ("manage", timedelta(days=366)),
        ("feedback", timedelta(days=90)),
    ],
)
def test_one_token_lives_as_long_as_what_it_opens(use: str, lifetime: timedelta) -> None:
    signer = TokenSigner([KEY_A])
    token = digest(signer)
    last_valid = NOW + lifetime - timedelta(seconds=1)
    assert signer.verify_digest(token, use=use, now=last_valid).delivery_id == 1234
    with pytest.raises(InvalidTokenError, match="token expired at"):
        signer.verify_digest(token, use=use, now=NOW + lifetime)


def test_key_rotation_new_key_signs_old_key_still_verifies_until_removed() -> None:
    old, rotated = TokenSigner([KEY_A]), TokenSigner([KEY_B, KEY_A])
    old_token, new_token = digest(old), digest(rotated)
    assert rotated.verify_digest(old_token, use="unsubscribe", now=NOW).subscriber_id == 7
    assert TokenSigner([KEY_B]).verify_digest(new_token, use="unsubscribe", now=NOW)
    with pytest.raises(InvalidTokenError, match="bad signature"):
        old.verify_digest(new_token, use="unsubscribe", now=NOW)  # signed with the new key
    with pytest.raises(InvalidTokenError, match="bad signature"):
        TokenSigner([KEY_B]).verify_digest(old_token, use="unsubscribe", now=NOW)  # removed


# ---------------------------------------------------------------- reader tokens and purposes


@pytest.mark.parametrize(
    ("purpose", "nonce", "lifetime"),
    [
        ("manage", None, timedelta(days=366)),
        ("preview", None, timedelta(days=90)),
        ("confirm", "n0nce-xyz", timedelta(days=90)),
    ],
)
def test_reader_tokens_round_trip(purpose: str, nonce: str | None, lifetime: timedelta) -> None:
    signer = TokenSigner([KEY_A])
    token = signer.reader_token(subscriber_id=42, purpose=purpose, nonce=nonce, now=NOW)
    claims = signer.verify_reader(token, purpose=purpose, now=NOW + lifetime - timedelta(seconds=1))
    assert claims == ReaderClaims(42, purpose, nonce, NOW)
    with pytest.raises(InvalidTokenError, match="expired"):
        signer.verify_reader(token, purpose=purpose, now=NOW + lifetime)


def test_a_confirmation_link_lives_as_long_as_the_caller_says() -> None:
    signer = TokenSigner([KEY_A])
    token = signer.reader_token(subscriber_id=42, purpose="confirm", nonce="n", now=NOW)
    two_days = timedelta(hours=48)
    ok = NOW + two_days - timedelta(seconds=1)
    assert signer.verify_reader(token, purpose="confirm", now=ok, lifetime=two_days).nonce == "n"
    with pytest.raises(InvalidTokenError, match="expired"):
        signer.verify_reader(token, purpose="confirm", now=NOW + two_days, lifetime=two_days)


def test_purposes_do_not_open_one_another() -> None:
    signer = TokenSigner([KEY_A])
    tokens = {
        "digest": digest(signer, sid=42, did=43),
        "manage": signer.reader_token(subscriber_id=42, purpose="manage", now=NOW),
        "preview": signer.reader_token(subscriber_id=42, purpose="preview", now=NOW),
        "confirm": signer.reader_token(subscriber_id=42, purpose="confirm", nonce="n", now=NOW),
    }
    for kind, token in tokens.items():
        for purpose in ("manage", "preview", "confirm"):
            if purpose != kind:
                with pytest.raises(InvalidTokenError, match="bad signature"):
                    signer.verify_reader(token, purpose=purpose, now=NOW)
        if kind != "digest":
            with pytest.raises(InvalidTokenError, match="bad signature"):
                signer.verify_digest(token, use="manage", now=NOW)
            with pytest.raises(InvalidTokenError, match="bad signature"):
                signer.verify_legacy(token, action="manage", now=NOW)


# ---------------------------------------------------------------- bad tokens


def _tamper_payload(token: str) -> str:
    flipped = "A" if token[3] != "A" else "B"
    return f"{token[:3]}{flipped}{token[4:]}"


def _tamper_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


def _swap_payload(token: str) -> str:
    """Someone else's ids under this token's timestamp and signature."""
    other = digest(TokenSigner([KEY_A]), sid=8, did=1234)
    return other.split(".")[0] + token[token.index(".") :]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: "", "bad signature or malformed"),
        (lambda t: "garbage", "bad signature or malformed"),
        (lambda t: "a.b", "bad signature or malformed"),
        (lambda t: "a.b.c", "bad signature or malformed"),
        (lambda t: t + "x", "bad signature or malformed"),
        (lambda t: t[:-1], "bad signature or malformed"),
        (_tamper_payload, "bad signature or malformed"),
        (_tamper_signature, "bad signature or malformed"),
        (_swap_payload, "bad signature or malformed"),
        (lambda t: digest(TokenSigner([KEY_B])), "bad signature or malformed"),
        (lambda t: digest(TokenSigner([KEY_A]), now=NOW - timedelta(days=400)), "expired"),
    ],
    ids=[
        "empty",
        "garbage",
        "two-parts",
        "three-parts",
        "appended",
        "truncated",
        "tampered-payload",
        "tampered-signature",
        "swapped-payload",
        "forged-other-key",
        "expired",
    ],
)
def test_bad_tokens_are_rejected(mangle: Callable[[str], str], message: str) -> None:
    signer = TokenSigner([KEY_A])
    with pytest.raises(InvalidTokenError, match=message) as info:
        signer.verify_digest(mangle(digest(signer)), use="unsubscribe", now=NOW)
    assert isinstance(info.value, PaperpostError)


@pytest.mark.parametrize(
    "payload",
    [{"s": 1, "d": 2}, [1], [1, 2, 3], [0, 2], [-1, 2], [True, 2], [1, "2"], [1.0, 2], None],
    ids=["object", "one", "three", "zero", "negative", "bool", "text", "float", "null"],
)
def test_validly_signed_but_malformed_payloads_are_rejected(payload: object) -> None:
    """Only a key holder could make these; still, nothing half-valid gets through."""
    plain = URLSafeTimedSerializer(KEY_A, salt="paperpost.digest.v2", signer_kwargs=SHA256)
    token = plain.dumps(payload)
    assert isinstance(token, str)
    with pytest.raises(InvalidTokenError, match="payload"):
        TokenSigner([KEY_A]).verify_digest(token, use="feedback", now=datetime.now(UTC))


@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw-_0z."))
def test_no_single_character_change_alters_the_claims(position: int, replacement: str) -> None:
    signer = TokenSigner([KEY_A])
    token = digest(signer)
    i = position % len(token)
    mutated = token[:i] + replacement + token[i + 1 :]
    try:
        claims = signer.verify_digest(mutated, use="feedback", now=NOW)
    except InvalidTokenError:
        return
    # Base64 leaves a few unused bits in the last character: equal bytes, equal claims.
    assert claims == signer.verify_digest(token, use="feedback", now=NOW)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.digest_token(subscriber_id=0, delivery_id=1, now=NOW), "positive integer"),
        (lambda s: s.digest_token(subscriber_id=1, delivery_id=True, now=NOW), "positive integer"),
        (
            lambda s: s.digest_token(subscriber_id=1, delivery_id=1, now=NOW.replace(tzinfo=None)),
            "timezone-aware",
        ),
        (lambda s: s.reader_token(subscriber_id=1, purpose="delete", now=NOW), "unknown token"),
        (lambda s: s.reader_token(subscriber_id=1, purpose="confirm", now=NOW), "nonce"),
        (
            lambda s: s.reader_token(subscriber_id=1, purpose="manage", nonce="n", now=NOW),
            "nonce",
        ),
        (lambda s: s.verify_digest("x", use="delete", now=NOW), "unknown digest link use"),
    ],
    ids=["zero-id", "bool-id", "naive-now", "unknown-purpose", "confirm-no-nonce", "manage-nonce",
         "unknown-use"],
)  # fmt: skip
def test_bad_requests_are_programming_errors(
    call: Callable[[TokenSigner], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(TokenSigner([KEY_A]))


@pytest.mark.parametrize(
    ("keys", "message"),
    [([], "at least one non-empty"), (["k", ""], "at least one non-empty")],
    ids=["no-keys", "empty-key"],
)
def test_signer_needs_keys(keys: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenSigner(keys)


def test_a_single_string_is_not_a_key_list() -> None:
    with pytest.raises(TypeError, match="not one string"):
        TokenSigner(KEY_A)


# ---------------------------------------------------------------- old links (v1)


def test_an_old_link_verifies_until_its_own_expiry() -> None:
    signer = TokenSigner([KEY_B, KEY_A])  # rotated since: the old key still verifies
    expires = NOW + timedelta(days=30)
    token = v1("more", expires=expires, paper="2305.18290")
    claims = signer.verify_legacy(
        token, action=("more", "less"), now=expires - timedelta(seconds=1)
    )
    assert claims == LegacyClaims("ada@lab.example", "more", "2305.18290", expires)
    with pytest.raises(InvalidTokenError, match="token expired at"):
        signer.verify_legacy(token, action="more", now=expires)
    with pytest.raises(InvalidTokenError, match="token is for 'more'"):
        signer.verify_legacy(token, action="unsubscribe", now=NOW)
    with pytest.raises(InvalidTokenError, match="bad signature"):
        TokenSigner([KEY_B]).verify_legacy(token, action="more", now=NOW)  # old key removed


def test_an_old_compressed_link_still_verifies() -> None:
    long_name = "x" * 200 + "@lab.example"  # repetitive enough for zlib to win
    token = v1_token({"s": long_name, "a": "unsubscribe", "e": 2_000_000_000})
    assert token.startswith(".")
    claims = TokenSigner([KEY_A]).verify_legacy(token, action="unsubscribe", now=NOW)
    assert claims.subscriber == long_name


def test_a_new_token_is_no_old_one_and_an_old_one_no_new_one() -> None:
    signer = TokenSigner([KEY_A])
    old = v1("unsubscribe", expires=NOW + timedelta(days=1))
    with pytest.raises(InvalidTokenError, match="bad signature"):
        signer.verify_digest(old, use="unsubscribe", now=NOW)
    with pytest.raises(InvalidTokenError, match="bad signature"):
        signer.verify_legacy(digest(signer), action="unsubscribe", now=NOW)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["s", "a"], "payload is not an object"),
        ({"a": "unsubscribe", "e": 2_000_000_000}, "payload has no subscriber"),
        ({"s": "ada@lab.example", "a": "delete", "e": 2_000_000_000}, "unknown action 'delete'"),
        ({"s": "ada@lab.example", "a": "unsubscribe"}, "payload has no expiry"),
        ({"s": "ada@lab.example", "a": "unsubscribe", "e": True}, "payload has no expiry"),
        (
            {"s": "ada@lab.example", "a": "more", "e": 2_000_000_000, "p": 7},
            "paper is not a string",
        ),
        ({"s": "ada@lab.example", "a": "unsubscribe", "e": 10**20}, "expiry is out of range"),
    ],
    ids=[
        "list",
        "no-subscriber",
        "unknown-action",
        "no-expiry",
        "bool-expiry",
        "int-paper",
        "huge-expiry",
    ],
)
def test_validly_signed_but_malformed_old_payloads_are_rejected(
    payload: object, message: str
) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        TokenSigner([KEY_A]).verify_legacy(
            v1_token(payload), action=("unsubscribe", "more"), now=NOW
        )
