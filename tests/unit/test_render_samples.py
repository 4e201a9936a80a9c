"""The shipped sample listings and their links (config/samples/build_samples.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

from pipeline.sources.normalise import arxiv_id_in

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_samples", SAMPLES / "build_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_titles_match_exactly_once_normalised() -> None:
    build = builder()
    assert build.normal_title("LoRA:  Low-Rank\nAdaptation — of LLMs") == build.normal_title(
        "lora low rank adaptation of llms"
    )
    assert build.normal_title("LoRA") != build.normal_title("LoRA 2")
    known = build.arxiv_ids_by_title()
    assert len(known) > 3000  # the bench captures and the test fixtures
    # A real capture's paper is found by its title, in any case and punctuation.
    assert known[build.normal_title("SPARSITY-CERTIFYING graph decompositions")] == "0704.0002"


def test_relinking_gives_matching_items_an_arxiv_link_and_keeps_the_rest(tmp_path: Path) -> None:
    build = builder()
    listing = tmp_path / "daily-papers-001.rss"
    shutil.copy(SAMPLES / "daily-papers-001.rss", listing)
    original = listing.read_text(encoding="utf-8")
    assert build.relink(listing, {}) == (0, 110)
    assert listing.read_text(encoding="utf-8") == original  # a faithful round trip
    first_title = original.split("<item>", 1)[1].split("<title>", 1)[1].split("</title>", 1)[0]
    ids = {build.normal_title(first_title): "2403.01234"}
    assert build.relink(listing, ids) == (1, 110)
    relinked = listing.read_text(encoding="utf-8")
    assert relinked.count("<link>https://arxiv.org/abs/2403.01234</link>") == 1
    assert arxiv_id_in("https://arxiv.org/abs/2403.01234") == ("2403.01234", None)


def test_captures_of_every_shape_are_read(tmp_path: Path) -> None:
    build = builder()
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"id": "2501.00001", "title": "One"}) + "\n", encoding="utf-8")
    atom = tmp_path / "b.xml"
    atom.write_text(
        '<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>http://arxiv.org/abs/2501.00002v3'
        "</id><title>Two</title></entry></feed>",
        encoding="utf-8",
    )
    hf = tmp_path / "c.json"
    hf.write_text(json.dumps([{"paper": {"id": "2501.00003", "title": "Three"}}]))
    assert build.arxiv_ids_by_title((jsonl, atom, hf, tmp_path / "missing.jsonl")) == {
        "one": "2501.00001",
        "two": "2501.00002",
        "three": "2501.00003",
    }
