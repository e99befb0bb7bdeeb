"""
nanoocr/layout.py: columns found before lines, pages turned by 90 / 180 / 270 degrees turned back.
The renderer's own pages are the test set: its glyph boxes say where each answer line is, and
its answer lists the lines in reading order (title, then each column top to bottom).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nanoocr import reader, synth
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


@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
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


# -----------------------------------------------------------------------------
# Up or down settled by the model where the layout cannot tell (reader.settle_turn)

# a page of small print: no clear baseline evidence either way up (layout.orientation says (0, False)
# upright and turned over)
AMBIGUOUS_PAGE = 44
STRIP_MODEL = SimpleNamespace(encoder=SimpleNamespace(config=SimpleNamespace(image_size=256, stride=16)))


def fake_reader(good_views, good=0.9, bad=0.3):
    """A stand-in for joint_decode.read_strips whose confidence is `good` for a strip whose pixels
    are one of good_views' and `bad` for any other: the model's confidence, with which way up is
    right known to the test. Also counts the strips it reads."""
    good_px = [p["global_view"] for _, p in good_views]
    calls = []

    def read_strips(model, tokenizer, images, prompts, decoder="gpt", **kwargs):
        calls.append(len(images))
        return [dict(text="x", num_tokens=1, finish_reason="stop",
                     confidence=good if any(torch.equal(p["global_view"], g) for g in good_px) else bad)
                for p in images]
    return read_strips, calls


def same_pixels(a, b):
    return len(a) == len(b) and all(la == lb and torch.equal(pa["global_view"], pb["global_view"])
                                    for (la, pa), (lb, pb) in zip(a, b))


def test_an_ambiguous_page_is_turned_the_way_the_model_reads_with_more_confidence(monkeypatch):
    img = synth.render(0, AMBIGUOUS_PAGE, "page", "test", 640, 640)[0]
    up = reader.strip_views(STRIP_MODEL, img, (32, 256))
    assert "other_way_up" in up[0][1], "the page is no longer ambiguous: pick another for this test"
    upright = [(li, {k: v for k, v in p.items() if k != "other_way_up"}) for li, p in up]
    over = reader.strip_views(STRIP_MODEL, img.transpose(Image.Transpose.ROTATE_180), (32, 256))
    # the layout guesses upright for the page turned over too; the other way up is the upright page
    assert same_pixels(over[0][1]["other_way_up"]["views"], upright)
    assert not same_pixels(over[:1], upright[:1])
    fake, calls = fake_reader(upright)
    monkeypatch.setattr(reader, "read_strips", fake)
    assert same_pixels(reader.settle_turn(STRIP_MODEL, None, over, "p"), upright)  # turned back by the model
    assert same_pixels(reader.settle_turn(STRIP_MODEL, None, up, "p"), upright)    # and upright stays upright
    # only a few lines are read to settle it, not the page (137 strips)
    assert all(n <= 2 * reader.SETTLE_LINES * 6 for n in calls), calls
    # the same pages, the model sure of the other way: then that way wins (confidence decides, nothing else)
    fake, _ = fake_reader(upright, good=0.3, bad=0.9)
    monkeypatch.setattr(reader, "read_strips", fake)
    settled = reader.settle_turn(STRIP_MODEL, None, over, "p")
    assert len(settled) == len(over) and not same_pixels(settled, upright)
    assert all("other_way_up" not in p for _, p in settled)
    # generate_views settles before it reads: every strip it reads is the upright page's
    fake, calls = fake_reader(upright)
    monkeypatch.setattr(reader, "read_strips", fake)
    out = reader.generate_views(STRIP_MODEL, None, [over], ["p"], batch_size=64)[0]
    assert out["views"] == len(upright) and all(line["confidence"] == 0.9 for line in out["lines"])


def test_a_page_without_letters_to_measure_is_not_offered_to_the_model():
    # this symbols page gives the up / down test no letters (0 measured): on the speedrun model its
    # [ ] { } < > « » read with more confidence upside down, so such a page stays as it is
    s = realistic_samples("symbols", limit=3)[2]
    grey = clean_image(s["image"])[0]
    assert grey.info["orientation"] == 0 and grey.info["orientation_sure"]


def test_a_clear_page_is_not_read_twice():
    # clear evidence: the layout decides alone, and no other way up is carried (costs nothing)
    img = synth.render(0, 40, "page", "test", 640, 640)[0]
    for transpose in (None, *TURNS.values()):
        views = reader.strip_views(STRIP_MODEL, img if transpose is None else img.transpose(transpose), (32, 256))
        assert views and all("other_way_up" not in p for _, p in views)


def test_the_server_settles_each_page_of_a_pdf(monkeypatch, tmp_path):
    # a PDF joins its pages' views into one job (serve_queue.decode_pdf); a page turned over is
    # settled before generation and the pages are cut back by their settled line counts
    from fpdf import FPDF

    from nanoocr.documents import open_pages
    from scripts import serve_queue
    page = synth.render(0, AMBIGUOUS_PAGE, "page", "test", 640, 640)[0]
    images = [synth.render(0, 40, "page", "test", 640, 640)[0], page.transpose(Image.Transpose.ROTATE_180), page]
    pdf = FPDF(unit="pt")
    for k, im in enumerate(images):
        im.save(tmp_path / f"{k}.png")
        pdf.add_page(format=im.size)
        pdf.image(str(tmp_path / f"{k}.png"), x=0, y=0, w=im.size[0], h=im.size[1])
    app = SimpleNamespace(model=STRIP_MODEL, dpi=72, max_pixels=10 ** 8, max_pages=5, max_words=0)
    views, pages = serve_queue.OcrServer.decode_pdf(app, bytes(pdf.output()), "three.pdf", (32, 256))
    assert sum("other_way_up" in p for _, p in views) == 2, "pages 2 and 3 should be ambiguous at 72 dpi"
    # the right way up of every page, each read alone
    rendered = [im for _, im in open_pages(bytes(pdf.output()), "three.pdf", 72)]
    alone = [reader.strip_views(STRIP_MODEL, im, (32, 256)) for im in rendered]
    right = [alone[0], alone[2], alone[2]]  # page 2 is page 3 turned over: its right way is page 3's
    right = [[(li, {k: v for k, v in p.items() if k != "other_way_up"}) for li, p in r] for r in right]
    fake, _ = fake_reader([v for r in right for v in r])
    monkeypatch.setattr(reader, "read_strips", fake)
    views = reader.settle_turn(STRIP_MODEL, None, views, "p")
    serve_queue.settle_pages(pages, views)
    assert [p["n_lines"] for p in pages] == [len({li for li, _ in r}) for r in right]
    out = reader.generate_views(STRIP_MODEL, None, [views], ["p"], batch_size=256)[0]
    split = serve_queue.split_pages(out["lines"], pages)
    assert [len(p["lines"]) for p in split] == [len({li for li, _ in r}) for r in right]
    assert all(line["confidence"] == 0.9 for p in split for line in p["lines"])
