"""Golden files of rendered messages: raw headers, text part and HTML part.

Regenerate after an intended change with
``PAPERPOST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render_golden.py`` and
review the diff of ``tests/golden/``. Volatile values (Date, MIME boundary) are
normalised so the files only change when the rendering does.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from pipeline.domain import Digest, DigestItem, MessageHeaders, Paper
from pipeline.mail import build_message, make_message_id
from pipeline.render import Renderer, sample_digest
from tests.factories import MONDAY_7AM as WHEN

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("PAPERPOST_UPDATE_GOLDEN") == "1"


def minimal() -> Digest:
    paper = Paper(
        id="2106.09685",
        title="LoRA: Low-Rank Adaptation of Large Language Models",
        abstract=(
            "An important paradigm of natural language processing consists of large-scale "
            "pre-training on general domain data and adaptation to particular tasks or domains. "
            "As we pre-train larger models, full fine-tuning becomes less feasible."
        ),
        authors=("Edward J. Hu", "Yelong Shen", "Phillip Wallis", "Zeyuan Allen-Zhu", "Yuanzhi Li"),
        categories=("cs.CL", "cs.AI", "cs.LG"),
        url="https://arxiv.org/abs/2106.09685",
        pdf_url="https://arxiv.org/pdf/2106.09685",
        doi="10.48550/arXiv.2106.09685",
        github_repo="microsoft/LoRA",
        announced=WHEN,
    )
    return Digest(
        recipient_email="bob@lab.example",
        recipient_name=None,
        period_key="2026-W48",
        period_label="the week of 23 November 2026",
        generated_at=WHEN,
        items=(DigestItem(paper, 0.7, "followed author Edward J. Hu"),),
        unsubscribe_url="https://digest.lab.example/u/bob",
        reason_for_receiving="You receive this weekly digest because bob@lab.example subscribed.",
    )


def empty() -> Digest:
    return dataclasses.replace(minimal(), items=(), recipient_name="Bob")


def trending_only() -> Digest:
    """A reader with no interests but ``trending``: one paper known by its arXiv id only,
    one known only by title and abstract (a sample listing's), which gets a title search."""
    lora = dataclasses.replace(minimal().items[0].paper, url=None, pdf_url=None, upvotes=42)
    bare = Paper(
        id="sha:e711222a9d3c",
        title="MLGym: A New Framework and Benchmark for Advancing AI Research Agents",
        abstract="We introduce MLGym. It is a gym environment for research agents.",
        upvotes=7,
    )
    return dataclasses.replace(
        minimal(),
        items=(),
        trending=(
            DigestItem(lora, 0.0, "trending on Hugging Face (42 upvotes)"),
            DigestItem(bare, 0.0, "trending on Hugging Face (7 upvotes)"),
        ),
    )


CASES: list[tuple[str, Callable[[], Digest]]] = [
    ("sample", sample_digest),
    ("minimal", minimal),
    ("empty", empty),
    ("trending", trending_only),
]


def normalise_headers(head: str) -> str:
    head = re.sub(r"^Date: .*$", "Date: <normalised>", head, flags=re.MULTILINE)
    return re.sub(r'boundary="[^"]+"', 'boundary="<normalised>"', head)


@pytest.mark.parametrize("make", [m for _, m in CASES], ids=[n for n, _ in CASES])
def test_rendered_message_matches_golden(
    make: Callable[[], Digest], request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    digest = make()
    rendered = Renderer().render(digest)
    headers = MessageHeaders(
        from_addr="Paperpost <digest@lab.example>",
        to_addr=digest.recipient_email,
        to_name=digest.recipient_name,
        subject=rendered.subject,
        message_id=make_message_id(f"{digest.recipient_email}/{digest.period_key}", "lab.example"),
        date=WHEN,
        list_id="Paperpost digest <digest.lab.example>",
        unsubscribe_url=digest.unsubscribe_url,
        unsubscribe_mailto="mailto:unsubscribe@lab.example?subject=unsubscribe",
    )
    data = build_message(headers, rendered)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text_part, html_part = message.iter_parts()
    raw_head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    actual = {
        f"{name}.headers": normalise_headers(raw_head.replace("\r\n", "\n"))
        + f"\n# decoded Subject: {message['Subject']}\n# decoded To: {message['To']}\n",
        f"{name}.txt": str(text_part.get_content()).replace("\r\n", "\n"),
        f"{name}.html": str(html_part.get_content()).replace("\r\n", "\n"),
    }
    for filename, content in actual.items():
        path = GOLDEN / filename
        if UPDATE:
            path.write_text(content, encoding="utf-8", newline="\n")
        assert path.exists(), f"{path} missing; run with PAPERPOST_UPDATE_GOLDEN=1"
        assert content == path.read_text(encoding="utf-8"), (
            f"{filename} differs from the golden file"
        )
