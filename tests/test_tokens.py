"""Signed link tokens: round trip, rotation, and every way a token can be bad."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from pipeline.errors import PaperpostError
from pipeline.web.tokens import (
    _HEADS_KEPT,
    ACTIONS,
    InvalidTokenError,
    TokenClaims,
    TokenSigner,
    _UncompressedSerializer,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KEY_A = "a-very-secret-key-number-one"
KEY_B = "another-secret-key-number-two"


def test_round_trip_carries_subscriber_action_paper_and_expiry() -> None:
    signer = TokenSigner([KEY_A])
    token = signer.sign(subscriber="ada@lab.example", action="more", paper="2305.18290", now=NOW)
    claims = signer.verify(token, action=("more", "less"), now=NOW)
    assert claims == TokenClaims(
        subscriber="ada@lab.example",
        action="more",
        paper="2305.18290",
        expires_at=NOW + timedelta(days=90),
    )
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe


@pytest.mark.parametrize(
    ("action", "lifetime"),
    [
        ("unsubscribe", timedelta(days=366)),
        ("more", timedelta(days=90)),
        ("less", timedelta(days=90)),
        ("preview", timedelta(days=90)),
    ],
    ids=["unsubscribe-a-year", "more", "less", "preview"],
)
def test_lifetimes(action: str, lifetime: timedelta) -> None:
    signer = TokenSigner([KEY_A])
    paper = "2305.18290" if action in ("more", "less") else None
    token = signer.sign(subscriber="ada@lab.example", action=action, paper=paper, now=NOW)
    last_valid = NOW + lifetime - timedelta(seconds=1)
    assert signer.verify(token, action=action, now=last_valid).action == action
    with pytest.raises(InvalidTokenError, match="token expired at"):
        signer.verify(token, action=action, now=NOW + lifetime)


def test_key_rotation_new_key_signs_old_key_still_verifies_until_removed() -> None:
    old = TokenSigner([KEY_A])
    rotated = TokenSigner([KEY_B, KEY_A])
    old_token = old.sign(subscriber="ada@lab.example", action="unsubscribe", now=NOW)
    new_token = rotated.sign(subscriber="ada@lab.example", action="unsubscribe", now=NOW)
    assert rotated.verify(old_token, action="unsubscribe", now=NOW).subscriber == "ada@lab.example"
    assert TokenSigner([KEY_B]).verify(new_token, action="unsubscribe", now=NOW)
    with pytest.raises(InvalidTokenError, match="bad signature"):
        old.verify(new_token, action="unsubscribe", now=NOW)  # signed with the new key
    with pytest.raises(InvalidTokenError, match="bad signature"):
        TokenSigner([KEY_B]).verify(old_token, action="unsubscribe", now=NOW)  # old key removed


def _tamper_payload(token: str) -> str:
    payload, _, signature = token.rpartition(".")
    flipped = "A" if payload[3] != "A" else "B"
    return f"{payload[:3]}{flipped}{payload[4:]}.{signature}"


def _tamper_signature(token: str) -> str:
    payload, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{payload}.{flipped}{signature[1:]}"


def _swap_payload(token: str) -> str:
    """Someone else's payload under Ada's signature."""
    other = TokenSigner([KEY_A]).sign(subscriber="eve@evil.example", action="unsubscribe", now=NOW)
    return f"{other.rpartition('.')[0]}.{token.rpartition('.')[2]}"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: "", "bad signature or malformed"),
        (lambda t: "garbage", "bad signature or malformed"),
        (lambda t: "a.b", "bad signature or malformed"),
        (lambda t: t + "x", "bad signature or malformed"),
        (lambda t: t[:-1], "bad signature or malformed"),
        (_tamper_payload, "bad signature or malformed"),
        (_tamper_signature, "bad signature or malformed"),
        (_swap_payload, "bad signature or malformed"),
        (
            lambda t: TokenSigner([KEY_B]).sign(
                subscriber="ada@lab.example", action="unsubscribe", now=NOW
            ),
            "bad signature or malformed",
        ),
        (
            lambda t: TokenSigner([KEY_A]).sign(
                subscriber="ada@lab.example", action="more", paper="1", now=NOW
            ),
            "token is for 'more'",
        ),
        (
            lambda t: TokenSigner([KEY_A]).sign(
                subscriber="ada@lab.example", action="unsubscribe", now=NOW - timedelta(days=400)
            ),
            "token expired",
        ),
    ],
    ids=[
        "empty",
        "garbage",
        "two-parts",
        "appended",
        "truncated",
        "tampered-payload",
        "tampered-signature",
        "swapped-payload",
        "forged-other-key",
        "wrong-purpose",
        "expired",
    ],
)
def test_bad_tokens_are_rejected(mangle: Callable[[str], str], message: str) -> None:
    signer = TokenSigner([KEY_A])
    good = signer.sign(subscriber="ada@lab.example", action="unsubscribe", now=NOW)
    with pytest.raises(InvalidTokenError, match=message) as info:
        signer.verify(mangle(good), action="unsubscribe", now=NOW)
    assert isinstance(info.value, PaperpostError)


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
def test_validly_signed_but_malformed_payloads_are_rejected(payload: object, message: str) -> None:
    """Only a key holder could make these; still, nothing half-valid gets through."""
    raw = URLSafeSerializer(
        KEY_A, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
    )
    token = raw.dumps(payload)
    assert isinstance(token, str)
    with pytest.raises(InvalidTokenError, match=message):
        TokenSigner([KEY_A]).verify(token, action=("unsubscribe", "more"), now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"subscriber": "a@b.example", "action": "delete"}, ValueError, "unknown token action"),
        ({"subscriber": "a@b.example", "action": "more"}, ValueError, "needs the paper"),
    ],
    ids=["unknown-action", "feedback-without-paper"],
)
def test_sign_rejects_bad_requests(
    kwargs: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        TokenSigner([KEY_A]).sign(now=NOW, **kwargs)


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


@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw-_0z."))
def test_no_single_character_change_alters_the_claims(position: int, replacement: str) -> None:
    signer = TokenSigner([KEY_A])
    token = signer.sign(subscriber="ada@lab.example", action="more", paper="2305.18290", now=NOW)
    i = position % len(token)
    mutated = token[:i] + replacement + token[i + 1 :]
    try:
        claims = signer.verify(mutated, action=("more", "less"), now=NOW)
    except InvalidTokenError:
        return
    # Base64 leaves a few unused bits in the last character: equal bytes, equal claims.
    assert claims == signer.verify(token, action="more", now=NOW)


@given(
    subscriber=st.emails(),
    paper=st.one_of(st.none(), st.from_regex(r"\d{4}\.\d{4,5}", fullmatch=True)),
)
def test_tokens_are_those_of_the_plain_serializer_and_compressed_ones_still_verify(
    subscriber: str, paper: str | None
) -> None:
    """Signing skips zlib: for link-sized payloads the tokens are byte for byte what
    itsdangerous' URLSafeSerializer makes, and a compressed token still verifies."""
    action = "more" if paper else "unsubscribe"
    raw = URLSafeSerializer(
        KEY_A, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
    )
    signer = TokenSigner([KEY_A])
    token = signer.sign(subscriber=subscriber, action=action, paper=paper, now=NOW)
    payload = raw.loads(token)
    reference = raw.dumps(payload)
    if not reference.startswith("."):  # zlib did not shorten it: the very same token
        assert token == reference
    long_name = "x" * 200 + "@lab.example"  # repetitive enough for zlib to win
    compressed = raw.dumps({"s": long_name, "a": "unsubscribe", "e": 2_000_000_000})
    assert compressed.startswith(".")
    assert signer.verify(compressed, action="unsubscribe", now=NOW).subscriber == long_name


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1)


