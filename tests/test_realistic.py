"""
tasks/realistic.py (the user-like test rows and the scan rows) and what scripts/vision_eval.py and
scripts/report.py do with them: determinism, answers that are exactly the drawn text in glyphs the font
has, the right families per row, images of the kind each row claims (1-bit, TIFF / G4 files, greyscale,
tinted, pencil-grey), the strips cutter finding their lines, per-family CER and length checks.
~1 minute on one shared core (the scan pages are 1-4 Mpixel), plus ~40 s of Tesseract.
"""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tasks import realistic as R

PAGE_ROWS = ("pages", "bilevel_pages", "tiff_pages", "fax_pages", "grey_scans", "colour_scans", "turned")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    # module-scoped, so conftest's per-test NANOOCR_BASE_DIR is not set yet: the TIFF rows' files
    # must not land in ~/.cache/nanoocr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOOCR_BASE_DIR", str(tmp_path_factory.mktemp("realistic_base")))
        yield {row: R.realistic_samples(row) for row in R.ROWS}


def png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image):
    """A sample's image as bytes to compare: a PNG of a PIL image, a file's own bytes."""
    if isinstance(image, str):
        with open(image, "rb") as f:
            return f.read()
    return png(image)


def load(sample):
    """The RGB image the model sees: through the loader a user's file goes through."""
    from nanoocr.image_process import load_image
    return load_image(sample["image"])


def test_rows_sizes_and_fields(rows):
    assert set(R.TRAIN_FAMILIES).isdisjoint(R.HELD_OUT_FAMILIES)
    for row, samples in rows.items():
        assert len(samples) == R.SIZES[row], row
        assert len({s["id"] for s in samples}) == len(samples)
        for s in samples:
            assert s["prompt"] == "Free OCR."
            if row in R.FILE_ROWS:
                assert isinstance(s["image"], str) and os.path.isfile(s["image"]), (row, s["image"])
            else:
                assert s["image"].mode == R.ROW_MODE.get(row, "RGB"), (row, s["image"].mode)
            assert s["answer"].strip() and all(line and line == line.strip() for line in s["answer"].split("\n")), (row, s["answer"])
            assert s["family"] in R.row_families(row), (row, s["family"])
            assert s["tess_psm"] == R.TESS_PSM.get(row, 7 if row in R.LINE_ROWS else 6)
        n_lines = [s["answer"].count("\n") + 1 for s in samples]
        if row in R.LINE_ROWS:
            assert set(n_lines) == {1} and all(3 <= len(s["answer"].split()) <= 10 for s in samples)
        elif row == "paragraphs":
            assert 2 <= min(n_lines) and max(n_lines) <= 5
        elif row in PAGE_ROWS:
            assert 10 <= min(n_lines) and max(n_lines) <= 21, row  # 10-20 lines and maybe a title
        elif row == "photos":
            assert all(260 <= len(s["answer"]) <= 340 for s in samples)
        elif row == "symbols":
            assert set(n_lines) == {12}
        elif row == "columns":
            assert 20 <= min(n_lines), n_lines  # a page filled in 2-3 columns


@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_rows_are_deterministic(rows):
    for row in R.ROWS:
        again = R.realistic_samples(row, limit=3)  # a TIFF row's files: under this test's own base dir
        for a, b in zip(rows[row][:3], again):
            assert (a["id"], a["answer"], a["family"]) == (b["id"], b["answer"], b["family"])
            assert pixels(a["image"]) == pixels(b["image"]), f"{row} {a['id']}: same seed, different pixels (or file bytes)"
    other = R.realistic_samples("clean_lines", limit=3, seed=1)
    assert [s["answer"] for s in other] != [s["answer"] for s in rows["clean_lines"][:3]]


def test_unseen_fonts_only_held_out(rows):
    fams = {s["family"] for s in rows["unseen_fonts"]}
    assert fams <= set(R.HELD_OUT_FAMILIES) and len(fams) >= 3
    for row in R.ROWS:
        if row != "unseen_fonts":
            assert not {s["family"] for s in rows[row]} & set(R.HELD_OUT_FAMILIES), row


