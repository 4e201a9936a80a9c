"""Bulk reader files for ``paperpost subscribers import``: CSV or JSON Lines.

Each record is validated exactly like a ``[[subscribers]]`` table of the config file (the
same model and the same cross-checks), and every problem names the file, the line and
the key. A file is all or nothing: one bad record and nothing is imported.

- **JSON Lines** (``.jsonl``, ``.ndjson``): one object per line, shaped like a
  ``[[subscribers]]`` table, ``interests`` nested: ``{"email": "ada@lab.example",
  "timezone": "Europe/London", "interests": {"categories": ["cs.LG"]}}``. Blank lines
  and lines starting with ``#`` are skipped.
- **CSV** (``.csv``): a header row naming the columns; the subscriber keys (``email``,
  ``name``, ``timezone``, ``frequency``, ``send_at``, ``max_items``, ``trending``,
  ``on_empty``) and the interests keys (``query``, ``categories``, ``authors``,
  ``about``, ``like``, ``exclude``, ``min_score``). List columns hold values separated by
  ``;``. An empty cell means the default.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config.load import (
    KeyPath,
    format_path,
    pydantic_message,
    semantic_checks,
    to_subscriber,
)
from pipeline.config.models import InterestsConfig, SubscriberConfig
from pipeline.domain import Subscriber
from pipeline.errors import ConfigError

_SUBSCRIBER_KEYS = frozenset(SubscriberConfig.model_fields) - {"interests"}
_INTEREST_KEYS = frozenset(InterestsConfig.model_fields)
_KNOWN = _SUBSCRIBER_KEYS | _INTEREST_KEYS
_LIST_KEYS = frozenset({"categories", "authors", "like"})
_NUMBER_KEYS = {"max_items": int, "trending": int, "min_score": float}


class _Problems:
    """Problems placed at the line of the record they belong to."""

    def __init__(self, path: Path, lines: list[int]) -> None:
        self.items: list[str] = []
        self._path = path
        self._lines = lines

    def add(self, path: KeyPath, message: str) -> None:
        index = path[1] if len(path) > 1 and isinstance(path[1], int) else None
        line = self._lines[index] if index is not None and index < len(self._lines) else None
        where = f"{self._path}:{line}" if line else str(self._path)
        key = format_path(path[2:]) if index is not None else format_path(path)
        self.items.append(f"{where}: {key}: {message}")


def read_subscribers(path: Path) -> list[Subscriber]:
    """The readers in ``path``, validated; ``ConfigError`` listing every problem."""
    path = path.resolve()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        parsed = list(_jsonl_records(path, text))
    elif suffix == ".csv":
        parsed = list(_csv_records(path, text))
    else:
        raise ConfigError(
            str(path), [f"expected a .csv or .jsonl (JSON Lines) file, found {suffix or 'none'!r}"]
        )
    del text  # a million readers: the text, the records and the readers are each GBs
    errors = [message for _, _, message in parsed if message]
    records = [(line, record) for line, record, message in parsed if not message]
    del parsed
    if errors:
        raise ConfigError(str(path), errors)
    problems = _Problems(path, [line for line, _ in records])
    subscribers: list[Subscriber] = []
    for i, (_, record) in enumerate(records):
        try:  # each validated model becomes a reader at once: the models are never all kept
            model = SubscriberConfig.model_validate(record)
        except ValidationError as exc:
            for err in exc.errors():
                problems.add(("subscribers", i, *err["loc"]), pydantic_message(err))
            continue
        try:
            subscribers.append(to_subscriber(model))
        except ValueError as exc:
            problems.add(("subscribers", i), str(exc))
    semantic_checks({"subscribers": [r for _, r in records]}, problems)
    if problems.items:
        raise ConfigError(str(path), problems.items)
    return subscribers


Parsed = tuple[int, dict[str, Any], str | None]  # line, record, or the reason it is unreadable


def _jsonl_records(path: Path, text: str) -> Iterator[Parsed]:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield number, {}, f"{path}:{number}: not a JSON object: {exc.msg}"
            continue
        if not isinstance(record, dict):
            yield (
                number,
                {},
                f"{path}:{number}: expected a JSON object, found {type(record).__name__}",
            )
            continue
        yield number, record, None


def _csv_records(path: Path, text: str) -> Iterator[Parsed]:
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    unknown = [c for c in columns if c not in _KNOWN]
    if unknown or "email" not in columns:
        header = (
            f"unknown column(s) {', '.join(map(repr, unknown))}"
            if unknown
            else "the header row has no 'email' column"
        )
        yield 1, {}, f"{path}:1: {header} (known columns: {', '.join(sorted(_KNOWN))})"
        return
    for row in reader:
        number = reader.line_num
        if None in row:
            yield number, {}, f"{path}:{number}: more cells than the header has columns"
            continue
        record: dict[str, Any] = {}
        interests: dict[str, Any] = {}
        problem: str | None = None
        for key, raw in row.items():
            value = (raw or "").strip()
            if not value:
                continue
            target = interests if key in _INTEREST_KEYS else record
            if key in _LIST_KEYS:
                target[key] = [v.strip() for v in value.split(";") if v.strip()]
            elif key in _NUMBER_KEYS:
                try:
                    target[key] = _NUMBER_KEYS[key](value)
                except ValueError:
                    problem = f"{path}:{number}: {key}: expected a number, found {value!r}"
            else:
                target[key] = value
        if interests:
            record["interests"] = interests
        yield number, record, problem
