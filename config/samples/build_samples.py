"""Rebuild the shipped sample listings from the founding seed pages, or relink them.

    python config/samples/build_samples.py SEEDS_DIR   # rebuild from the seed pages
    python config/samples/build_samples.py --link      # relink the shipped .rss files

Each seed (``NNN_*.txt``, not shipped) is a Hugging Face Daily Papers listing page saved
as text: a few header lines, the listing date ("Mar 12", no year on the page), then title
and abstract paragraphs in turn. Each becomes one RSS 2.0 file, read by the generic
``feed`` source. Nothing the seeds lack is invented: no authors, categories or dates per
item. Each item's ``guid`` (isPermaLink="false") is "seed-" plus the first 16 hex digits
of the SHA-256 of its title, a stable derived id.

Links: an item whose exact title (normalised: NFKC, case-folded, punctuation and spacing
collapsed) is the title of a paper in one of the real arXiv captures shipped with the
project (``CAPTURES``) gets that paper's ``https://arxiv.org/abs/<id>`` as its ``link``,
so Paperpost knows it by its arXiv id (abstract and PDF links in the digest). Any other
item keeps no link; Paperpost's id for it is its content hash, and the digest links to
an arXiv search for its exact title, labelled as a search. ``--link`` reports how many
titles matched.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}$")
ATOM = "{http://www.w3.org/2005/Atom}"
# Real captures with arXiv ids and titles (JSON Lines, arXiv API Atom, HF daily JSON).
CAPTURES = (
    ROOT / "bench" / "data" / "arxiv_cs_dev_2025.jsonl",
    ROOT / "bench" / "data" / "arxiv_oai_cs_set_1000_2007.jsonl",
    *sorted((ROOT / "tests" / "data").glob("*.xml")),
    *sorted((ROOT / "tests" / "data").glob("*.json")),
    HERE / "arxiv-api-search-testing.xml",
    HERE / "hf-daily-2026-07-31.json",
)


def normal_title(title: str) -> str:
    """The title as compared: NFKC, case-folded, runs of non-word characters as one space."""
    folded = unicodedata.normalize("NFKC", title).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


def _titled_ids(path: Path) -> list[tuple[str, str]]:
    """(title, arXiv id) pairs found in one capture; [] for a file of another shape."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [(r["title"], r["id"]) for r in rows if r.get("title") and r.get("id")]
    if path.suffix == ".json":
        data = json.loads(text)
        papers = [d.get("paper", {}) for d in data] if isinstance(data, list) else []
        return [(p["title"], p["id"]) for p in papers if p.get("title") and p.get("id")]
    try:
        root = ET.fromstring(text)  # noqa: S314 -- the project's own shipped captures
    except ET.ParseError:
        return []
    found = []
    for entry in root.iter(f"{ATOM}entry"):
        title, ident = entry.findtext(f"{ATOM}title"), entry.findtext(f"{ATOM}id") or ""
        match = re.search(r"arxiv\.org/abs/([^\s/v]+(?:/\d{7})?)", ident)
        if title and match:
            found.append((title, match.group(1)))
    return found


def arxiv_ids_by_title(captures: tuple[Path, ...] = CAPTURES) -> dict[str, str]:
    """Normalised title → arXiv id over every capture that exists (first one wins)."""
    found: dict[str, str] = {}
    for path in captures:
        if path.is_file():
            for title, ident in _titled_ids(path):
                found.setdefault(normal_title(title), ident)
    return found


def parse_seed(text: str) -> tuple[str, list[tuple[str, str]]]:
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    for i, block in enumerate(blocks):
        if DATE.match(block):
            date, body = block, blocks[i + 1 :]
            break
    else:
        raise ValueError("no listing date line such as 'Mar 12' found")
    if len(body) % 2:
        raise ValueError(f"expected title/abstract pairs, found {len(body)} paragraphs")
    return date, [(body[j], body[j + 1]) for j in range(0, len(body), 2)]


def to_rss(
    seed_name: str, date: str, pairs: list[tuple[str, str]], ids: dict[str, str] | None = None
) -> str:
    items = []
    for title, abstract in pairs:
        guid = "seed-" + hashlib.sha256(title.encode("utf-8")).hexdigest()[:16]
        arxiv = (ids or {}).get(normal_title(title))
        link = f"      <link>https://arxiv.org/abs/{escape(arxiv)}</link>\n" if arxiv else ""
        items.append(
            "    <item>\n"
            f"      <title>{escape(title)}</title>\n"
            f"{link}"
            f'      <guid isPermaLink="false">{guid}</guid>\n'
            f"      <description>{escape(abstract)}</description>\n"
            "    </item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0">\n'
        "  <channel>\n"
        f"    <title>Daily Papers sample listing ({escape(date)})</title>\n"
        "    <link>https://huggingface.co/papers</link>\n"
        f"    <description>Titles and abstracts from a Hugging Face Daily Papers page dated "
        f"{escape(date)} (no year on the page); built by config/samples/build_samples.py "
        f"from seed {escape(seed_name)}.</description>\n"
        + "\n".join(items)
        + "\n  </channel>\n</rss>\n"
    )


def relink(path: Path, ids: dict[str, str]) -> tuple[int, int]:
    """Rewrite one shipped listing with the links ``ids`` gives; (matched, items)."""
    root = ET.parse(path).getroot()  # noqa: S314 -- a listing this script wrote
    channel = root.find("channel")
    assert channel is not None, f"{path}: no <channel>"
    about = channel.findtext("description") or ""
    seed_name = about.rsplit("from seed ", 1)[-1].rstrip(".")
    date = (channel.findtext("title") or "").rsplit("(", 1)[-1].rstrip(")")
    pairs = [
        (item.findtext("title") or "", item.findtext("description") or "")
        for item in channel.iter("item")
    ]
    path.write_text(to_rss(seed_name, date, pairs, ids), encoding="utf-8")
    return sum(normal_title(t) in ids for t, _ in pairs), len(pairs)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit(__doc__)
    ids = arxiv_ids_by_title()
    if argv[1] == "--link":
        for path in sorted(HERE.glob("daily-papers-*.rss")):
            matched, total = relink(path, ids)
            print(f"{path.name}: {matched} of {total} titles found in a capture ({len(ids)} known)")
        return 0
    for seed in sorted(Path(argv[1]).glob("*.txt")):
        date, pairs = parse_seed(seed.read_text(encoding="utf-8"))
        number = seed.name.split("_", 1)[0]
        out = HERE / f"daily-papers-{number}.rss"
        out.write_text(to_rss(seed.name, date, pairs, ids), encoding="utf-8")
        print(f"{out.name}: {len(pairs)} papers, listing date {date}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
