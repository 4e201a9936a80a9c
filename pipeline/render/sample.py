"""A fixed sample digest: what ``Renderer.check`` renders, and what previews can show.

It exercises every branch the templates have: a name, non-ASCII text, HTML
in an abstract, an author list long enough to shorten, missing optional
links, trending items and feedback links.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.domain import Digest, DigestItem, Paper

__all__ = ["sample_digest"]

_WHEN = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def sample_digest() -> Digest:
    dpo = Paper(
        id="2305.18290",
        title="Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        abstract=(
            "While large-scale unsupervised language models (LMs) learn broad world knowledge "
            "and some reasoning skills, achieving precise control of their behavior is difficult "
            "due to the completely unsupervised nature of their training. Existing methods for "
            "gaining such steerability collect human labels of the relative quality of model "
            "generations and fine-tune the unsupervised LM to align with these preferences, "
            "often with reinforcement learning from human feedback (RLHF)."
        ),
        authors=(
            "Rafael Rafailov",
            "Archit Sharma",
            "Eric Mitchell",
            "Stefano Ermon",
            "Christopher D. Manning",
            "Chelsea Finn",
        ),
        categories=("cs.LG", "cs.AI", "cs.CL"),
        url="https://arxiv.org/abs/2305.18290",
        pdf_url="https://arxiv.org/pdf/2305.18290",
        hf_url="https://huggingface.co/papers/2305.18290",
        announced=_WHEN,
        upvotes=57,
    )
    diffusion = Paper(
        id="2006.11239",
        title="Denoising diffusion probabilistic models: when x < y, a Ω-scale study",
        abstract="<p>We present high quality image synthesis results &amp; more. See Fig. 2.</p>",
        authors=("Jonathan Ho", "Ajay Jain", "Pieter Abbeel"),
        categories=("cs.LG",),
        url="https://arxiv.org/abs/2006.11239",
        announced=_WHEN,
    )
    return Digest(
        recipient_email="ada@lab.example",
        recipient_name="Ada Lovelace",
        period_label="Monday 23 November 2026",
        period_key="2026-11-23",
        generated_at=_WHEN,
        items=(
            DigestItem(
                paper=dpo,
                score=0.92,
                reason='matched ti:"preference optimization"; similar to 2203.02155',
                more_url="https://digest.lab.example/f/more/abc",
                less_url="https://digest.lab.example/f/less/abc",
            ),
            DigestItem(paper=diffusion, score=0.41, reason="category cs.LG"),
        ),
        trending=(DigestItem(paper=dpo, score=0.0, reason="57 upvotes on Hugging Face"),),
        unsubscribe_url="https://digest.lab.example/u/abc",
        list_name="Paperpost",
        reason_for_receiving="You receive this because ada@lab.example subscribed to Paperpost.",
    )
