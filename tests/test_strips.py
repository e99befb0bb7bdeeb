"""
nanoocr/strips.py: cutting a paragraph or a long line into the strips a strip model reads.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanoocr.engine import preprocess
from nanoocr.reader import strip_views
from nanoocr.strips import text_strips, find_lines, background_and_ink, join_lines, FONT_FRAC, INK_FRAC
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


def test_faint_ink_keeps_its_strokes_and_paper_grain_stays_paper():
    """Pencil-grey text (ink at ~0.65 of the paper) is ink of its own class: the threshold follows it
    above INK_MAX instead of shaving its strokes, while a noise-only image still has no ink at all."""
    from PIL import Image, ImageDraw
    from nanoocr.strips import _ink, _normalised
    from nanoocr.synth import get_font
    font = get_font("DejaVuSans.ttf", 28)

    def ink_of(colour):
        im = Image.new("RGB", (420, 48), (246, 244, 240))
        ImageDraw.Draw(im).text((10, 8), "faint pencil marks", font=font, fill=(colour,) * 3)
        return _ink(_normalised(im)[1]).sum()
    black, pencil = ink_of(0), ink_of(160)
    assert pencil >= 0.8 * black, (pencil, black)
    rng = np.random.default_rng(0)
    grain = Image.fromarray(rng.integers(225, 256, (60, 300, 3), dtype=np.uint8))
    assert _ink(_normalised(grain)[1]).sum() == 0
