"""Message building: the one builder against the ``email`` parser as oracle, and header
injection.

Every test re-parses the exact bytes that would be sent (``email.parser`` under
``policy.default``) and checks the exact header set and the MIME structure (the
machine's Python has CVE-2024-6923, so the email package's own folding is not trusted
to stop injection: it only reads here).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from pipeline.domain import Digest, DigestItem, MessageHeaders, Paper, RenderedDigest
from pipeline.errors import HeaderInjectionError
from pipeline.mail import build_message, make_message_id
from pipeline.render import Renderer, sample_digest
from tests.factories import DIGEST_HEADERS
from tests.factories import MONDAY_7AM as WHEN

ALL_HEADERS = list(DIGEST_HEADERS)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def headers_for(
    digest: Digest, rendered: RenderedDigest, *, to_name: str | None = None, **changes: object
) -> MessageHeaders:
    headers = MessageHeaders(
        from_addr="Paperpost <digest@lab.example>",
        to_addr=digest.recipient_email,
        to_name=to_name if to_name is not None else digest.recipient_name,
        subject=rendered.subject,
        message_id=make_message_id(f"{digest.recipient_email}/{digest.period_key}", "lab.example"),
        date=WHEN,
        list_id="Paperpost digest <digest.lab.example>",
        unsubscribe_url="https://digest.lab.example/u/tok.en-1",
        unsubscribe_mailto="mailto:unsubscribe@lab.example?subject=unsubscribe",
    )
    return dataclasses.replace(headers, **changes)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    return message


def ascii_digest() -> Digest:
    paper = Paper(
        id="2106.09685",
        title="LoRA: Low-Rank Adaptation of Large Language Models",
        abstract="We propose Low-Rank Adaptation, or LoRA. It freezes the weights.",
        authors=("Edward J. Hu", "Yelong Shen"),
        categories=("cs.CL", "cs.LG"),
        url="https://arxiv.org/abs/2106.09685",
        announced=WHEN,
    )
    return Digest(
        recipient_email="bob@lab.example",
        recipient_name="Bob",
        period_key="2026-11-23",
        period_label="Monday 23 November 2026",
        generated_at=WHEN,
        items=(DigestItem(paper, 0.5, "matched cat:cs.CL"),),
        unsubscribe_url="https://digest.lab.example/u/bob",
    )


def non_ascii_digest() -> Digest:
    digest = sample_digest()
    return dataclasses.replace(
        digest, recipient_email="zoë@bücher.example", recipient_name="Zoë Ω, Jr."
    )


def test_non_ascii_local_part_is_refused(renderer: Renderer) -> None:
    digest = non_ascii_digest()
    with pytest.raises(HeaderInjectionError, match="SMTPUTF8"):
        build_message(headers_for(digest, renderer.render(digest)), renderer.render(digest))


DIGESTS = [
    ("ascii", ascii_digest, "bob@lab.example"),
    ("non-ascii", non_ascii_digest, "zoe@bücher.example"),
]


@pytest.mark.parametrize(
    ("make", "to_addr"), [(m, a) for _, m, a in DIGESTS], ids=[i for i, _, _ in DIGESTS]
)
def test_message_parses_back_to_its_structure(renderer: Renderer, make, to_addr: str) -> None:  # type: ignore[no-untyped-def]
    digest = make()
    rendered = renderer.render(digest)
    headers = headers_for(digest, rendered, to_addr=to_addr)
    message = parse(build_message(headers, rendered))

    assert list(message.keys()) == ALL_HEADERS
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_boundary() is not None
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["base64", "base64"]
    assert [list(p.keys()) for p in parts] == [["Content-Type", "Content-Transfer-Encoding"]] * 2
    assert all(p.defects == [] for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == rendered.text
    assert parts[1].get_content().replace("\r\n", "\n") == rendered.html
    assert message["Subject"] == rendered.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert message["From"].addresses[0].addr_spec == "digest@lab.example"
    assert message["From"].addresses[0].display_name == "Paperpost"
    assert message["To"].addresses[0].display_name == digest.recipient_name
    assert message["To"].addresses[0].domain.startswith(("lab.example", "xn--bcher-kva.example"))
    assert message["List-Id"] == "Paperpost digest <digest.lab.example>"


def test_body_line_endings_are_normalised(renderer: Renderer) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    mixed = dataclasses.replace(rendered, text="one\rtwo\r\nthree\nfour", html="<p>x</p>")
    parts = list(parse(build_message(headers_for(digest, mixed), mixed)).iter_parts())
    assert parts[0].get_content() == "one\r\ntwo\r\nthree\r\nfour\r\n"
    assert parts[1].get_content() == "<p>x</p>\r\n"


@pytest.mark.parametrize(
    ("make", "to_addr"), [(m, a) for _, m, a in DIGESTS], ids=[i for i, _, _ in DIGESTS]
)
def test_wire_format_limits(renderer: Renderer, make, to_addr: str) -> None:  # type: ignore[no-untyped-def]
    digest = make()
    rendered = renderer.render(digest)
    data = build_message(headers_for(digest, rendered, to_addr=to_addr), rendered)
    data.decode("ascii")  # 7-bit clean: no 8BITMIME or SMTPUTF8 needed
    assert b"\n" not in data.replace(b"\r\n", b"")
    head, _, body = data.partition(b"\r\n\r\n")
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def hostile_digest(title: str) -> Digest:
    paper = dataclasses.replace(ascii_digest().items[0].paper, title=title)
    return dataclasses.replace(ascii_digest(), items=(DigestItem(paper, 1.0, "x"),))


INJECTIONS_CLEANED = [
    ("crlf-bcc", "Nice paper\r\nBcc: victim@example.com"),
    ("lf-header", "Nice paper\nX-Injected: 1\n\nbody"),
    ("cr-only", "Nice paper\rBcc: victim@example.com"),
    ("unicode-line-separator", "Nice paper\u2028Bcc: victim@example.com"),
    ("tabs", "Nice\tpaper\x0bwith\x0cfeeds"),
]


@pytest.mark.parametrize(
    "title", [t for _, t in INJECTIONS_CLEANED], ids=[i for i, _ in INJECTIONS_CLEANED]
)
def test_titles_with_line_breaks_never_add_a_header(renderer: Renderer, title: str) -> None:
    # How the renderer cleans a title is its own business (tests/unit/test_render*.py); what
    # reaches the message must be one Subject line and nothing else.
    digest = hostile_digest(title)
    rendered = renderer.render(digest)
    message = parse(build_message(headers_for(digest, rendered), rendered))
    assert list(message.keys()) == ALL_HEADERS
    assert message["Subject"] == rendered.subject
    assert "Nice" in message["Subject"] and "Bcc" not in message
    assert not any(ch in message["Subject"] for ch in "\r\n\t\x0b\x0c\u2028")


INJECTIONS_REFUSED = [
    ("nul", "Nice\x00paper", "U\\+0000"),
    ("escape", "Nice\x1b[31mpaper", "U\\+001B"),
    ("encoded-word", "=?utf-8?q?Nice=0D=0ABcc=3A_victim=40example=2Ecom?=", "encoded-word"),
    ("encoded-word-inside", "A =?UTF-8?B?QmNjOiB4?= B", "encoded-word"),
]


@pytest.mark.parametrize(
    ("title", "match"),
    [(t, m) for _, t, m in INJECTIONS_REFUSED],
    ids=[i for i, _, _ in INJECTIONS_REFUSED],
)
def test_unfit_titles_never_break_the_message(renderer: Renderer, title: str, match: str) -> None:
    # The renderer either passes such a title over or cleans it; either way the digest
    # is built, with exactly the expected headers and no control character in them.
    hostile = hostile_digest(title)
    fine = dataclasses.replace(
        hostile.items[0], paper=dataclasses.replace(hostile.items[0].paper, title="Fine title")
    )
    for digest in (hostile, dataclasses.replace(hostile, items=(hostile.items[0], fine))):
        rendered = renderer.render(digest)
        message = parse(build_message(headers_for(digest, rendered), rendered))
        assert list(message.keys()) == ALL_HEADERS
        assert message["Subject"] == rendered.subject
        assert not any(ord(ch) < 32 or ch == "\x7f" for ch in message["Subject"])
        assert "=?" not in message["Subject"]


@pytest.mark.parametrize(
    ("title", "match"),
    [(t, m) for _, t, m in INJECTIONS_REFUSED],
    ids=[i for i, _, _ in INJECTIONS_REFUSED],
)
def test_unsafe_subjects_are_refused(renderer: Renderer, title: str, match: str) -> None:
    digest = hostile_digest(title)
    rendered = renderer.render(digest)
    with pytest.raises(HeaderInjectionError, match=match):
        build_message(headers_for(digest, rendered, subject=f"Paperpost: {title}"), rendered)


NAMES = [
    ("crlf", "Bob\r\nBcc: victim@example.com", "U\\+000D"),
    ("encoded-word", "=?utf-8?b?Qm9iDQpCY2M6IHg=?=", "encoded-word"),
    ("nul", "Bob\x00", "U\\+0000"),
]


@pytest.mark.parametrize(
    ("name", "match"), [(n, m) for _, n, m in NAMES], ids=[i for i, _, _ in NAMES]
)
def test_hostile_display_names_are_refused(renderer: Renderer, name: str, match: str) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    with pytest.raises(HeaderInjectionError, match=match):
        build_message(headers_for(digest, rendered, to_name=name), rendered)


def test_hostile_from_and_list_id_are_refused(renderer: Renderer) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    with pytest.raises(HeaderInjectionError, match="header From"):
        build_message(
            headers_for(digest, rendered, from_addr="X <a@b.example>\r\nBcc: c@d"), rendered
        )
    with pytest.raises(HeaderInjectionError, match="header List-Id"):
        build_message(headers_for(digest, rendered, list_id="x\n<y>"), rendered)
    with pytest.raises(HeaderInjectionError, match="must use https"):
        build_message(headers_for(digest, rendered, unsubscribe_url="http://x.example/u"), rendered)


OPTIONAL = [
    (
        "no-https",
        {"unsubscribe_url": None},
        ["List-Unsubscribe"],
        "<mailto:unsubscribe@lab.example?subject=unsubscribe>",
    ),
    (
        "no-mailto",
        {"unsubscribe_mailto": None},
        ["List-Unsubscribe", "List-Unsubscribe-Post"],
        "<https://digest.lab.example/u/tok.en-1>",
    ),
    ("neither", {"unsubscribe_url": None, "unsubscribe_mailto": None}, [], None),
]


@pytest.mark.parametrize(
    ("changes", "present", "value"),
    [(c, p, v) for _, c, p, v in OPTIONAL],
    ids=[i for i, _, _, _ in OPTIONAL],
)
def test_unsubscribe_headers_follow_what_is_configured(
    renderer: Renderer, changes: dict[str, object], present: list[str], value: str | None
) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    message = parse(build_message(headers_for(digest, rendered, **changes), rendered))
    unsubscribe_headers = [k for k in message if k.startswith("List-Unsubscribe")]
    assert unsubscribe_headers == present
    assert message.get("List-Unsubscribe") == value


def test_one_click_header_is_exact(renderer: Renderer) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    data = build_message(headers_for(digest, rendered), rendered)
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data
    message = parse(data)
    assert message["List-Unsubscribe"] == (
        "<https://digest.lab.example/u/tok.en-1>, "
        "<mailto:unsubscribe@lab.example?subject=unsubscribe>"
    )
    assert message["Message-ID"] == make_message_id("bob@lab.example/2026-11-23", "lab.example")
    assert message["Date"] == "Mon, 23 Nov 2026 07:00:00 +0000"


def test_same_inputs_give_the_same_bytes(renderer: Renderer) -> None:
    digest = ascii_digest()
    rendered = renderer.render(digest)
    headers = headers_for(digest, rendered)
    assert build_message(headers, rendered) == build_message(headers, rendered)