def test_every_glyph_is_in_its_font(rows):
    from nanoocr.typefaces import font_covers, font_index
    idx = font_index()
    for row, samples in rows.items():
        for s in samples:
            assert idx[s["font"]].family == s["family"]
            assert font_covers(s["font"], s["answer"]), (row, s["font"], s["answer"])
    # and the check itself can fail: no text font here has a CJK glyph
    assert not font_covers(rows["clean_lines"][0]["font"], "漢")


def test_symbols_carry_symbols_and_accents(rows):
    wanted = set(R.SYMBOL_CHARS + R.ACCENT_CHARS)
    for s in rows["symbols"]:
        assert len(set(s["answer"]) & wanted) >= 5, s["answer"]
    seen = set("".join(s["answer"] for s in rows["symbols"]))
    assert set("«»„”“$%@{}[]<>") <= seen and len(seen & set(R.ACCENT_CHARS)) >= 8


def test_degraded_lines_differ_from_clean():
    # same text and font as the clean crop would draw, then degraded: mostly grey noise and blur
    import numpy as np
    for s in R.realistic_samples("degraded_lines", limit=6):
        a = np.asarray(s["image"].convert("L"))
        assert 0 < (a < 128).mean() < 0.6 and len(np.unique(a)) > 20, s["id"]


def test_open_samples_realistic():
    from tasks.sources import open_samples
    samples, desc = open_samples("realistic:pages")
    assert len(samples) == R.SIZES["pages"] and desc.startswith("realistic:pages")
    assert samples[0]["answer"] == R.realistic_samples("pages", limit=1)[0]["answer"]
    assert len(open_samples("realistic:photos", limit=2)[0]) == 2
    with pytest.raises(ValueError, match="clean_lines"):
        open_samples("realistic")
    with pytest.raises(ValueError, match="photos"):
        open_samples("realistic:nope")


def test_compute_metrics_per_family_and_lengths():
    from scripts.vision_eval import compute_metrics, format_report
    base = dict(tokens=5, seconds=0.1, answer_tokens=4, vision_tokens=32)
    records = [dict(base, id="a", ref="abcdef", pred="abcdef", family="F1", tesseract_pred="abcdef", tesseract_seconds=0.1),
               dict(base, id="b", ref="abcdef", pred="abcdefabcdef", family="F2", tesseract_pred="abcxef", tesseract_seconds=0.1),
               dict(base, id="c", ref="xyz", pred="xyz", family="F2", tesseract_pred="", tesseract_seconds=0.1),
               {"id": "d", "image": "d.png", "error": "unreadable"}]
    m = compute_metrics(records)
    assert m["n"] == 4 and m["failed"] == 1
    assert m["model"]["per_family"] == {"F1": 0.0, "F2": pytest.approx(6 / 9)}
    assert m["model"]["max_len_ratio"] == 2.0 and m["model"]["n_over_1.5x"] == 1
    assert m["tesseract"]["per_family"] == {"F1": 0.0, "F2": pytest.approx(4 / 9)}
    assert m["tesseract"]["max_len_ratio"] == 1.0 and m["tesseract"]["n_over_1.5x"] == 0
    text = format_report(m)
    assert "max len ratio" in text and "#pred > 1.5x answer" in text and "F2" in text
    # records without families: no per-family table
    assert "per_family" not in compute_metrics([{k: v for k, v in records[0].items() if k != "family"}])["model"]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="apt-get install tesseract-ocr")
def test_tesseract_reads_clean_lines():
    """The sets are legible: an off-the-shelf reader gets clean line crops nearly right."""
    from nanoocr.metrics import cer
    from nanoocr.tesseract import run_tesseract
    samples = R.realistic_samples("clean_lines", limit=16)
    preds = [run_tesseract(s["image"], psm=s["tess_psm"])[0] for s in samples]
    assert cer(preds, [s["answer"] for s in samples]) < 0.1