@given(
    subscriber=_TEXT,
    paper=st.one_of(st.none(), _TEXT),
    keys=st.lists(_TEXT, min_size=1, max_size=3),
)
def test_prepared_signing_makes_the_very_tokens_itsdangerous_makes(
    subscriber: str, paper: str | None, keys: list[str]
) -> None:
    """``sign`` reuses one keyed HMAC instead of itsdangerous' per-token Signer: for any
    text and any key list, the token is the serializer's own ``dumps`` of the payload (so
    links already out there keep verifying), and it verifies with the same key list."""
    action = "more" if paper else "unsubscribe"
    signer = TokenSigner(keys)
    token = signer.sign(subscriber=subscriber, action=action, paper=paper, now=NOW)
    reference = _UncompressedSerializer(
        list(reversed(keys)),
        salt="paperpost.link.v1",
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    assert token == reference.dumps(reference.loads(token))
    claims = signer.verify(token, action=action, now=NOW)
    assert (claims.subscriber, claims.paper) == (subscriber, paper)


def _reference(keys: list[str]) -> _UncompressedSerializer:
    return _UncompressedSerializer(
        list(reversed(keys)),
        salt="paperpost.link.v1",
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def _payload(subscriber: str, action: str, paper: str | None, now: datetime) -> dict[str, Any]:
    lifetime = timedelta(days=366 if action in ("unsubscribe", "manage") else 90)
    payload: dict[str, Any] = {
        "s": subscriber,
        "a": action,
        "e": int((now + lifetime).timestamp()),
    }
    if paper is not None:
        payload["p"] = paper
    return payload


def test_digests_for_many_readers_are_signed_as_dumps_signs_them() -> None:
    """The pattern ``sign`` keeps JSON heads for: per reader a "more" and a "less" link
    per paper, then the unsubscribe link; then the next reader, more of them than the
    signer keeps heads for, and the first readers again at a later ``now``."""
    keys = [KEY_B, KEY_A]
    signer, reference = TokenSigner(keys), _reference(keys)
    readers = [f"reader{i}@lab.example" for i in range(2 * _HEADS_KEPT)]
    papers = [f"2511.{i:05d}" for i in range(20)]
    for now in (NOW, NOW + timedelta(hours=1)):
        for reader in readers:
            for paper in papers:
                for action in ("more", "less"):
                    token = signer.sign(subscriber=reader, action=action, paper=paper, now=now)
                    assert token == reference.dumps(_payload(reader, action, paper, now))
            token = signer.sign(subscriber=reader, action="unsubscribe", now=now)
            assert token == reference.dumps(_payload(reader, "unsubscribe", None, now))
            assert len(signer._heads) <= _HEADS_KEPT


# Quotes, backslashes, control characters, DEL, a JavaScript line separator, non-ASCII
# and astral characters; and texts with a lone surrogate, which UTF-8 cannot encode.
# (Lists joined, not ``st.text``, which would rarely pick these few among all characters.)
_AWKWARD = '"\\\x00\x1f\n\x7f\u2028\u00e9\U0001f600'
_CHARS = st.one_of(st.characters(), st.sampled_from(_AWKWARD))
_LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
_ANY_TEXT = st.one_of(
    st.lists(_CHARS, min_size=1, max_size=12).map("".join),
    st.tuples(
        st.lists(_CHARS, max_size=6).map("".join),
        _LONE_SURROGATES,
        st.lists(_CHARS, max_size=6).map("".join),
    ).map("".join),
)
_FIXED_OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
)
_NOWS = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.just(UTC), _FIXED_OFFSETS, st.timezones()),
)
# One call: indexes into the drawn subscribers, papers (0: no paper) and nows.
_CALLS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(ACTIONS), st.integers(0, 4), st.integers(0, 2)),
    min_size=1,
    max_size=60,
)


