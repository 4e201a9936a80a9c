"""Parsing the bounce mailbox's messages (samples written for these tests in the formats
of RFC 3464 and RFC 5965, tests/data/bounces/) and the VERP return path."""

from __future__ import annotations

import pytest

from pipeline.bounces.parse import MalformedReport, normal_address, parse_report
from pipeline.bounces.verp import VerpSigner
from tests.factories import BOUNCE_REPORTS as DATA

UNSUBSCRIBE = "unsubscribe@paperpost.example"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def verp() -> VerpSigner:
    return VerpSigner(["key-one-0123456789abcdef"], local="bounces", domain="paperpost.example")


def with_return_path(data: bytes, address: str) -> bytes:
    """The sample as it arrives when the digest left with ``address`` as its return path."""
    return data.replace(b"bounces@paperpost.example", address.encode("ascii"))


# -- VERP --------------------------------------------------------------------------------------
def test_verp_address_round_trips_and_is_safe_in_a_local_part(verp: VerpSigner) -> None:
    for delivery_id in (0, 1, 4_711, 2**40):
        address = verp.address(delivery_id)
        local, _, domain = address.rpartition("@")
        assert domain == "paperpost.example"
        assert local.startswith("bounces+") and len(local) <= 64
        assert set(local.removeprefix("bounces+")) <= set("0123456789abcdef")
        assert verp.delivery_for_address(address) == delivery_id
        # Some servers fold the case of local parts.
        assert verp.delivery_for_address(address.upper()) == delivery_id
    assert len(verp.token(4_711)) == 16  # 0x1267 and 12 signature digits


def test_verp_refuses_forged_tampered_and_foreign_tokens(verp: VerpSigner) -> None:
    address = verp.address(42)
    token = address.split("+")[1].split("@")[0]
    tampered = f"bounces+{int(token[:-12], 16) + 1:x}{token[-12:]}@paperpost.example"
    other_key = VerpSigner(["another-key-0123456789"], local="bounces", domain="paperpost.example")
    assert verp.delivery_for_address(tampered) is None
    assert verp.delivery_for_address(other_key.address(42)) is None
    assert verp.delivery_for_address(address.replace("paperpost.example", "evil.example")) is None
    assert verp.delivery_for_address(address.replace("bounces+", "other+")) is None
    assert verp.delivery_for_address("bounces@paperpost.example") is None
    assert verp.delivery_id("zz") is None


def test_verp_key_rotation_keeps_old_tokens_valid() -> None:
    old = VerpSigner(["old-key-0123456789abcdef"], local="b", domain="x.example")
    rotated = VerpSigner(
        ["new-key-0123456789abcdef", "old-key-0123456789abcdef"], local="b", domain="x.example"
    )
    assert rotated.delivery_for_address(old.address(7)) == 7
    assert rotated.address(7) != old.address(7)


def test_verp_local_part_is_checked() -> None:
    with pytest.raises(ValueError, match="VERP local part"):
        VerpSigner(["k" * 20], local="a+b", domain="x.example")


# -- DSNs ----------------------------------------------------------------------------------------
def test_hard_dsn_names_the_final_recipient() -> None:
    report = parse_report(sample("hard_dsn.eml"))
    assert report.kind == "dsn"
    assert report.report_id == "<20261123080112.4Lq9Xz1kQ2z9s@relay.paperpost.example>"
    [event] = report.events
    assert (event.kind, event.address, event.delivery_id) == ("hard", "ada@lab.example", None)
    assert event.detail.startswith("5.1.1 smtp; 550 5.1.1")
    assert report.date is not None and report.date.isoformat() == "2026-11-23T08:01:12+00:00"


def test_soft_dsn_is_a_soft_bounce() -> None:
    [event] = parse_report(sample("soft_dsn.eml")).events
    assert (event.kind, event.address) == ("soft", "grace@lab.example")
    assert "4.2.2" in event.detail


def test_delayed_dsn_is_not_a_bounce() -> None:
    report = parse_report(sample("delayed_dsn.eml"))
    assert report.kind == "delayed"
    assert report.events == ()


def test_a_valid_verp_token_names_the_digest(verp: VerpSigner) -> None:
    data = with_return_path(sample("hard_dsn.eml"), verp.address(1234))
    [event] = parse_report(data, verp=verp).events
    assert event.delivery_id == 1234
    assert event.address == "ada@lab.example"  # the fallback, should the row be gone


@pytest.mark.parametrize(
    "return_path",
    [
        "bounces+4d2000000000000@paperpost.example",  # a token that does not verify
        "bounces+@paperpost.example",  # an empty one
        "BOUNCES+nonsense@PaperPost.Example",  # not a token at all, case folded
    ],
)
def test_a_forged_verp_token_records_nothing(verp: VerpSigner, return_path: str) -> None:
    """Mail to one of our return paths must carry a token that verifies: falling back to
    the report's own Final-Recipient would let anyone suppress any reader."""
    report = parse_report(with_return_path(sample("hard_dsn.eml"), return_path), verp=verp)
    assert (report.kind, report.events) == ("unverified", ())


