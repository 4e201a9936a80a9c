"""Map TOML key paths to line numbers, so errors can say where to look.

``tomllib`` gives no positions, so this scans the text once, tracking table
and array-of-table headers the way TOML defines them. It understands the
subset config files use (tables, arrays of tables, dotted keys, multi-line
strings and arrays are skipped over); anything it cannot place simply has
no line number.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+?)\s*=")

Path = tuple[str | int, ...]


def _split_dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def key_lines(text: str) -> dict[Path, int]:
    """Return {key path: 1-based line} for every header and key in ``text``."""
    lines: dict[Path, int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    current: Path = ()
    in_multiline: str | None = None
    bracket_depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_multiline:
            if raw.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if bracket_depth:
            bracket_depth += raw.count("[") - raw.count("]")
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(raw)
        if header and not _KEY.match(raw):
            names = tuple(_split_dotted(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(names, -1) + 1
                array_counts[names] = index
                # Nested arrays reset when their parent array advances.
                for key in list(array_counts):
                    if len(key) > len(names) and key[: len(names)] == names:
                        del array_counts[key]
                current = (*_resolve(names[:-1], array_counts), names[-1], index)
            else:
                current = _resolve(names, array_counts)
            lines.setdefault(current, number)
            continue
        key_match = _KEY.match(raw)
        if key_match:
            path = (*current, *_split_dotted(key_match.group(1)))
            lines.setdefault(path, number)
            rest = raw[key_match.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
            depth = rest.count("[") - rest.count("]")
            if depth > 0 and not in_multiline:
                bracket_depth = depth
    return lines


def _resolve(names: tuple[str, ...], array_counts: dict[tuple[str, ...], int]) -> Path:
    """Insert the current index after every prefix that is an array of tables."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = names[: i + 1]
        if prefix in array_counts:
            out.append(array_counts[prefix])
    return tuple(out)


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path`` or of its nearest ancestor that appears in the file."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
