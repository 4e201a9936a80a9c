"""The header safety function and the header encoders (pure)."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Config, load_config
from pipeline.domain import MessageHeaders
from pipeline.errors import ConfigError, HeaderInjectionError
from pipeline.mail import make_message_id, safe_header_value
from pipeline.mail.headers import (
    ascii_addr_spec,
    encode_address,
    encode_phrase,
    encode_unstructured,
    format_date,
    safe_header_url,
)

UNSAFE = [
    ("cr", "Title\rBcc: evil@example.com", "U\\+000D"),
    ("lf", "Title\nBcc: evil@example.com", "U\\+000A"),
    ("crlf", "Title\r\nBcc: evil@example.com", "U\\+000D"),
    ("tab", "a\tb", "U\\+0009"),
    ("nul", "a\x00b", "U\\+0000"),
    ("bell", "a\x07b", "U\\+0007"),
    ("del", "a\x7fb", "U\\+007F"),
    ("nel", "a\x85b", "U\\+0085"),
    ("c1", "a\x9bb", "U\\+009B"),
    ("line-separator", "a\u2028b", "U\\+2028"),
    ("paragraph-separator", "a\u2029b", "U\\+2029"),
    ("encoded-word-b", "=?utf-8?b?QmNjOiBldmls?=", "encoded-word"),
    ("encoded-word-q", "hi =?UTF-8?Q?=0D=0ABcc:_x?= there", "encoded-word"),
    ("encoded-word-odd", "=?x?=", "encoded-word"),
]


@pytest.mark.parametrize(
    ("value", "match"), [(v, m) for _, v, m in UNSAFE], ids=[i for i, _, _ in UNSAFE]
)
def test_safe_header_value_refuses(value: str, match: str) -> None:
    with pytest.raises(HeaderInjectionError, match=match):
        safe_header_value(value, field="Subject")


def test_safe_header_value_names_the_field() -> None:
    with pytest.raises(HeaderInjectionError, match=r"^header To: "):
        safe_header_value("x\ny", field="To")


SAFE = [
    ("ascii", "Paperpost — 12 new papers"),
    ("unicode", "Débruitage Ω ▲ 日本語 😀"),
    ("question-equals-apart", "Is P =? NP"),
    ("equals-question", "a=?b"),
    ("empty", ""),
    ("html", "<script>alert(1)</script>"),
]


@pytest.mark.parametrize("value", [v for _, v in SAFE], ids=[i for i, _ in SAFE])
def test_safe_header_value_passes_ordinary_text(value: str) -> None:
    assert safe_header_value(value, field="Subject") is value


@given(st.text().map(lambda t: " ".join(t.split())))
def test_every_collapsed_value_is_refused_or_round_trips_exactly(value: str) -> None:
    try:
        encoded = encode_unstructured(value, field="Subject")
    except HeaderInjectionError:
        return
    raw = f"Subject: {encoded}\r\n\r\n".encode("ascii")
    longest_word = max((len(w) for w in value.split(" ")), default=0)
    if value.isascii() and longest_word < 60:
        assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert list(parsed.keys()) == ["Subject"]
    assert str(parsed["Subject"]) == value


SUBJECTS = [
    ("short-ascii", "Paperpost: 3 new papers"),
    ("long-ascii", "Paperpost: 12 new papers for Monday 23 November 2026: " + "word " * 30),
    ("non-ascii", "Paperpost — 12 new papers: Débruitage Ω-scale 日本語 study"),
    ("long-non-ascii", "Ω" * 200),
    ("emoji-boundaries", "😀" * 40),
]


@pytest.mark.parametrize("value", [v for _, v in SUBJECTS], ids=[i for i, _ in SUBJECTS])
def test_subject_round_trips_with_short_lines(value: str) -> None:
    value = value.strip()
    encoded = encode_unstructured(value, field="Subject")
    raw = f"Subject: {encoded}\r\n\r\n".encode("ascii")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["Subject"]) == value


PHRASES = [
    ("atom", "Ada Lovelace", "Ada Lovelace"),
    ("specials-quoted", "Lovelace, Ada (Countess)", '"Lovelace, Ada (Countess)"'),
    ("quotes-escaped", 'Ada "the first" L\\', '"Ada \\"the first\\" L\\\\"'),
    ("non-ascii", "Ádá", "=?utf-8?b?w4Fkw6E=?="),
]


@pytest.mark.parametrize(
    ("name", "expected"), [(n, e) for _, n, e in PHRASES], ids=[i for i, _, _ in PHRASES]
)
def test_display_names_are_encoded(name: str, expected: str) -> None:
    assert encode_phrase(name, field="To") == expected
    header = f"To: {encode_address('ada@lab.example', name, field='To')}\r\n\r\n"
    parsed = email.message_from_bytes(header.encode("ascii"), policy=email.policy.default)
    address = parsed["To"].addresses[0]
    assert (address.display_name, address.addr_spec) == (name, "ada@lab.example")


ADDRESSES = [
    ("plain", "ada@lab.example", "ada@lab.example"),
    ("upper-domain", "ada@LAB.Example", "ada@lab.example"),
    ("idn", "ada@bücher.example", "ada@xn--bcher-kva.example"),
    ("idna2008-sharp-s", "ada@straße.de", "ada@xn--strae-oqa.de"),
]


@pytest.mark.parametrize(
    ("addr", "expected"), [(a, e) for _, a, e in ADDRESSES], ids=[i for i, _, _ in ADDRESSES]
)
def test_addresses_use_punycode_domains(addr: str, expected: str) -> None:
    assert ascii_addr_spec(addr, field="To") == expected


BAD_ADDRESSES = [
    ("no-at", "ada.lab.example", "is not an address"),
    ("non-ascii-local", "ádá@lab.example", "SMTPUTF8"),
    ("space-local", "a da@lab.example", "dot-atom"),
    ("bad-domain", "ada@-lab.example", "not a host name"),
    ("newline", "ada@lab.example\r\nBcc: x@y", "U\\+000D"),
    ("angle", "ada@lab.example>", "not a host name"),
]


@pytest.mark.parametrize(
    ("addr", "match"), [(a, m) for _, a, m in BAD_ADDRESSES], ids=[i for i, _, _ in BAD_ADDRESSES]
)
def test_bad_addresses_are_refused(addr: str, match: str) -> None:
    with pytest.raises(HeaderInjectionError, match=match):
        ascii_addr_spec(addr, field="To")


URLS = [
    ("https-ok", "https://digest.lab.example/u/abc", ("https",), None),
    ("http-refused", "http://digest.lab.example/u/abc", ("https",), "must use https"),
    ("space", "https://digest.lab.example/u/a b", ("https",), "percent-encoded"),
    ("angle", "https://digest.lab.example/u/a>b", ("https",), "percent-encoded"),
    ("non-ascii", "https://digest.lab.example/ü", ("https",), "percent-encoded"),
    ("mailto-ok", "mailto:unsubscribe@lab.example?subject=unsubscribe", ("mailto",), None),
    ("javascript", "javascript:alert(1)", ("https",), "must use https"),
]


@pytest.mark.parametrize(
    ("url", "schemes", "match"), [(u, s, m) for _, u, s, m in URLS], ids=[i for i, _, _, _ in URLS]
)
def test_header_urls(url: str, schemes: tuple[str, ...], match: str | None) -> None:
    if match is None:
        assert safe_header_url(url, field="List-Unsubscribe", schemes=schemes) == url
    else:
        with pytest.raises(HeaderInjectionError, match=match):
            safe_header_url(url, field="List-Unsubscribe", schemes=schemes)


def test_message_id_is_deterministic_per_key_and_uses_punycode() -> None:
    first = make_message_id("sub-1/2026-11-23", "lab.example")
    assert first == make_message_id("sub-1/2026-11-23", "lab.example")
    assert first != make_message_id("sub-1/2026-11-24", "lab.example")
    assert first.startswith("<") and first.endswith(".paperpost@lab.example>")
    assert make_message_id("k", "bücher.example").endswith("@xn--bcher-kva.example>")


def test_date_is_utc_and_naive_dates_are_refused() -> None:
    paris = timezone(timedelta(hours=1))
    assert (
        format_date(datetime(2026, 11, 23, 9, 0, tzinfo=paris)) == "Mon, 23 Nov 2026 08:00:00 +0000"
    )
    assert (
        format_date(datetime(2026, 11, 23, 8, 0, tzinfo=UTC)) == "Mon, 23 Nov 2026 08:00:00 +0000"
    )
    with pytest.raises(ValueError, match="no time zone"):
        format_date(datetime(2026, 11, 23, 8, 0))


# -- what `check` (load_config) enforces for headers ------------------------------------
CONFIG = """\
[mail]
from = "Digest <digest@lab.example>"
{mail}
[web]
base_url = "{base_url}"
secret_env = "PP_SECRET"
{web}
[[subscribers]]
email = "{email}"
"""
ENV = {"PP_SECRET": "a-long-enough-secret-value"}


def config_text(
    *, base_url: str = "https://digest.lab.example", web: str = "", mail: str = "", **more: str
) -> str:
    return CONFIG.format(
        base_url=base_url, web=web, mail=mail, email=more.get("email", "ada@lab.example")
    )


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "paperpost.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=ENV)


def test_plain_http_links_are_refused_and_the_loss_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config_text(base_url="http://127.0.0.1:8025"))
    [problem] = info.value.problems
    assert "web: base_url 'http://127.0.0.1:8025' is not https://" in problem
    assert "one-click List-Unsubscribe-Post" in problem
    assert "allow_insecure_links = true" in problem


def test_allow_insecure_links_keeps_the_mailto_only(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        config_text(base_url="http://127.0.0.1:8025", web="allow_insecure_links = true\n"),
    )
    assert config.file.web.base_url == "http://127.0.0.1:8025"
    headers = header_set(config)
    assert headers.unsubscribe_url is None  # RFC 8058 one-click needs https
    assert headers.unsubscribe_mailto == "mailto:unsubscribe@lab.example?subject=unsubscribe"


def test_list_unsubscribe_always_has_the_https_url_and_a_mailto(tmp_path: Path) -> None:
    derived = header_set(load(tmp_path, config_text()))
    assert derived.unsubscribe_url is not None
    assert derived.unsubscribe_url.startswith("https://digest.lab.example/unsubscribe/")
    assert derived.unsubscribe_mailto == "mailto:unsubscribe@lab.example?subject=unsubscribe"
    configured = header_set(
        load(tmp_path, config_text(mail='unsubscribe_mailto = "leave@lists.lab.example"\n'))
    )
    assert configured.unsubscribe_mailto == "mailto:leave@lists.lab.example?subject=unsubscribe"


def test_a_local_part_over_64_octets_is_refused_at_load(tmp_path: Path) -> None:
    long_local = "a" * 65
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config_text(email=f"{long_local}@lab.example"))
    [problem] = info.value.problems
    assert re.search(r"paperpost\.toml:\d+: subscribers\[0\]\.email: ", problem)
    assert f"subscriber '{long_local}@lab.example'" in problem
    assert "65 octets; RFC 5321 allows at most 64" in problem
    assert load(tmp_path, config_text(email=f"{'a' * 64}@lab.example")).subscribers()


def header_set(config: Config) -> MessageHeaders:
    from pipeline.cycle.compose import make_signer
    from pipeline.cycle.digest import build_digest, message_headers
    from pipeline.domain import Schedule
    from pipeline.store import Delivery

    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    schedule = Schedule("daily", now.time(), "UTC")
    delivery = Delivery(
        id=1,
        subscriber_id=1,
        email="ada@lab.example",
        name="Ada",
        period_key="2026-11-23",
        status="claimed",
        attempts=0,
        message_id=make_message_id("x", "lab.example"),
        window_start=now,
        window_end=now,
        created_at=now,
        items=(),
        schedule=schedule,
    )
    digest = build_digest(config, make_signer(config), delivery, schedule, now=now)
    return message_headers(config, delivery, digest, "Subject", now=now)