@given(
    subscribers=st.lists(_ANY_TEXT, min_size=1, max_size=4),
    papers=st.lists(_ANY_TEXT, min_size=1, max_size=4),
    nows=st.lists(_NOWS, min_size=1, max_size=3),
    keys=st.lists(_TEXT, min_size=1, max_size=3),
    calls=_CALLS,
)
def test_any_sequence_of_calls_signs_exactly_what_dumps_signs(
    subscribers: list[str],
    papers: list[str],
    nows: list[datetime],
    keys: list[str],
    calls: list[tuple[int, str, int, int]],
) -> None:
    """One signer, calls in any order: the same reader with other papers, other readers,
    actions and ``now``s in between. Every token is byte for byte the reference ``dumps``
    of its payload and verifies; where ``dumps`` raises (a lone surrogate), ``sign``
    raises the same error; and the signer never keeps more than a few JSON heads."""
    signer, reference = TokenSigner(keys), _reference(keys)
    for who, action, which_paper, when in calls:
        subscriber, now = subscribers[who % len(subscribers)], nows[when % len(nows)]
        paper = papers[(which_paper - 1) % len(papers)] if which_paper else None
        if action in ("more", "less") and paper is None:
            with pytest.raises(ValueError, match="needs the paper"):
                signer.sign(subscriber=subscriber, action=action, paper=paper, now=now)
            continue
        try:
            expected = reference.dumps(_payload(subscriber, action, paper, now))
        except UnicodeEncodeError as exc:
            with pytest.raises(UnicodeEncodeError, match=re.escape(str(exc))):
                signer.sign(subscriber=subscriber, action=action, paper=paper, now=now)
        else:
            token = signer.sign(subscriber=subscriber, action=action, paper=paper, now=now)
            assert token == expected
            claims = signer.verify(token, action=action, now=now)
            assert (claims.subscriber, claims.paper) == (subscriber, paper)
        assert len(signer._heads) <= _HEADS_KEPT
