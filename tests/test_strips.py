"""
nanoocr/strips.py: cutting a paragraph or a long line into the strips a strip model reads.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanoocr.engine import preprocess
from nanoocr.reader import strip_views
from nanoocr.strips import (
    FONT_FRAC,
    INK_FRAC,
    background_and_ink,
    find_lines,
    join_lines,
    text_strips,
)
from nanoocr.typefaces import get_font, list_fonts

H, W = 32, 256


def dejavu(size):
    name = next(f.name for f in list_fonts() if f.family == "DejaVu Sans" and f.style == "Book")
    return get_font(name, size)


def paragraph(lines, size=24, pitch=1.5, paper="white", ink="black", margin=20):
    font = dejavu(size)
    w = int(max(font.getlength(t) for t in lines)) + 2 * margin
    h = int(size * pitch * (len(lines) - 1) + size * 1.3) + 2 * margin
    im = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(im)
    for i, t in enumerate(lines):
        d.text((margin, margin + i * size * pitch), t, font=font, fill=ink)
    return im


LINES = ["the quick brown fox jumps", "over the lazy dog, and", "then it goes home again"]


def ink_rows(strip):
    _, ink = background_and_ink(strip)
    rows = np.flatnonzero(ink.any(1))
    return rows[-1] - rows[0] + 1


def test_a_paragraph_becomes_lines_of_word_groups():
    strips = text_strips(paragraph(LINES), H, W, max_words=2)
    line_ids = [li for li, _ in strips]
    # every line cut into groups of at most 2 words: 5 words -> 3 pieces, 5 -> 3, 5 -> 3
    assert line_ids == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for _, s in strips:
        assert s.size == (W, H)
        # letters as tall as the renderer's: font ~0.6 H, ink of a line with ascenders ~0.9 of that
        assert abs(ink_rows(s) - FONT_FRAC * INK_FRAC * H) < 0.3 * H
        # left-aligned with a small margin, like a training strip
        _, ink = background_and_ink(s)
        assert 1 <= np.flatnonzero(ink.any(0))[0] <= 8


def test_no_word_cap_packs_as_many_words_as_fit():
    strips = text_strips(paragraph(LINES), H, W)
    per_line = [sum(li == k for li, _ in strips) for k in range(3)]
    assert all(1 <= n < 3 for n in per_line)  # fewer pieces than with a 2-word cap, still several lines


def test_light_text_on_dark_paper_and_touching_lines():
    dark = paragraph(LINES, paper=(20, 30, 40), ink=(240, 240, 200))
    assert [li for li, _ in text_strips(dark, H, W, max_words=2)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # line pitch below the ink height: descenders of one line touch ascenders of the next
    tight = paragraph(["gjpqy gjpqy", "bdfhk bdfhk", "gjpqy bdfhk"], size=24, pitch=0.95)
    _, ink = background_and_ink(tight)
    assert len(find_lines(ink)) == 3


def test_a_tall_line_beside_short_ones_is_not_cut():
    # "on" and "ace" have neither ascenders nor descenders: half as tall as "Hilly jog"
    im = paragraph(["on", "Hilly jog", "ace"], size=26, pitch=1.6)
    _, ink = background_and_ink(im)
    assert len(find_lines(ink)) == 3


def test_dots_over_i_and_j_stay_with_their_line():
    im = paragraph(["iii jjj iii"], size=30)
    _, ink = background_and_ink(im)
    assert len(find_lines(ink)) == 1


def test_a_blank_image_has_no_strips_and_a_long_word_is_squeezed():
    assert text_strips(Image.new("RGB", (300, 80), "white"), H, W) == []
    strips = text_strips(paragraph(["Supercalifragilisticexpialidocious"], size=30), H, W)
    assert len(strips) == 1 and strips[0][1].size == (W, H)


def test_join_lines():
    assert join_lines([" a b", "c ", "d", ""], [0, 0, 1, 2]) == "a b c\nd\n"


@pytest.mark.parametrize("size", [(W, H), (W + 8, H)])
def test_strip_views_reads_an_exact_strip_as_it_is(size):
    class Enc:  # strip_views only needs the encoder's config for preprocess
        class config:
            image_size, stride = 256, 16
    model = type("M", (), {"encoder": Enc})()
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).text((3, 6), "hello there", font=dejavu(18), fill="black")
    views = strip_views(model, im, (H, W))
    if size == (W, H):  # the renderer's size: one view, exactly what preprocess makes
        assert len(views) == 1 and torch_equal(views[0][1]["global_view"], preprocess(model, im, (H, W))["global_view"])
    else:  # any other size is cut (here: one line, one piece)
        assert [li for li, _ in views] == [0] and views[0][1]["global_view"].shape[-2:] == (H, W)


def torch_equal(a, b):
    return bool((a == b).all())


def test_paper_grain_stays_paper():
    """A noise-only image has no ink at all (Otsu's threshold is capped at INK_MAX of the paper)."""
    from nanoocr.strips import _ink, _normalised
    rng = np.random.default_rng(0)
    grain = Image.fromarray(rng.integers(225, 256, (60, 300, 3), dtype=np.uint8))
    assert _ink(_normalised(grain)[1]).sum() == 0


# -----------------------------------------------------------------------------
# Line boxes in the input's pixels : the renderer's own line boxes are the truth

def rendered_line_boxes(img, answer, info):
    """The renderer's ink box of each answer line: the union of its glyph boxes (render_annotated's)."""
    boxes, start = [], 0
    for line in answer.split("\n"):
        glyphs = [info["boxes"][i] for i in range(start, start + len(line)) if i in info["boxes"]]
        start += len(line) + 1
        if glyphs:
            boxes.append(tuple(f(g[k] for g in glyphs) for k, f in zip(range(4), (min, min, max, max))))
    return boxes


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter) if inter else 0.0


