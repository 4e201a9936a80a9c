"""The HTML part opened in headless Chromium: screenshots at phone and desktop widths, and
the layout measured in the page (Playwright): no horizontal overflow, tap targets of at
least 44 x 44 CSS px on a phone, the numbered summary on top linking to the papers.

Chromium (Debian package ``chromium``) is installed by the set-up when absent
and the tests run as root with apt-get; otherwise they are skipped with the
reason, unless PAPERPOST_REQUIRE_BROWSER is set, in which case they fail.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.domain import Digest, DigestItem, Paper
from pipeline.render import Renderer, sample_digest

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _find() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _install() -> str:
    """Why installing was impossible, or "" after an attempt."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 and command[1] == "install":
            return f"apt-get install chromium failed: {done.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find()
    if path is None:
        why = _install()
        path = _find()
        if path is None:
            reason = f"headless Chromium is missing and could not be installed ({why or '?'})"
            if os.environ.get("PAPERPOST_REQUIRE_BROWSER"):
                pytest.fail(reason)
            pytest.skip(reason)
    return path


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: np.ndarray  # (height, width, 3) uint8

    def share_unlike(self, colour: np.ndarray, tolerance: int = 8) -> float:
        distance = np.abs(self.rgb.astype(np.int16) - colour.astype(np.int16)).max(axis=2)
        return float((distance > tolerance).mean())

    def mean_luminance(self) -> float:
        weights = np.array([0.2126, 0.7152, 0.0722])
        return float((self.rgb @ weights).mean() / 255)

    def white_span(self, row: int) -> tuple[int, int]:
        """First and last column of pure white in ``row`` (the content card)."""
        columns = np.flatnonzero((self.rgb[row] == 255).all(axis=1))
        return (int(columns[0]), int(columns[-1])) if columns.size else (-1, -1)


