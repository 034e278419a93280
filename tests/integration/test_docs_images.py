"""The pictures the docs show exist, and are real screenshots: PNGs that are not blank.

The dashboard's screenshots in ``docs/images/`` are taken by the browser scenario
(``FLUXO_UPDATE_DOCS_SCREENSHOTS=1 pytest tests/browser/test_ui_scenario.py``); a page
that names a picture must find it, and a picture must show something.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.browser import helpers

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
MAX_BYTES = 300_000
"""The most a picture of the docs may weigh: the site ships every one."""
PICTURE = re.compile(
    r"!\[[^\]]*\]\((?P<markdown>[^)\s]+)[^)]*\)|<img\s[^>]*src=\"(?P<html>[^\"]+)\""
)


def references() -> list[tuple[Path, str]]:
    """Every (page, picture path) of docs/, the pictures on other sites left out."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_ext" in page.parts:
            continue
        for match in PICTURE.finditer(page.read_text()):
            target = match["markdown"] or match["html"]
            if not re.match(r"[a-z]+:", target):
                found.append((page, target))
    return found


def blank_reasons(path: Path) -> list[str]:
    """Why the picture at ``path`` is not a screenshot worth showing; empty when it is."""
    with Image.open(path) as image:
        kind = image.format
        rgb = image.convert("RGB")
    reasons = [] if kind == "PNG" else [f"a {kind} file, not a PNG"]
    colours = rgb.getcolors(maxcolors=4096)
    count = 4096 if colours is None else len(colours)
    dominant = 0.0 if colours is None else max(n for n, _ in colours) / (rgb.width * rgb.height)
    stddev = ImageStat.Stat(rgb.convert("L")).stddev[0]
    if count < helpers.MIN_COLOURS or stddev < helpers.MIN_GRAY_STDDEV:
        reasons.append(f"blank: {count} colours, grayscale stddev {stddev:.2f}")
    if dominant > helpers.MAX_DOMINANT_SHARE:
        reasons.append(f"blank: one colour on {dominant:.2%} of the pixels")
    if rgb.width < 400 or rgb.height < 300:
        reasons.append(f"too small to read: {rgb.width}x{rgb.height}")
    return reasons


@pytest.mark.parametrize(
    ("page", "target"), references(), ids=lambda value: getattr(value, "name", value)
)
def test_every_picture_a_page_shows_exists_and_is_not_blank(page: Path, target: str) -> None:
    picture = (page.parent / target).resolve()
    assert picture.is_file(), f"{page.relative_to(ROOT)} shows {target}: no file {picture}"
    assert blank_reasons(picture) == [], picture


def test_the_pictures_in_docs_images_are_light_real_screenshots() -> None:
    pictures = sorted(IMAGES.glob("*"))
    assert pictures, f"no pictures in {IMAGES}"
    for picture in pictures:
        assert picture.suffix == ".png", f"{picture.name}: the docs' pictures are PNGs"
        assert picture.stat().st_size <= MAX_BYTES, f"{picture.name}: over {MAX_BYTES} bytes"
        assert blank_reasons(picture) == [], picture.name


def test_a_blank_picture_is_told_apart(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (800, 600), "white").save(blank)
    assert blank_reasons(blank) == ["blank: 1 colours, grayscale stddev 0.00",
                                    "blank: one colour on 100.00% of the pixels"]  # fmt: skip
    jpeg = tmp_path / "photo.png"
    Image.effect_noise((800, 600), 60).convert("RGB").save(jpeg, "JPEG")
    assert blank_reasons(jpeg) == ["a JPEG file, not a PNG"]