def strip_line_boxes(strips):
    """text_strips' line boxes, one per line (every piece of a line carries its line's box)."""
    out = {}
    for li, s in strips:
        out.setdefault(li, s.info["line_box"])
    return [out[k] for k in sorted(out)]


def rotate_box(box, deg, size):
    """The upright box around `box` turned by PIL's rotate(deg) about the image centre."""
    cx, cy = size[0] / 2, size[1] / 2
    r = np.radians(deg)
    pts = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]], float) - (cx, cy)
    # PIL turns counter-clockwise on screen: y points down, so x' = x cos + y sin, y' = -x sin + y cos
    p = np.stack([pts[:, 0] * np.cos(r) + pts[:, 1] * np.sin(r), -pts[:, 0] * np.sin(r) + pts[:, 1] * np.cos(r)], 1)
    p += (cx, cy)
    return (*p.min(0), *p.max(0))


@pytest.mark.parametrize("deg", [0.0, 2.5])
def test_line_boxes_overlap_the_renderers_own(deg):
    """Rendered one-column pages (level, and turned 2.5 degrees so the deskew's rotation must be
    undone): each line's box, in the input's pixels, overlaps the renderer's box of that line at
    IoU >= 0.5 for >= 95% of the lines; every word-group box lies inside its line's box."""
    from nanoocr.synth import render_annotated
    good = total = 0
    for index in range(4):
        img, _, answer, info = render_annotated(0, index, "page", "test", 640, 640, degrade="none", columns=1)
        truth = rendered_line_boxes(img, answer, info)
        if deg:
            img = img.rotate(deg, resample=Image.BICUBIC, fillcolor="white")
            truth = [rotate_box(b, deg, img.size) for b in truth]
        strips = text_strips(img, H, W)
        found = strip_line_boxes(strips)
        assert len(found) == len(truth), f"page {index}: {len(found)} lines cut, the renderer drew {len(truth)}"
        scores = [iou(a, b) for a, b in zip(found, truth)]
        good += sum(s >= 0.5 for s in scores)
        total += len(scores)
        for li, s in strips:
            l, t, r, b = s.info["box"]
            L, T, R, B = s.info["line_box"]
            assert L <= l < r <= R and T <= t < b <= B and 0 <= L and R <= img.size[0] and B <= img.size[1]
    assert total > 20 and good >= 0.95 * total, f"{good}/{total} lines at IoU >= 0.5"


def test_boxes_map_back_through_the_page_flattening():
    """A rendered page photographed in perspective (warped onto a dark table, find_page's case):
    the reader flattens it, and the line boxes come back in the photo's pixels -- over the lines as
    the photo shows them (the renderer's boxes sent through the same warp), not the flat page's."""
    import cv2

    from nanoocr.strips import box_back
    from nanoocr.synth import render_annotated
    assert box_back(np.eye(3), (40, 30, 120, 50), (400, 400)) == [40, 30, 120, 50]
    img, _, answer, info = render_annotated(0, 0, "page", "test", 640, 640, degrade="none", columns=1)
    M = cv2.getPerspectiveTransform(np.float32([[0, 0], [640, 0], [640, 640], [0, 640]]),
                                    np.float32([[90, 70], [770, 110], [740, 800], [60, 760]]))
    photo = Image.fromarray(cv2.warpPerspective(np.asarray(img), M, (840, 860), flags=cv2.INTER_CUBIC,
                                                borderValue=(60, 50, 40)))

    def warped(b):
        corners = np.array([[[b[0], b[1]]], [[b[2], b[1]]], [[b[2], b[3]]], [[b[0], b[3]]]], np.float64)
        p = cv2.perspectiveTransform(corners, M).reshape(4, 2)
        return (*p.min(0), *p.max(0))
    truth = [warped(b) for b in rendered_line_boxes(img, answer, info)]
    found = strip_line_boxes(text_strips(photo, H, W))
    assert len(found) == len(truth) > 15
    scores = [iou(a, b) for a, b in zip(found, truth)]
    assert min(scores) >= 0.8, scores  # measured 0.92-0.99