def decode_png(data: bytes) -> Image:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium writes) with zlib, struct and numpy."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = bit_depth = colour_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, bit_depth, colour_type = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
    assert bit_depth == 8 and colour_type in (2, 6), (bit_depth, colour_type)
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int64)
    for row in range(height):
        kind_of_filter, line = int(raw[row, 0]), raw[row, 1:].astype(np.int64)
        if kind_of_filter == 1:  # Sub: running sum per channel
            line = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride)
        elif kind_of_filter == 2:  # Up
            line = line + previous
        elif kind_of_filter in (3, 4):  # Average, Paeth: sequential, byte by byte
            values = line.tolist()
            up_row = previous.tolist()
            for i in range(stride):
                left = values[i - channels] if i >= channels else 0
                up = up_row[i]
                if kind_of_filter == 3:
                    values[i] = (values[i] + (left + up) // 2) & 0xFF
                    continue
                up_left = up_row[i - channels] if i >= channels else 0
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                values[i] = (values[i] + predictor) & 0xFF
            line = np.array(values, dtype=np.int64)
        line &= 0xFF
        out[row] = line
        previous = line
    rgb = out.reshape(height, width, channels)[:, :, :3]
    return Image(width, height, rgb)


def screenshot(
    chromium: str, page: Path, tmp_path: Path, width: int, height: int, *extra: str
) -> Image:
    out = tmp_path / f"shot-{width}x{height}{'-'.join(extra)}.png"
    profile = tmp_path / f"profile-{width}-{len(extra)}"
    command = [
        chromium,
        *FLAGS,
        *extra,
        f"--user-data-dir={profile}",
        f"--screenshot={out}",
        f"--window-size={width},{height}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.exists(), f"no screenshot; chromium said: {done.stderr[-800:]}"
    return decode_png(out.read_bytes())


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "digest.html"
    path.write_text(Renderer().render(sample_digest()).html, encoding="utf-8")
    return path


SIZES = [("phone", 375, 812, (0, 374)), ("desktop", 1280, 800, (304, 975))]


@pytest.mark.parametrize(
    ("width", "height", "card"), [(w, h, c) for _, w, h, c in SIZES], ids=[n for n, *_ in SIZES]
)
def test_screenshot_is_not_blank_and_fits_the_width(
    chromium: str, page: Path, tmp_path: Path, width: int, height: int, card: tuple[int, int]
) -> None:
    image = screenshot(chromium, page, tmp_path, width, height)
    assert (image.width, image.height) == (width, height)
    assert image.share_unlike(image.rgb[0, 0]) > 0.05  # text, rules, the white card
    assert len(np.unique(image.rgb.reshape(-1, 3), axis=0)) > 8
    assert image.mean_luminance() > 0.6  # light by default
    # The content card: the whole width on a phone, 640 px + padding centred on a desktop.
    left, right = image.white_span(height - 5)
    assert abs(left - card[0]) <= 2 and abs(right - card[1]) <= 2, (left, right)


def test_dark_mode_turns_the_page_dark(chromium: str, page: Path, tmp_path: Path) -> None:
    image = screenshot(chromium, page, tmp_path, 375, 812, "--force-dark-mode")
    assert image.mean_luminance() < 0.35
    assert image.share_unlike(image.rgb[0, 0]) > 0.05


# -- layout, driven by Playwright over the same Chromium -----------------------------------
LAYOUT_SIZES = [("phone", 390, 844), ("desktop", 1280, 800)]
_MEASURE = """() => {
  const doc = document.documentElement;
  const links = [...document.querySelectorAll('a')].map(a => {
    const r = a.getBoundingClientRect();
    return {text: a.textContent.trim().slice(0, 40), w: r.width, h: r.height};
  });
  const toc = [...document.querySelectorAll('.toc li a')].map(a => a.getAttribute('href'));
  const targets = toc.map(h => !!document.getElementById(h.slice(1)));
  const pre = document.querySelector('.preheader').getBoundingClientRect();
  const box = el => { const r = el.getBoundingClientRect(); return [r.top, r.bottom, r.height]; };
  const summary = document.querySelector('.summary');
  const items = [...document.querySelectorAll('.item')].map(el => box(el)[0]);
  return {scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth, links, toc, targets,
          preheader: [pre.width, pre.height], summary: summary && box(summary), items};
}"""


def layout_digest() -> Digest:
    """The sample plus papers that stress the layout: a long unbroken title, a paper known
    only by title (a search link), many authors, enough matches to be grouped."""
    base = sample_digest()
    bare = Paper(
        id="sha:e711222a",
        title="Supercalifragilisticexpialidocious" * 3 + " with a long title",
        abstract="A paper known only by title and abstract. It has no links.",
        authors=tuple(f"Author {n}" for n in range(12)),
    )
    extra = tuple(
        DigestItem(
            dataclasses.replace(base.items[1].paper, id=f"2006.1{n:04d}", title=f"Paper {n}"),
            0.3,
            reason,
            more_url="https://digest.lab.example/f/more/x",
            less_url="https://digest.lab.example/f/less/x",
        )
        for n, reason in enumerate(["by Jonathan Ho", "in cs.LG", "matched ti:diffusion"] * 2)
    )
    return dataclasses.replace(
        base, items=(*base.items, DigestItem(bare, 0.2, "close to your about text (0.31)"), *extra)
    )


@pytest.fixture(scope="module")
def playwright_browser(chromium: str) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("PAPERPOST_REQUIRE_BROWSER"):
            pytest.fail("the playwright package is not installed")
        pytest.skip("the playwright package is not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("width", "height"), [(w, h) for _, w, h in LAYOUT_SIZES], ids=[n for n, *_ in LAYOUT_SIZES]
)
def test_layout_fits_has_big_tap_targets_and_the_summary_on_top(
    playwright_browser: object, tmp_path: Path, width: int, height: int
) -> None:
    digest = layout_digest()
    path = tmp_path / "digest.html"
    path.write_text(Renderer().render(digest).html, encoding="utf-8")
    page = playwright_browser.new_page(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    try:
        page.goto(path.as_uri())
        found = page.evaluate(_MEASURE)
        shot = decode_png(page.screenshot(full_page=False))
    finally:
        page.close()
    assert found["scrollWidth"] <= found["innerWidth"] == width, found["scrollWidth"]
    shown = len(digest.items) + len(digest.trending)
    assert found["toc"] == [f"#paper-{n}" for n in range(1, shown + 1)]
    assert all(found["targets"]), found["targets"]
    assert found["preheader"] == [0, 0]  # hidden preview text
    # The summary is shown, and above every paper: its box ends before the first item's
    # (the first in document order, and the highest on the page) begins.
    assert found["summary"] is not None, "no .summary block"
    summary_top, summary_bottom, summary_height = found["summary"]
    assert summary_height > 0, found["summary"]
    assert len(found["items"]) == shown
    first_item_top = found["items"][0]
    assert min(found["items"]) == first_item_top, found["items"]
    assert summary_top < summary_bottom <= first_item_top, (found["summary"], first_item_top)
    links = found["links"]
    assert len(links) > 3 * shown
    if width <= 480:  # narrow screens: every link is at least 44 x 44 CSS px
        small = [link for link in links if link["w"] < 44 or link["h"] < 44]
        assert not small, small[:5]
    assert (shot.width, shot.height) == (width, height)
    assert shot.share_unlike(shot.rgb[0, 0]) > 0.05 and shot.mean_luminance() > 0.6
