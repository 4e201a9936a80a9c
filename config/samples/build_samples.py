"""Rebuild the shipped sample listings from the founding seed pages.

    python config/samples/build_samples.py [SEEDS_DIR]

Each seed (../shared/seeds/NNN_*.txt, beside the project root) is a Hugging Face Daily
Papers listing page saved as text: a few header lines, the listing date ("Mar 12", no
year on the page), then title and abstract paragraphs in turn. Each becomes one RSS 2.0
file, read by the generic ``feed`` source. Nothing the seeds lack is invented: no links,
authors, categories or dates per item. Each item's ``guid`` (isPermaLink="false") is
"seed-" plus the first 16 hex digits of the SHA-256 of its title, a stable derived id;
Paperpost's canonical id for such items is its own content hash (no arXiv id, DOI or
link exists to use).
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
DATE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}$")


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


def to_rss(seed_name: str, date: str, pairs: list[tuple[str, str]]) -> str:
    items = []
    for title, abstract in pairs:
        guid = "seed-" + hashlib.sha256(title.encode("utf-8")).hexdigest()[:16]
        items.append(
            "    <item>\n"
            f"      <title>{escape(title)}</title>\n"
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


def main(argv: list[str]) -> int:
    seeds = Path(argv[1]) if len(argv) > 1 else HERE.parents[2] / "shared" / "seeds"
    for seed in sorted(seeds.glob("*.txt")):
        date, pairs = parse_seed(seed.read_text(encoding="utf-8"))
        number = seed.name.split("_", 1)[0]
        out = HERE / f"daily-papers-{number}.rss"
        out.write_text(to_rss(seed.name, date, pairs), encoding="utf-8")
        print(f"{out.name}: {len(pairs)} papers, listing date {date}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
