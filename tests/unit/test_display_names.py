"""Display names of any length and content: folded when building, capped at load.

A 1,200-character name once gave a 1,214-octet ``To:`` line that the server refused,
failing that reader's digest for good. Now the builder folds every name (atoms or a
quoted-string at its spaces, encoded-words otherwise) so no header line passes 78
octets, and ``load_config`` refuses names over ``MAX_DISPLAY_NAME`` characters with the
subscriber named. The oracle is the ``email`` package's parser under ``policy.default``.
"""

from __future__ import annotations

import dataclasses
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32, default
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.config.models import MAX_DISPLAY_NAME
from pipeline.domain import MessageHeaders, RenderedDigest
from pipeline.errors import ConfigError, HeaderInjectionError
from pipeline.mail import build_message, make_message_id, safe_header_value
from tests.factories import MONDAY_7AM as WHEN

RENDERED = RenderedDigest(subject="Paperpost — 3 new papers", html="<p>hi</p>", text="hi")
TO = "reader.name+tag@lab.example"
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]|=\\?.*\\?=", re.DOTALL)


def headers(name: str | None, to_addr: str = TO) -> MessageHeaders:
    return MessageHeaders(
        from_addr="Paperpost <digest@lab.example>",
        to_addr=to_addr,
        to_name=name,
        subject=RENDERED.subject,
        message_id=make_message_id("names", "lab.example"),
        date=WHEN,
        list_id="Paperpost <paperpost.lab.example>",
        unsubscribe_url="https://digest.lab.example/u/tok",
        unsubscribe_mailto="mailto:unsubscribe@lab.example?subject=unsubscribe",
    )


