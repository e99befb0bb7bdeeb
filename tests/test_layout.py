"""
nanoocr/layout.py: columns found before lines, pages turned by 90 / 180 / 270 degrees turned back.
The renderer's own pages are the test set: its glyph boxes say where each answer line is, and
its answer lists the lines in reading order (title, then each column top to bottom).
"""

import numpy as np
import pytest
from PIL import Image

from nanoocr import synth
from nanoocr.layout import detect_orientation, find_columns
from nanoocr.strips import (
    background_and_ink,
    clean_image,
    column_lines,
    find_lines,
    text_strips,
)
from tasks.realistic import realistic_samples

N_PAGES = 20  # per case; the bar is >= 95%, so at most one page of 20 may miss
# a page turned k degrees clockwise (PIL's ROTATE_n turns counter-clockwise)
TURNS = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


def answer_line_boxes(answer, char_boxes):
    """[(answer line index, (x0, y0, x1, y1))] for every inked line of a rendered page: the union of
    its glyph boxes (render_annotated's boxes are keyed by the character's index in the answer)."""
    out, offset = [], 0
    for j, line in enumerate(answer.split("\n")):
        boxes = [char_boxes[k] for k in range(offset, offset + len(line)) if k in char_boxes]
        if boxes:
            b = np.array(boxes)
            out.append((j, (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())))
        offset += len(line) + 1
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def reads_column_by_column(img, answer, char_boxes):
    """Do the lines text_strips cuts (column_lines on clean_image's ink) come out in the answer's
    order, and find >= 90% of its lines? Each found line is matched to the answer line it
    overlaps most (IoU >= 0.5 of their ink boxes)."""
    grey, ink = clean_image(img)
    assert grey.info["orientation"] == 0
    truth = answer_line_boxes(answer, char_boxes)
    order = []
    for x0, t, x1, b in column_lines(ink):
        cols = np.flatnonzero(ink[t:b, x0:x1].any(0))
        box = (x0 + cols[0], t, x0 + cols[-1] + 1, b)
        j, best = max(truth, key=lambda jt: iou(box, jt[1]))
        if iou(box, best) >= 0.5:
            order.append(j)
    return order == sorted(set(order)) and len(order) >= 0.9 * len(truth)


@pytest.mark.parametrize("columns", [2, 3])
def test_multi_column_pages_read_column_by_column(columns):
    ok = 0
    for i in range(N_PAGES):
        # no tilt, so the cleaned image keeps the renderer's coordinates (deskew is tested elsewhere)
        img, _, answer, info = synth.render_annotated(0, i, "page", "test", columns=columns,
                                                  degrade=dict(rotate_p=0.0))
        ok += reads_column_by_column(img, answer, info["boxes"])
    assert ok >= 0.95 * N_PAGES, f"{columns}-column pages read column by column: {ok}/{N_PAGES}"


def test_single_column_images_are_cut_exactly_as_before():
    # no gutter: one region, the whole image, so the lines are find_lines' own
    images = [synth.render(0, i, "page", "test", columns=1)[0] for i in range(6)]
    images += [s["image"] for row in ("pages", "paragraphs", "clean_lines", "photos")
               for s in realistic_samples(row, limit=4)]
    for img in images:
        _, ink = clean_image(img)
        assert find_columns(ink) == [(0, 0, ink.shape[1], ink.shape[0])]
        assert column_lines(ink) == [(0, t, ink.shape[1], b) for t, b in find_lines(ink)]


def test_receipts_stay_row_by_row():
    # a receipt's label and amount columns are a table, not text columns: each row is one line
    for i in range(12):
        _, ink = clean_image(synth.render(0, i, "receipt", "test")[0])
        assert len(find_columns(ink)) == 1, f"receipt {i} was cut into columns"


def test_turned_pages_are_detected():
    # pages of 1, 2 and 3 columns turned k degrees clockwise; the misses are pages in a thin
    # monospaced oblique font, whose letters break into fragments: no evidence, so not turned
    right = {k: 0 for k in (0, 90, 180, 270)}
    for columns in (1, 2, 3):
        for i in range(N_PAGES):
            _, ink = background_and_ink(synth.render(0, i, "page", "test", columns=columns)[0])
            for k in right:
                right[k] += detect_orientation(np.ascontiguousarray(np.rot90(ink, -k // 90))) == k
    assert right[0] == 3 * N_PAGES, f"an upright page was turned: {right}"
    assert all(n >= 0.95 * 3 * N_PAGES for n in right.values()), f"right of {3 * N_PAGES}: {right}"


def test_a_turned_page_is_turned_back_before_deskew():
    # end to end through clean_image: the same ink as the upright page, so the same strips
    img = synth.render(0, 3, "page", "test", columns=2, degrade="none")[0]
    upright = text_strips(img, 32, 256)
    for k, transpose in TURNS.items():
        grey, _ = clean_image(img.transpose(transpose))
        assert grey.info["orientation"] == k and grey.size == img.size
        strips = text_strips(img.transpose(transpose), 32, 256)
        assert [li for li, _ in strips] == [li for li, _ in upright]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(strips, upright))


def test_blank_and_one_line_images_are_not_turned():
    assert detect_orientation(np.zeros((300, 400), bool)) == 0
    assert clean_image(Image.new("RGB", (400, 300), "white"))[0].info["orientation"] == 0
    for s in realistic_samples("clean_lines", limit=12):
        for transpose in (None, *TURNS.values()):
            img = s["image"] if transpose is None else s["image"].transpose(transpose)
            _, ink = background_and_ink(img)
            assert detect_orientation(ink) == 0, f"{s['id']} {transpose}: a one-line crop was turned"


def test_upright_realistic_images_are_not_turned():
    # the images users bring, upright: never turned (a wrong turn costs a whole page)
    for row in ("paragraphs", "pages", "photos", "symbols"):
        for s in realistic_samples(row, limit=8):
            assert clean_image(s["image"])[0].info["orientation"] == 0, f"{row} {s['id']} was turned"