def test_add_tesseract_uses_sample_psm(monkeypatch):
    from scripts import vision_eval
    seen = []
    monkeypatch.setattr(vision_eval, "run_tesseract", lambda image, lang, psm: (seen.append(psm) or "x", 0.0))
    samples = R.realistic_samples("clean_lines", limit=1) + R.realistic_samples("pages", limit=1)
    records = [{"id": s["id"]} for s in samples]
    vision_eval.add_tesseract(records, samples, psm=3, sample_psm=True)
    vision_eval.add_tesseract(records, samples, psm=3)  # an explicit --tesseract_psm wins
    assert seen == [7, 6, 3, 3]


def test_report_card_realistic_table(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from scripts.vision_eval import compute_metrics
    ev = tmp_path / "eval"
    ev.mkdir()
    base = dict(tokens=5, seconds=0.1, answer_tokens=4, vision_tokens=32, tesseract_seconds=0.1)
    recs = [dict(base, ref="abcd", pred="abcdabcd", family="P052", tesseract_pred="abcx"),
            dict(base, ref="abcd", pred="abcd", family="Carlito", tesseract_pred="abcd")]
    (ev / "realistic_unseen_fonts.metrics.json").write_text(json.dumps(compute_metrics(recs)))
    (ev / "realistic_photos.metrics.json").write_text(json.dumps(compute_metrics([dict(r, family="FreeSans") for r in recs])))
    (ev / "realistic_fax_pages.metrics.json").write_text(json.dumps(compute_metrics(recs[1:])))
    env = dict(os.environ, NANOOCR_BASE_DIR=str(tmp_path))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "scripts.report", "--tag=none"], cwd=repo, env=env, check=True, capture_output=True)
    card = (tmp_path / "report" / "report.md").read_text()
    assert "| row | n | nanoocr CER | tesseract CER | ratio | max len ratio | #>1.5x |" in card
    # rows in ROWS order; CER 4/8 vs tesseract 1/8: ratio 4.00; one prediction 2x its answer
    assert card.index("| unseen_fonts | 2 | 0.5000 | 0.1250 | 4.00 | 2.00 | 1 |") < card.index("| photos | 2 |") \
        < card.index("| fax_pages | 1 | 0.0000 | 0.0000 | — | 1.00 | 0 |")  # a scan row after the first rows
    assert "| family | unseen_fonts | photos | fax_pages |" in card and "| P052 | 1.000 | — | — |" in card and "| FreeSans | — | 0.500 | — |" in card \
        and "| Carlito | 0.000 | — | 0.000 |" in card
    assert "| lines | — | — | (not run) |" in card  # the other evals as before


def test_columns_and_turned_rows(rows):
    """Issue 26's layouts as rows: pages in 2 and 3 columns (the renderer's, split by a gutter: no
    answer line is wider than a column), and pages turned by each of 90, 180 and 270 degrees."""
    from nanoocr.layout import runs
    cols = rows["columns"]
    assert len(cols) == R.SIZES["columns"] == 8
    for i, s in enumerate(cols):
        assert s["image"].size == (1024, 1024) and s["image"].mode == "RGB"
        assert s["family"] in R.TRAIN_FAMILIES and s["tess_psm"] == 3
        # k columns: k - 1 blank gutters (0.04 of the width: ~41 px) run down the page below any title
        ink = np.asarray(s["image"].convert("L"))[400:] < 128
        inked = np.flatnonzero(ink.any(0))
        gutters = [b - a for a, b in runs(~ink[:, inked[0]:inked[-1]].any(0)) if b - a >= 15]
        assert len(gutters) == 1 + i % 2, (s["id"], gutters)
    turns = []
    for i, s in enumerate(rows["turned"]):
        k, upright = R.turned_page(i)
        turns.append(k)
        assert np.array_equal(np.asarray(s["image"]), np.asarray(upright.transpose(R.TURNS[k]))), s["id"]
        assert not np.array_equal(np.asarray(s["image"].resize(upright.size)), np.asarray(upright)), s["id"]
        # the pages are portrait (height >= 1.3 width): a quarter turn lies them on their side
        w, h = s["image"].size
        assert (w > h) == (k in (90, 270)), (s["id"], k, s["image"].size)
        assert s["tess_psm"] == 1  # Tesseract gets its orientation detection, as users would run it
    assert len(rows["turned"]) == 12 and sorted(set(turns)) == [90, 180, 270], turns


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="apt-get install tesseract-ocr")
@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_tesseract_reads_columns_and_turned_rows(rows):
    """The baseline is a real one: Tesseract with automatic page segmentation reads the columns in
    order, and with orientation detection reads the turned pages (measured: columns 0.044, turned 0.012)."""
    from nanoocr.metrics import cer
    from nanoocr.tesseract import run_tesseract
    for row in ("columns", "turned"):
        samples = rows[row][2:5]
        preds = [run_tesseract(s["image"], psm=s["tess_psm"])[0] for s in samples]
        assert cer(preds, [s["answer"] for s in samples]) < 0.05, (row, preds[0][:200])


