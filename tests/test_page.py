"""
nanoocr/page.py: finding a photographed page (its outline, else its region) and flattening it.
"""

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanoocr.page import (
    EDGE_TRIM,
    _outline_quad,
    enclosing_quad,
    find_page,
    unwarp_page,
)
from nanoocr.strips import clean_image, find_lines
from nanoocr.typefaces import get_font, list_fonts
from tasks.realistic import photo_corners, realistic_samples


def corner_error(found, true):
    """The farthest corner's distance from the truth, as a share of the page's diagonal."""
    return float(np.linalg.norm(np.asarray(found) - true, axis=1).max() / np.linalg.norm(true[2] - true[0]))


def text_page(w=600, h=800, paper=238, lines=14, seed=0, ink=25):
    """A white page with lines of words (what a phone is pointed at)."""
    rng = np.random.default_rng(seed)
    font = get_font(next(f.name for f in list_fonts() if f.family == "DejaVu Serif" and f.style == "Book"), 22)
    im = Image.new("RGB", (w, h), (paper,) * 3)
    d = ImageDraw.Draw(im)
    words = "the of page light table corner shadow reading quick brown fox jumps over lazy dog".split()
    for i in range(lines):
        d.text((50, 60 + i * 48), " ".join(rng.choice(words, 6)), font=font, fill=(ink,) * 3)
    return im


def photo(corners, size=(900, 700), surface=(95, 75, 55), light=None, blur=2.0, noise=4.0, seed=0, lines=14, ink=25):
    """text_page() warped onto a surface so that its corners land at `corners` (tl, tr, br, bl;
    they may lie outside the frame), times a light field light(x, y) in (0, 1] (default even),
    blurred, with sensor noise. -> (RGB uint8 array, corners as float [4, 2])."""
    page = np.asarray(text_page(lines=lines, ink=ink))
    ph, pw = page.shape[:2]
    W, H = size
    corners = np.array(corners, np.float32)
    M = cv2.getPerspectiveTransform(np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32), corners)
    warped = cv2.warpPerspective(page, M, (W, H), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones((ph, pw), np.float32), M, (W, H), flags=cv2.INTER_LINEAR)[..., None]
    img = warped * inside + np.array(surface, np.float32) * (1 - inside)
    if light is not None:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        img = img * light(xx, yy)[..., None]
    img = cv2.GaussianBlur(img, (0, 0), blur) + np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), corners


# Photos whose outline Canny cannot close: each is checked to defeat the outline step first, so the
# test is about the region step (a case the outline step handles would prove nothing here).
HARD = {
    # the page runs off the right edge: its top-right corner is outside, its outline cut open there
    "runs off the frame": lambda: photo([(120, 90), (960, 40), (840, 640), (90, 600)]),
    # tilted, and its top-left corner outside the frame
    "corner cut off": lambda: photo([(-60, -40), (780, 60), (840, 650), (70, 600)]),
    # a grey desk nearly as bright as the paper, the photo soft: edges too weak for Canny's thresholds
    "low-contrast surface": lambda: photo([(150, 80), (760, 110), (730, 640), (120, 610)], surface=(165, 165, 160),
                                          blur=4.0),
    # a soft shadow (a hand, a phone) over the middle of the left side, on a light wooden desk: the
    # shaded paper is as dark as the desk there, and that stretch of edge too faint for Canny
    "shadow across an edge": lambda: photo([(140, 70), (780, 100), (760, 650), (110, 620)], surface=(165, 150, 130),
                                           light=lambda x, y: 1 - 0.75 * np.exp(-((x - 120) ** 2 + (y - 350) ** 2)
                                                                                / (2 * 100 ** 2)), blur=2.5),
}


@pytest.mark.parametrize("case", sorted(HARD))
def test_a_page_without_a_closed_outline_is_found_by_its_region(case):
    img, true = HARD[case]()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert _outline_quad(grey) is None, f"{case}: the outline step finds this page, so it tests nothing here"
    quad = find_page(img)
    assert quad is not None, f"{case}: no page found"
    assert corner_error(quad, true) < 0.03, (case, quad.tolist(), true.tolist())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_realistic_photos_are_found_at_their_corners(seed):
    # seeds other than 0: realistic:photos' seed 0 is a test set, never a development one
    for i, s in enumerate(realistic_samples("photos", seed=seed)):
        img, true = np.asarray(s["image"]), photo_corners(i, seed)
        quad = find_page(img)
        frame = np.zeros(img.shape[:2], np.uint8)
        cv2.fillConvexPoly(frame, np.round(true).astype(np.int32), 1)
        if frame.mean() > 0.9 and quad is None:  # a page filling the frame is as good as a scan: nothing to cut
            continue
        assert quad is not None, f"seed {seed} photo {i}: no page found"
        assert corner_error(quad, true) < 0.04, f"seed {seed} photo {i}"


