"""Cached, precompiled pieces of a render and how each digest fills them in.

The renderer renders each paper's entry once per run and each HTML shell once
per structure, with slot markers where a reader's own values go. This module
turns those renders into pieces that are cheap to fill per digest:

- an entry's HTML becomes literal runs around the slot marker positions, so
  filling in the number, reason and feedback links is one list copy and one
  join (``str.format`` would rescan the literal text on every call), and its
  UTF-8 size is known without encoding the result;
- an entry's text becomes literal runs around the number and the links, and
  the lines holding the reason, which are wrapped per reader once it is in;
- the CSS-inlined HTML shell becomes literal runs between entry slots and
  field slots, joined once per digest with the size counted on the way;
- the text shell becomes its wrapped lines around the entry slots, and the
  lines holding the digest's text fields, which are wrapped per digest once
  the fields are in.

Output is byte for byte what substituting the slot markers in the whole
rendered text would give.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.render.text import wrap_text

__all__ = [
    "FIELD_SENTINELS",
    "LESS",
    "MORE",
    "NUMBER",
    "REASON",
    "SUBJECT",
    "Entry",
    "EntryChunk",
    "Shell",
    "TextShell",
    "close_line",
    "compile_chunk",
    "compile_shell",
    "compile_text_shell",
    "fill_entry",
    "fill_shell",
    "fill_text_shell",
    "utf8_len",
]

NUMBER = "\ue004\ue004"  # two columns wide, like the " 1" it becomes in text
REASON, MORE, LESS = "\ue001", "\ue002", "\ue003"
# The shell's text fields, and their slot markers while the HTML shell is inlined.
FIELD_SENTINELS = (
    ("recipient_name", "\ue005"),
    ("period_label", "\ue006"),
    ("list_name", "\ue007"),
    ("unsubscribe_url", "\ue008"),
    ("reason_for_receiving", "\ue009"),
    ("generated_day", "\ue00a"),
)
SUBJECT = "\ue00b"  # after the fields: field index len(FIELD_SENTINELS)
_FIELD_INDEX = {s: i for i, (_, s) in enumerate(FIELD_SENTINELS)} | {SUBJECT: len(FIELD_SENTINELS)}
_SHELL_SLOTS = re.compile("<!--pp:(\\d+)-->|([\ue005-\ue00b])")
_ENTRY_SLOTS = re.compile(f"({NUMBER}|{REASON}|{MORE}|{LESS})")
_ENTRY_ARGS = {NUMBER: 0, REASON: 1, MORE: 2, LESS: 3}
_NUMBERED_LINE_SLOTS = re.compile(f"({NUMBER}|{MORE}|{LESS})")
_LINE_SLOTS = re.compile(f"({MORE}|{LESS})")
_TEXT_SLOT = re.compile("\x00(\\d+)\x00")  # where an entry goes in the text shell
_TEXT_FIELDS = re.compile("([\ue005-\ue00b])")


def utf8_len(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One paper's entry filled in for one reader."""

    html: str
    text: str
    size: int  # UTF-8 bytes of ``html``


@dataclass(frozen=True, slots=True)
class EntryChunk:
    """One paper's entry with slot markers for the personal parts, precompiled."""

    html_parts: tuple[str, ...]  # literal runs, with the slot markers between them
    html_slots: tuple[tuple[int, int], ...]  # (index in html_parts, 0 number .. 3 "less" URL)
    html_bytes: int  # UTF-8 bytes of the literal parts
    html_uses: tuple[int, int, int, int]  # how often each of {0}..{3} occurs
    text_parts: tuple[str, ...]  # literal runs with the slots between them
    text_slots: tuple[tuple[int, int], ...]  # (index, 0 number .. 3 "less" URL, 4+ wrapped line)
    text_wrapped: tuple[tuple[str, bool], ...]  # lines holding the reason: (line, numbered)


def fill_entry(
    chunk: EntryChunk,
    number: int,
    values: tuple[str, str, str],
    escaped: tuple[str, str, str],
    width: int,
) -> Entry:
    """The entry for one reader: reason, "more" and "less" URL, clean and HTML-escaped."""
    digits = str(number)
    args = (digits, *escaped)
    parts = list(chunk.html_parts)
    for index, arg in chunk.html_slots:
        parts[index] = args[arg]
    html = "".join(parts)
    uses = chunk.html_uses
    size = chunk.html_bytes + uses[0] * len(digits)
    for count, value in zip(uses[1:], escaped, strict=True):
        if count:
            size += count * utf8_len(value)
    reason, more, less = values
    text_args = [f"{number:>2}", reason, more, less]
    for line, numbered in chunk.text_wrapped:
        if numbered:
            line = line.replace(NUMBER, text_args[0])
        # Prose: wrapped. A line ending in a link is kept whole (URLs do not break).
        line = wrap_text(line.replace(REASON, reason), width)
        text_args.append(line.replace(MORE, more).replace(LESS, less))
    text = list(chunk.text_parts)
    for index, arg in chunk.text_slots:
        text[index] = text_args[arg]
    return Entry(html, "".join(text), size)