# -----------------------------------------------------------------------------
# Issue 24: every kind of scan

def _ink_share(img):
    return float((np.asarray(img.convert("L")) < 128).mean())


def test_scan_rows_are_their_kind(rows):
    from nanoocr.image_process import sniff_image_type
    for row in ("bilevel_lines", "bilevel_pages"):
        for s in rows[row]:
            assert s["image"].mode == "1" and 0.005 < _ink_share(s["image"]) < 0.5, (row, s["id"])
            assert set(np.unique(np.asarray(load(s)))) == {0, 255}, (row, s["id"])  # black and white, nothing between
    compressions = set()
    for row, allowed in (("tiff_pages", {"raw", "packbits", "tiff_lzw"}), ("fax_pages", {"group4"})):
        for s in rows[row]:
            path = s["image"]
            assert path.endswith(".tif") and os.sep + os.path.join("data", "realistic", row) + os.sep in path, path
            with open(path, "rb") as f:
                assert sniff_image_type(f.read(8)) == "tiff", path
            with Image.open(path) as im:
                assert (im.format, im.mode) == ("TIFF", "1"), (path, im.format, im.mode)
                assert im.info["compression"] in allowed, (path, im.info["compression"])
                compressions.add(im.info["compression"])
                dpi = im.info["dpi"]
                if row == "fax_pages":
                    assert dpi == (204, 196) and im.size[0] >= 1728, (path, dpi, im.size)  # fine-mode fax, A4 width
                else:
                    assert 200 <= dpi[0] == dpi[1] <= 300, (path, dpi)
            rgb = load(s)
            assert rgb.mode == "RGB" and set(np.unique(np.asarray(rgb))) == {0, 255} and 0.005 < _ink_share(rgb) < 0.3, path
    assert len(compressions) >= 3, compressions  # the plain 1-bit TIFFs use more than one compression
    for s in rows["grey_scans"]:
        a = np.asarray(s["image"])
        assert s["image"].mode == "L" and len(np.unique(a)) > 100, s["id"]  # grey levels, not thresholded
        assert 180 <= np.median(a) <= 245 and np.percentile(a, 0.5) < 100, s["id"]  # grey paper, dark ink
    for s in rows["colour_scans"]:
        paper = np.median(np.asarray(s["image"]).reshape(-1, 3), axis=0)
        assert paper.max() - paper.min() >= 10 and paper.min() >= 150, (s["id"], paper)  # tinted, light
    for s in rows["pencil_lines"]:
        g = np.asarray(s["image"].convert("L"), np.float32)
        ink, paper = np.percentile(g, 1), np.median(g)
        assert ink >= 85 and 40 <= paper - ink <= 160, (s["id"], ink, paper)  # grey on off-white, never black


def _small_specks(img):
    import cv2
    ink = (np.asarray(img.convert("L")) < 128).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] <= 4).sum())


