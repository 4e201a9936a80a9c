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


def test_pipeline_metrics_families() -> None:
    from pipeline.web.metrics import pipeline_metrics

    text = exposition(
        pipeline_metrics(
            papers=120,
            outbox={"sent": 3, "pending": 1},
            source_failures={"arxiv-cs": 0, "hf": 4},
            lease_held=True,
            counters={"digests_sent": 3, "dispatch_seconds": 1.5},
        )
    )
    for line in [
        "paperpost_papers 120",
        "paperpost_digests_sent_total 3",
        "paperpost_dispatch_seconds_total 1.5",
        'paperpost_outbox{state="pending"} 1',
        'paperpost_outbox{state="sent"} 3',
        'paperpost_source_consecutive_failures{source="hf"} 4',
        "paperpost_scheduler_lease_held 1",
        "# TYPE paperpost_digests_sent_total counter",
        "# TYPE paperpost_outbox gauge",
    ]:
        assert line + "\n" in text


def test_pipeline_metrics_refuses_unknown_counters() -> None:
    from pipeline.web.metrics import pipeline_metrics

    with pytest.raises(ValueError, match=r"unknown counters \['digests_lost'\]"):
        pipeline_metrics(
            papers=0, outbox={}, source_failures={}, lease_held=False, counters={"digests_lost": 1}
        )