def build_and_parse(name: str, to_addr: str = TO) -> tuple[bytes, EmailMessage]:
    data = build_message(headers(name, to_addr), RENDERED)
    message = BytesParser(policy=default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return data, message


def rfc2047_name(data: bytes) -> str:
    """The To display name decoded as RFC 2047 section 6.2 says: whitespace between two
    adjacent encoded-words is ignored. (Python 3.11's ``headerregistry`` keeps it inside
    an address's phrase and so reads one space per fold of a long encoded name; the
    legacy ``decode_header`` follows the RFC, as mail clients do.)"""
    raw = BytesParser(policy=compat32).parsebytes(data)["To"]
    assert isinstance(raw, str)
    phrase = re.sub(r"\r\n(?=[ \t])", "", raw).rsplit(" <", 1)[0]
    if not phrase.startswith("=?"):
        return phrase  # atoms or a quoted-string: policy.default reads those exactly
    return str(make_header(decode_header(phrase)))


def header_lines(data: bytes) -> list[bytes]:
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")


WORD = st.lists(
    st.sampled_from(
        [
            *"abcXYZ019 .,;:@<>()[]\"\\'!#$%&*+/=?^_`{|}~-",
            *(
                "é",
                "Ω",
                "日",
                "本",
                "😀",
                "👩\u200d🔬",
                "\u00a0",
                "\u200b",
                "\r",
                "\n",
                "\t",
                "\x00",
            ),
        ]
    ),
    max_size=40,
).map("".join)
NAMES = st.one_of(
    st.text(max_size=300),
    st.lists(WORD, max_size=40).map(" ".join),
    st.tuples(st.sampled_from('aZ.😀é"\\'), st.integers(60, 1300)).map(lambda t: t[0] * t[1]),
    st.lists(st.sampled_from(["Ada", "Lovelace", "Ω", '"q"', "a\\b", "x" * 90]), max_size=200).map(
        " ".join
    ),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(NAMES)
@example("A" * 1200)  # the reported case: one 1,200-character ASCII word
@example(" ".join(["Lovelace"] * 150))  # a 1,349-character ASCII phrase of atoms
@example('Ada "the first" Lovelace, Countess \\ of ' * 30)  # a long quoted-string
@example("Zoë Ω 😀 " * 200)
@example("x" * 70 + " " + "y" * 70)
@example("  leading and trailing  ")
def test_any_name_gives_short_lines_and_parses_back(name: str) -> None:
    if UNSAFE.search(name):
        # Line breaks, controls and encoded-words are refused (config check refuses them
        # first), never passed on.
        with pytest.raises(HeaderInjectionError):
            build_message(headers(name), RENDERED)
        return
    data, message = build_and_parse(name)
    assert max(len(line) for line in header_lines(data)) <= 78  # RFC 5322: 998 MUST, 78 SHOULD
    assert message.defects == []
    assert list(message.keys()).count("To") == 1
    [address] = message["To"].addresses
    assert address.addr_spec == TO
    if not data.split(b"\r\nTo: ", 1)[1].startswith(b"=?"):
        assert address.display_name == (name or "")
    else:
        assert rfc2047_name(data) == name
        # policy.default differs from the RFC only in whitespace (at the folds, and it
        # trims the decoded phrase)
        assert "".join(address.display_name.split()) == "".join(name.split())
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.parametrize("local", ["a" * 64, "a" * 40 + "." + "b" * 23])
def test_the_longest_local_part_gets_a_line_of_its_own(local: str) -> None:
    to_addr = f"{local}@{'sub.' * 20}lab.example"
    data, message = build_and_parse("A reader with a fairly long name indeed", to_addr)
    assert max(len(line) for line in header_lines(data)) <= 998
    assert message["To"].addresses[0].addr_spec == to_addr
    assert message["To"].addresses[0].display_name == "A reader with a fairly long name indeed"


def test_a_local_part_over_64_octets_is_refused_when_building() -> None:
    with pytest.raises(HeaderInjectionError, match="65 octets; RFC 5321 allows at most 64"):
        build_message(headers("Ada", "a" * 65 + "@lab.example"), RENDERED)


def test_short_ascii_names_stay_readable() -> None:
    data, _ = build_and_parse("Ada Lovelace")
    assert b"\r\nTo: Ada Lovelace <reader.name+tag@lab.example>\r\n" in data
    data, _ = build_and_parse("Lovelace, Ada")
    assert b'\r\nTo: "Lovelace, Ada" <reader.name+tag@lab.example>\r\n' in data


def test_a_long_ascii_name_is_folded_not_encoded() -> None:
    name = " ".join(["Lovelace"] * 40)
    data, message = build_and_parse(name)
    to_lines = data.split(b"\r\nTo: ", 1)[1].split(b"\r\nSubject:", 1)[0].split(b"\r\n")
    assert len(to_lines) > 4
    assert all(line.startswith(b" ") for line in to_lines[1:])  # folded continuation lines
    assert b"=?utf-8?" not in data.split(b"\r\nSubject:", 1)[0]
    assert message["To"].addresses[0].display_name == name


# -- the cap at load -------------------------------------------------------------------
CONFIG = """\
[mail]
from = "Digest <digest@lab.example>"

[web]
base_url = "https://digest.lab.example"
secret_env = "PP_SECRET"

[[subscribers]]
email = "ada@lab.example"
name = "{name}"
"""
ENV = {"PP_SECRET": "a-long-enough-secret-value"}


def test_a_name_over_the_cap_is_refused_at_load_with_the_subscriber_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paperpost.toml"
    path.write_text(CONFIG.format(name="A" * 1200), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    [problem] = info.value.problems
    assert re.search(r"paperpost\.toml:\d+: subscribers\[0\]\.name: ", problem)
    assert (
        f"subscriber 'ada@lab.example': the name is 1200 characters; at most {MAX_DISPLAY_NAME}"
        in problem
    )


def test_a_name_at_the_cap_loads_and_builds(tmp_path: Path) -> None:
    name = ("Ω" * 9 + " ") * (MAX_DISPLAY_NAME // 10)
    name = name.strip()
    path = tmp_path / "paperpost.toml"
    path.write_text(CONFIG.format(name=name), encoding="utf-8")
    config = load_config(path, env=ENV)
    [subscriber] = config.subscribers()
    assert subscriber.name == name
    safe_header_value(name, field="To")
    data, message = build_and_parse(name, subscriber.email)
    assert max(len(line) for line in header_lines(data)) <= 78
    assert message["To"].addresses[0].addr_spec == "ada@lab.example"
    assert rfc2047_name(data) == name


def test_the_cap_applies_to_imported_readers(tmp_path: Path) -> None:
    from pipeline.config.readers import read_subscribers

    path = tmp_path / "readers.jsonl"
    path.write_text(
        '{"email": "ada@lab.example", "name": "' + "B" * (MAX_DISPLAY_NAME + 1) + '"}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=f"at most {MAX_DISPLAY_NAME} are allowed"):
        read_subscribers(path)


def test_dataclass_names_unchanged() -> None:
    # The builder never alters what it is given: the same headers build the same bytes.
    h = headers("Zoë " * 100)
    assert build_message(h, RENDERED) == build_message(dataclasses.replace(h), RENDERED)