def compile_chunk(html: str, text_lines: Sequence[str]) -> EntryChunk:
    """Precompile a rendered entry (``html`` CSS-inlined, ``text_lines`` wrapped)."""
    parts = _ENTRY_SLOTS.split(html)
    slots = [(i, _ENTRY_ARGS[part]) for i, part in enumerate(parts) if i % 2]
    uses = [0, 0, 0, 0]
    for _, arg in slots:
        uses[arg] += 1
    size = sum(utf8_len(part) for part in parts[::2])
    # Text: the first line holds the number; lines with the reason are wrapped once
    # it is in (the others keep their wrapping); the links are filled in as they are.
    text: list[str] = []
    text_slots: list[tuple[int, int]] = []
    wrapped: list[tuple[str, bool]] = []
    literal: list[str] = []
    last = len(text_lines) - 1
    for i, line in enumerate(text_lines):
        end = "" if i == last else "\n"
        if REASON in line:
            text.append("".join(literal))
            text_slots.append((len(text), 4 + len(wrapped)))
            text.append(line)
            wrapped.append((line, i == 0))
            literal = [end]
            continue
        pieces = (_NUMBERED_LINE_SLOTS if i == 0 else _LINE_SLOTS).split(line)
        literal.append(pieces[0])
        for k in range(1, len(pieces), 2):
            text.append("".join(literal))
            text_slots.append((len(text), _ENTRY_ARGS[pieces[k]]))
            text.append(pieces[k])
            literal = [pieces[k + 1]]
        literal.append(end)
    text.append("".join(literal))
    return EntryChunk(
        tuple(parts),
        tuple(slots),
        size,
        (uses[0], uses[1], uses[2], uses[3]),
        tuple(text),
        tuple(text_slots),
        tuple(wrapped),
    )


@dataclass(frozen=True, slots=True)
class Shell:
    """A CSS-inlined HTML shell: literal runs, entry slots (ints >= 0), field slots (< 0)."""

    parts: tuple[str | int, ...]
    literal_bytes: int


def compile_shell(document: str) -> Shell:
    parts: list[str | int] = []
    size = 0
    position = 0
    for match in _SHELL_SLOTS.finditer(document):
        literal = document[position : match.start()]
        parts.append(literal)
        size += utf8_len(literal)
        slot = match.group(1)
        parts.append(int(slot) if slot is not None else ~_FIELD_INDEX[match.group(2)])
        position = match.end()
    parts.append(document[position:])
    size += utf8_len(document[position:])
    return Shell(tuple(parts), size)


def fill_shell(shell: Shell, entries: Sequence[Entry], fields: Sequence[str]) -> tuple[str, int]:
    """The digest's HTML (ending in a line break) and its UTF-8 size."""
    out: list[str] = []
    size = shell.literal_bytes
    for part in shell.parts:
        if isinstance(part, str):
            out.append(part)
        elif part >= 0:
            entry = entries[part]
            out.append(entry.html)
            size += entry.size
        else:
            value = fields[~part]
            out.append(value)
            size += utf8_len(value)
    if close_line(out):
        size += 1
    return "".join(out), size


@dataclass(frozen=True, slots=True)
class TextShell:
    """A wrapped text shell: literal runs, entry slots (ints), and field lines.

    A field line is the template's line split around its field slot markers
    (literal, marker, literal ...); it is filled and wrapped per digest, since
    how it wraps depends on the values. Every other line was wrapped once.
    """

    parts: tuple[str | int | tuple[str, ...], ...]


def compile_text_shell(text: str, width: int) -> TextShell:
    """Precompile a rendered text shell (entry slots ``\\x00N\\x00``, field slot markers)."""
    parts: list[str | int | tuple[str, ...]] = []
    literal: list[str] = []
    lines = text.split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        end = "" if i == last else "\n"
        pieces = _TEXT_FIELDS.split(line)
        if len(pieces) > 1:
            parts.append("".join(literal))
            parts.append(tuple(pieces))
            literal = [end]
            continue
        runs = _TEXT_SLOT.split(wrap_text(line, width))
        literal.append(runs[0])
        for k in range(1, len(runs), 2):
            parts.append("".join(literal))
            parts.append(int(runs[k]))
            literal = [runs[k + 1]]
        literal.append(end)
    parts.append("".join(literal))
    return TextShell(tuple(parts))


def fill_text_shell(
    shell: TextShell, entries: Sequence[Entry], fields: Sequence[str], width: int
) -> str:
    """The digest's text (ending in a line break): ``fields`` are the clean, unescaped values.

    The same as wrapping the whole shell with the fields filled in, then putting
    the entries in: wrapping works line by line, and clean values hold no line
    breaks, entry slot markers or field slot markers.
    """
    out: list[str] = []
    for part in shell.parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, int):
            out.append(entries[part].text)
        else:
            filled = list(part)
            filled[1::2] = [fields[_FIELD_INDEX[marker]] for marker in part[1::2]]
            runs = _TEXT_SLOT.split(wrap_text("".join(filled), width))
            runs[1::2] = [entries[int(slot)].text for slot in runs[1::2]]
            out.extend(runs)
    close_line(out)
    return "".join(out)


def close_line(parts: list[str]) -> bool:
    """Append a line break to ``parts`` unless their concatenation ends in one."""
    for part in reversed(parts):
        if part:
            if part.endswith("\n"):
                return False
            break
    parts.append("\n")
    return True
