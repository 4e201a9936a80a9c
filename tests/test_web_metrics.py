"""Prometheus text exposition: names, labels, escaping, numbers."""

from __future__ import annotations

import pytest

from pipeline.web.metrics import Metric, exposition


def test_exposition_renders_help_type_and_samples() -> None:
    text = exposition(
        [
            Metric("paperpost_papers", "gauge", "Papers in the store.", (({}, 12),)),
            Metric(
                "paperpost_digests_total",
                "counter",
                "Digests by outcome.",
                (({"state": "sent"}, 3), ({"state": "failed"}, 0.5)),
            ),
        ]
    )
    assert text == (
        "# HELP paperpost_papers Papers in the store.\n"
        "# TYPE paperpost_papers gauge\n"
        "paperpost_papers 12\n"
        "# HELP paperpost_digests_total Digests by outcome.\n"
        "# TYPE paperpost_digests_total counter\n"
        'paperpost_digests_total{state="sent"} 3\n'
        'paperpost_digests_total{state="failed"} 0.5\n'
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ('a"b', r"a\"b"),
        ("a\\b", r"a\\b"),
        ("line\nbreak", r"line\nbreak"),
        ("arxiv-cs.LG", "arxiv-cs.LG"),
    ],
    ids=["quote", "backslash", "newline", "plain"],
)
def test_label_values_are_escaped(value: str, rendered: str) -> None:
    text = exposition([Metric("m", "gauge", "h", (({"source": value}, 1),))])
    assert f'm{{source="{rendered}"}} 1\n' in text


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (2.0, "2"),
        (0.25, "0.25"),
    ],
    ids=["nan", "inf", "minus-inf", "integral-float", "fraction"],
)
def test_numbers(value: float, rendered: str) -> None:
    assert exposition([Metric("m", "gauge", "h", (({}, value),))]).endswith(f"m {rendered}\n")


@pytest.mark.parametrize(
    ("name", "labels", "message"),
    [("bad-name", {}, "invalid metric name"), ("ok", {"bad-label": "x"}, "invalid label names")],
    ids=["metric-name", "label-name"],
)
def test_invalid_names_are_refused(name: str, labels: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric(name, "gauge", "h", ((labels, 1),))


def test_nothing_renders_as_empty_text() -> None:
    assert exposition([]) == ""