def test_bilevel_rows_with_and_without_speckle(rows):
    specks = [_small_specks(s["image"]) for s in rows["bilevel_lines"]]
    assert sum(c == 0 for c in specks) >= 8 and sum(c >= 10 for c in specks) >= 8, specks
    pages = [_small_specks(s["image"]) for s in rows["bilevel_pages"]]
    assert min(pages) == 0 and max(pages) >= 100, pages
    assert min(_small_specks(Image.open(s["image"])) for s in rows["fax_pages"]) >= 100  # every fax is specked


def test_strips_find_the_lines_of_bilevel_and_g4_rows(rows):
    """The cutter reads 1-bit images (they once read as nothing): every text line of these
    crops and pages is found, one per answer line."""
    from nanoocr.strips import text_strips
    for row, k in (("bilevel_lines", 8), ("bilevel_pages", 2), ("tiff_pages", 2), ("fax_pages", 2)):
        for s in rows[row][:k]:
            strips = text_strips(load(s), 32, 256)
            assert strips, f"{row} {s['id']}: no strips from a 1-bit image"
            assert len({li for li, _ in strips}) == s["answer"].count("\n") + 1, (row, s["id"])


def test_bilevel_line_has_ink():
    """Regression: a black-and-white line has two grey levels, OpenCV's Otsu threshold is
    then 0 (the top of the dark class), and `smooth < otsu` found no ink, so 1-bit scans read as empty."""
    from nanoocr.strips import background_and_ink, text_strips
    from nanoocr.typefaces import get_font
    font = get_font("DejaVuSans.ttf", 36)
    img = Image.new("L", (520, 60), 255)
    ImageDraw.Draw(img).text((10, 8), "Bilevel scans read too", font=font, fill=0)
    bw = img.point(lambda v: 255 if v > 128 else 0).convert("1")
    assert bw.mode == "1" and set(np.unique(np.asarray(bw.convert("L")))) == {0, 255}
    paper, ink = background_and_ink(bw.convert("RGB"))
    assert paper == (255, 255, 255) and 0.05 < ink.mean() < 0.5, ink.mean()
    strips = text_strips(bw.convert("RGB"), 32, 256)
    assert len(strips) >= 2 and {li for li, _ in strips} == {0}, len(strips)  # four words, one line


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="apt-get install tesseract-ocr")
@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_tesseract_reads_scan_rows(rows):
    """The scan rows are legible: Tesseract reads a few samples of each (measured: lines ~0.003-0.006,
    pages 0.006-0.07, the specked fax pages worst)."""
    from nanoocr.metrics import cer
    from nanoocr.tesseract import run_tesseract
    for row in ("bilevel_lines", "pencil_lines", "bilevel_pages", "tiff_pages", "fax_pages", "grey_scans", "colour_scans"):
        samples = rows[row][:6 if row in R.LINE_ROWS else 1]
        preds = [run_tesseract(load(s), psm=s["tess_psm"])[0] for s in samples]
        c = cer(preds, [s["answer"] for s in samples])
        assert c < 0.12, (row, c, preds[0][:200])
def test_train_families_are_the_cpu_recipes_fonts():
    """TRAIN_FAMILIES (the families the realistic rows draw as "seen") are exactly the ones
    presets/cpu.toml trains on, and no held-out family is among them: change one, change both."""
    from nanoocr.configurator import read_preset
    fonts = read_preset("cpu")["synth_fonts"].split(",")
    assert tuple(fonts) == R.TRAIN_FAMILIES
    assert not set(R.HELD_OUT_FAMILIES) & set(fonts)


def test_page_titles_have_a_bold_in_every_training_family():
    """A page's title is set in typefaces.bold_sibling of its body font: every family the rows draw
    ships an upright bold, so no title silently falls back to the body's weight."""
    from nanoocr.typefaces import bold_sibling, upright_styles
    for family in R.TRAIN_FAMILIES:
        for spec in upright_styles(family):
            bold = bold_sibling(spec)
            assert bold.family == family and bold is not spec and "bold" in bold.style.lower(), (family, spec.name)