def test_a_grey_photo_is_found_too():
    img, true = HARD["runs off the frame"]()
    quad = find_page(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    assert quad is not None and corner_error(quad, true) < 0.03


def boxed_table_page():
    """A white page with a ruled table box in the middle: a closed quadrilateral outline, but the
    same white outside it as inside."""
    im = text_page(w=700, h=900, paper=250)
    ImageDraw.Draw(im).rectangle((40, 200, 660, 700), outline=(0, 0, 0), width=3)
    return im


def bilevel(im):
    a = np.asarray(im.convert("L"))
    return Image.fromarray(np.where(a > 128, 255, 0).astype(np.uint8)).convert("RGB")


NOT_PHOTOS = {
    "scan": lambda: realistic_samples("pages", seed=1, limit=1)[0]["image"],
    "paragraph crop": lambda: realistic_samples("paragraphs", seed=1, limit=1)[0]["image"],
    "line crop": lambda: realistic_samples("clean_lines", seed=1, limit=1)[0]["image"],
    "white page with a boxed table": boxed_table_page,
    "bilevel scan": lambda: bilevel(realistic_samples("pages", seed=2, limit=1)[0]["image"]),
    "light text on dark paper": lambda: Image.fromarray(255 - np.asarray(text_page())),
    "blank": lambda: Image.new("RGB", (800, 600), (240, 240, 240)),
}


@pytest.mark.parametrize("case", sorted(NOT_PHOTOS))
def test_scans_and_crops_have_no_page(case):
    im = NOT_PHOTOS[case]()
    assert find_page(np.asarray(im)) is None, case
    assert unwarp_page(im) is im  # left exactly as it is


def test_unwarp_flattens_the_page_to_its_proportions():
    img, true = HARD["corner cut off"]()
    flat = unwarp_page(Image.fromarray(img))
    tl, tr, br, bl = true  # unwarp_page's size: the longer of each pair of opposite sides, less the trimmed edges
    want = (max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)), max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    want = np.array(want) * (1 - 2 * EDGE_TRIM)
    assert np.allclose(flat.size, want, rtol=0.04), (flat.size, want)
    # its border is the page's paper, not the surface (the corner outside the frame repeats the edge)
    a = np.asarray(flat.convert("L"), np.float32)
    assert np.median(np.concatenate([a[:5].ravel(), a[-5:].ravel(), a[:, :5].ravel(), a[:, -5:].ravel()])) > 180


def test_enclosing_quad_extends_a_cut_corner():
    # a rectangle 100..300 x 100..250 whose top-left corner the frame cut off along x + y = 240
    pts = np.array([(140, 100), (300, 100), (300, 250), (100, 250), (100, 140)])
    quad = enclosing_quad(pts)
    got = sorted(map(tuple, np.round(quad).astype(int).tolist()))
    assert got == [(100, 100), (100, 250), (300, 100), (300, 250)]
    assert enclosing_quad(np.array([(0, 0), (10, 0), (5, 8)])) is None  # a triangle has no 4 sides


def test_the_region_step_gives_the_same_page_every_time():
    # GrabCut seeds its colour models from OpenCV's global RNG, which anything else may have moved
    img, _ = HARD["corner cut off"]()
    first = find_page(img)
    cv2.setRNGSeed(12345)
    cv2.randu(np.zeros((64, 64), np.float32), 0, 1)
    assert np.array_equal(find_page(img), first)


def test_a_page_photographed_in_dim_light_is_not_taken_for_light_text_on_dark_paper():
    # paper at 0.4 of its brightness: the flattened page's median is ~95, below the level at which a
    # whole image counts as dark paper (strips._normalised inverts those); a found page never is
    img, _ = photo([(140, 70), (780, 100), (760, 650), (110, 620)], light=lambda x, y: np.full_like(x, 0.4))
    assert np.median(img) < 110 and find_page(img) is not None
    clean, ink = clean_image(Image.fromarray(img))
    assert len(find_lines(ink)) == 14  # text_page's lines, dark ink on white
    assert np.median(np.asarray(clean)) > 200


def test_a_photographed_page_reads_as_a_crisp_scan_and_a_blank_one_as_blank():
    # faint grey print, slightly out of focus: the flattened page is sharpened (strips.PHOTO_SHARPEN),
    # or the soft thin strokes fall above the ink threshold and 13 of the 14 lines are lost (measured);
    # the sensor noise of a blank page, amplified by the sharpening too, is still no ink, and neither
    # are the page's edges
    corners = [(140, 70), (780, 100), (760, 650), (110, 620)]
    img, _ = photo(corners, blur=1.0, noise=5.0, ink=150)
    clean, ink = clean_image(Image.fromarray(img))
    assert len(find_lines(ink)) == 14
    blank, _ = photo(corners, blur=2.5, noise=6.0, lines=0)
    assert find_page(blank) is not None
    assert not clean_image(Image.fromarray(blank))[1].any()