def test_a_report_to_the_bare_address_falls_back_unless_a_token_is_required(
    verp: VerpSigner,
) -> None:
    data = sample("hard_dsn.eml")  # to bounces@paperpost.example: a server that lost the token
    [event] = parse_report(data, verp=verp).events
    assert (event.delivery_id, event.address) == (None, "ada@lab.example")
    assert parse_report(data, verp=verp, require_token=True).kind == "unverified"
    signed = with_return_path(data, verp.address(7))
    [event] = parse_report(signed, verp=verp, require_token=True).events
    assert event.delivery_id == 7


def test_a_complaint_about_a_forged_return_path_records_nothing(verp: VerpSigner) -> None:
    data = with_return_path(sample("arf_complaint.eml"), "bounces+10ffffffffffff@paperpost.example")
    assert parse_report(data, verp=verp).kind == "unverified"
    tokenless = sample("arf_complaint.eml")
    assert parse_report(tokenless, verp=verp).events[0].address == "ada@lab.example"
    assert parse_report(tokenless, verp=verp, require_token=True).kind == "unverified"


def test_a_mailed_unsubscribe_needs_no_token(verp: VerpSigner) -> None:
    report = parse_report(
        sample("unsubscribe_mail.eml"),
        verp=verp,
        unsubscribe_address=UNSUBSCRIBE,
        require_token=True,
    )
    assert [e.kind for e in report.events] == ["unsubscribe"]


# -- complaints and mailed unsubscribes -----------------------------------------------------------
def test_arf_complaint_names_the_original_recipient() -> None:
    report = parse_report(sample("arf_complaint.eml"))
    assert report.kind == "complaint"
    [event] = report.events
    assert (event.kind, event.address) == ("complaint", "ada@lab.example")
    assert event.detail == "abuse report by ExampleFBL/2.1"


def test_arf_complaint_with_a_verp_original_mail_from(verp: VerpSigner) -> None:
    data = with_return_path(sample("arf_complaint.eml"), verp.address(99))
    [event] = parse_report(data, verp=verp).events
    assert event.delivery_id == 99


def test_arf_without_a_recipient_falls_back_to_the_enclosed_to() -> None:
    data = sample("arf_complaint.eml").replace(b"Original-Rcpt-To: <ada@lab.example>\n", b"")
    [event] = parse_report(data).events
    assert event.address == "ada@lab.example"


def test_not_spam_feedback_records_nothing() -> None:
    data = sample("arf_complaint.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse_report(data).events == ()


def test_mail_to_the_unsubscribe_address_unsubscribes_its_sender() -> None:
    report = parse_report(sample("unsubscribe_mail.eml"), unsubscribe_address=UNSUBSCRIBE)
    [event] = report.events
    assert (event.kind, event.address) == ("unsubscribe", "zoe@lab.example")
    # Without the address configured it is just a message.
    assert parse_report(sample("unsubscribe_mail.eml")).events == ()


def test_an_auto_reply_to_the_unsubscribe_address_unsubscribes_nobody() -> None:
    data = sample("unsubscribe_mail.eml").replace(
        b"Subject: unsubscribe", b"Auto-Submitted: auto-replied\nSubject: Out of office"
    )
    assert parse_report(data, unsubscribe_address=UNSUBSCRIBE).events == ()


# -- hostile and broken input ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("garbage.eml", "not a mail message"),
        ("broken_dsn.eml", "without per-recipient fields"),
    ],
)
def test_malformed_reports_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(MalformedReport, match=reason):
        parse_report(sample(name))


def test_empty_message_is_malformed() -> None:
    with pytest.raises(MalformedReport, match="empty"):
        parse_report(b"  \n")


def test_hostile_fields_are_cleaned() -> None:
    data = sample("hard_dsn.eml").replace(
        b"Diagnostic-Code: smtp; 550 5.1.1",
        b"Diagnostic-Code: smtp; \x1b[31m550\x07 5.1.1" + b" x" * 400,
    )
    [event] = parse_report(data).events
    assert "\x1b" not in event.detail and "\x07" not in event.detail
    assert len(event.detail) <= 300


def test_dsn_whose_recipient_is_not_an_address_is_malformed() -> None:
    data = (
        sample("hard_dsn.eml")
        .replace(b"Final-Recipient: rfc822; ada@lab.example", b"Final-Recipient: rfc822; <script>")
        .replace(b"Original-Recipient: rfc822;ada@lab.example\n", b"")
    )
    with pytest.raises(MalformedReport, match="names no recipient"):
        parse_report(data)


def test_a_message_that_reports_nothing_is_other() -> None:
    data = b"From: someone@else.example\nTo: bounces@paperpost.example\nSubject: hi\n\nhello\n"
    report = parse_report(data, unsubscribe_address=UNSUBSCRIBE)
    assert (report.kind, report.events) == ("other", ())
    assert report.report_id.startswith("sha256:")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Ada <ADA@Lab.Example>", "ada@lab.example"),
        (" <ada@lab.example> ", "ada@lab.example"),
        ("ada@lab..example", None),
        ("not an address", None),
        ("a@b.example\r\nBcc: x@y.example", None),
        ("", None),
    ],
)
def test_normal_address(value: str, expected: str | None) -> None:
    assert normal_address(value) == expected
