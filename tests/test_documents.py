"""
Documents in, structure out (issue 26): PDFs and multi-page TIFFs read page by page, stdin, a
corrupt PDF page, line boxes and confidences in the records, `read --format text|jsonl|hocr|pdf`,
the progress bar. Every document is made here from the project's renderer (nanoocr/synth.py);
the model is a small random one saved as a real checkpoint (tests/serve_fixtures.py).
"""

import io
import json
import re
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pypdfium2 as pdfium
import pytest
from fpdf import FPDF
from PIL import Image

from nanoocr import reader
from nanoocr.checkpoint_manager import load_model
from nanoocr.documents import count_pages, open_pages
from nanoocr.synth import render
from scripts import read as read_script
from tests.serve_fixtures import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_TOKENS = "4"  # a random model: what is read does not matter, only that every path agrees


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("docbase"))


def page_image(k, size):
    """Page k of a test document: a rendered page of prose, each page its own size (so the order
    the pages come back in is visible in their sizes)."""
    img, _, answer = render(0, k, "page", "test", size[1], size[0], degrade="none", columns=1, font_px=(14, 16))
    return img


SIZES = [(300, 220), (260, 200), (240, 180)]  # (w, h) of pages 1..3


def make_pdf(images, break_page=None):
    """A PDF with one page per image, the image filling the page at 72 dpi (1 pixel = 1 point, so a
    page rendered at --dpi 72 has the image's size). break_page (1-based): that page's /Type is
    spoiled so PDFium cannot load it (same length: the cross-reference offsets stay right)."""
    pdf = FPDF(unit="pt")
    for im in images:
        pdf.add_page(format=im.size)
        pdf.image(im, x=0, y=0, w=im.size[0], h=im.size[1])
    data = bytes(pdf.output())
    if break_page is not None:
        at = [m.start() for m in re.finditer(rb"/Type /Page\b", data)][break_page - 1]
        data = data[:at] + b"/Type /Xage" + data[at + len(b"/Type /Page"):]
    return data


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    pages = [page_image(k, s) for k, s in enumerate(SIZES)]
    (d / "three.pdf").write_bytes(make_pdf(pages))
    (d / "broken.pdf").write_bytes(make_pdf(pages, break_page=2))
    pages[0].save(d / "two.tif", save_all=True, append_images=[pages[1]])
    for k, p in enumerate(pages):
        p.save(d / f"p{k + 1}.png")
    return d


def read_jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_read(capsys, *argv):
    rc = read_script.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_open_pages_pdf_tiff_and_a_broken_page(docs):
    got = [(k, im.size) for k, im in open_pages(str(docs / "three.pdf"), dpi=72)]
    assert got == [(1, SIZES[0]), (2, SIZES[1]), (3, SIZES[2])]
    got = [(k, im.size) for k, im in open_pages(str(docs / "three.pdf"), dpi=144)]
    assert [s for _, s in got] == [(2 * w, 2 * h) for w, h in SIZES]  # rendered at the dpi asked for
    frames = list(open_pages((docs / "two.tif").read_bytes(), name="t"))
    assert [(k, im.size) for k, im in frames] == [(1, SIZES[0]), (2, SIZES[1])]
    assert np.array_equal(np.asarray(frames[1][1]), np.asarray(Image.open(docs / "p2.png").convert("RGB")))
    broken = list(open_pages(str(docs / "broken.pdf"), dpi=72))
    assert [k for k, _ in broken] == [1, 2, 3]
    assert isinstance(broken[1][1], ValueError) and "broken.pdf page 2" in str(broken[1][1])
    assert [im.size for k, im in broken if k != 2] == [SIZES[0], SIZES[2]]
    assert [count_pages(str(docs / n)) for n in ("three.pdf", "two.tif", "p1.png")] == [3, 2, 1]
    # a page limit: the pages over it are one error, not silently dropped
    limited = list(open_pages(str(docs / "three.pdf"), dpi=72, max_pages=2))
    assert [k for k, _ in limited] == [1, 2, 3] and "more than the limit of 2" in str(limited[2][1])


def test_a_pdf_reads_in_page_order_and_a_tiff_reads_every_frame(ckpt, docs, capsys):
    rc, out, err = run_read(capsys, docs / "three.pdf", docs / "two.tif", "--model", ckpt, "--dpi", "72",
                            "--max_tokens", MAX_TOKENS, "--format", "jsonl", "--batch_size", "2")
    assert rc == 0, err
    recs = read_jsonl(out)
    assert [(r["image"].rsplit("/", 1)[-1], r["page"]) for r in recs] == \
        [("three.pdf", 1), ("three.pdf", 2), ("three.pdf", 3), ("two.tif", 1), ("two.tif", 2)]
    # each page is its own image: the same text as that page read alone as a PNG
    rc, out, _ = run_read(capsys, *(docs / f"p{k}.png" for k in (1, 2, 3)), "--model", ckpt,
                          "--max_tokens", MAX_TOKENS, "--format", "jsonl")
    alone = read_jsonl(out)
    assert [r["text"] for r in recs[:3]] == [r["text"] for r in alone]
    assert [r["text"] for r in recs[3:]] == [r["text"] for r in alone[:2]]
    for r in recs:  # line boxes inside the page, confidences in [0, 1]
        assert r["lines"] and r["text"] == "\n".join(line["text"] for line in r["lines"])
        w, h = SIZES[r["page"] - 1]
        for line in r["lines"]:
            l, t, rr, b = line["box"]
            assert 0 <= l < rr <= w and 0 <= t < b <= h
            assert line["confidence"] is None or 0 <= line["confidence"] <= 1
            for word in line.get("words", []):
                assert l <= word["box"][0] < word["box"][2] <= rr
    # the progress bar on stderr: 5 pages counted up front (3 in the PDF, 2 TIFF frames), with a rate / ETA
    assert re.search(r"nanoocr read: 100%.*\| 5/5 \[\d\d:\d\d<\d\d:\d\d", err), err


def test_a_corrupt_pdf_page_is_one_error_record_and_the_rest_are_read(ckpt, docs, capsys):
    rc, out, err = run_read(capsys, docs / "broken.pdf", "--model", ckpt, "--dpi", "72", "--max_tokens", MAX_TOKENS,
                            "--format", "jsonl")
    assert rc == 1
    recs = read_jsonl(out)
    assert [r["page"] for r in recs] == [1, 2, 3]
    assert ["error" in r for r in recs] == [False, True, False]
    assert "page 2" in recs[1]["error"] and "2/3 pages" in err


def test_stdin_reads_an_image_or_a_pdf(ckpt, docs, capsys, monkeypatch):
    rc, expected, _ = run_read(capsys, docs / "p1.png", "--model", ckpt, "--max_tokens", MAX_TOKENS)
    assert rc == 0
    for name in ("p1.png", "three.pdf"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((docs / name).read_bytes())))
        rc, out, err = run_read(capsys, "-", "--model", ckpt, "--dpi", "72", "--max_tokens", MAX_TOKENS)
        assert rc == 0, err
        assert out.split("\f\n")[0] == expected  # the PDF prints its 3 pages, page breaks between
        assert out.count("\f\n") == (2 if name.endswith(".pdf") else 0)


def test_hocr_parses_and_its_boxes_lie_inside_the_pages(ckpt, docs, capsys, tmp_path):
    rc, _, err = run_read(capsys, docs / "three.pdf", docs / "p1.png", "--model", ckpt, "--dpi", "72",
                          "--max_tokens", MAX_TOKENS, "--format", "hocr")
    assert rc == 0, err
    # one file per document, beside it
    for name, n_pages in (("three.hocr", 3), ("p1.hocr", 1)):
        root = ET.parse(docs / name).getroot()  # well-formed XML
        ns = {"h": "http://www.w3.org/1999/xhtml"}
        pages = root.findall(".//h:div[@class='ocr_page']", ns)
        assert len(pages) == n_pages
        for page in pages:
            _, _, pw, ph = bbox(page)
            lines = page.findall(".//h:span[@class='ocr_line']", ns)
            assert lines
            for line in lines:
                l, t, r, b = bbox(line)
                assert 0 <= l < r <= pw and 0 <= t < b <= ph
                assert 0 <= int(re.search(r"x_wconf (\d+)", line.get("title")).group(1)) <= 100
                words = line.findall("h:span[@class='ocrx_word']", ns)
                assert words and all(w.text for w in words)
    # --out: one file with every page
    rc, _, _ = run_read(capsys, docs / "three.pdf", docs / "p1.png", "--model", ckpt, "--dpi", "72",
                        "--max_tokens", MAX_TOKENS, "--format", "hocr", "--out", tmp_path / "all.hocr")
    root = ET.parse(tmp_path / "all.hocr").getroot()
    assert len(root.findall(".//{http://www.w3.org/1999/xhtml}div")) == 4


def bbox(el):
    return [int(v) for v in re.search(r"bbox (\d+) (\d+) (\d+) (\d+)", el.get("title")).groups()]


def test_the_searchable_pdfs_text_layer_is_the_text_read_prints(ckpt, docs, capsys, tmp_path):
    rc, printed, _ = run_read(capsys, docs / "three.pdf", "--model", ckpt, "--dpi", "72", "--max_tokens", MAX_TOKENS)
    assert rc == 0
    printed_pages = printed[:-1].split("\n\f\n")
    out = tmp_path / "searchable.pdf"
    rc, _, err = run_read(capsys, docs / "three.pdf", "--model", ckpt, "--dpi", "72", "--max_tokens", MAX_TOKENS,
                          "--format", "pdf", "--out", out)
    assert rc == 0, err
    rc, jsonl, _ = run_read(capsys, docs / "three.pdf", "--model", ckpt, "--dpi", "72", "--max_tokens", MAX_TOKENS,
                            "--format", "jsonl")
    records = read_jsonl(jsonl)
    doc = pdfium.PdfDocument(str(out))
    assert len(doc) == 3
    for i, expected in enumerate(printed_pages):
        # each line's text lies on its line: the text layer inside the line's box is that line
        page, text = doc[i], doc[i].get_textpage()
        height = page.get_size()[1]
        for line in records[i]["lines"]:
            l, t, r, b = line["box"]  # pixels = points at 72 dpi; PDF y runs upwards
            inside = text.get_text_bounded(left=l - 1, bottom=height - b + 0.25, right=r + 1, top=height - t - 0.25)
            want = re.sub("[\x00-\x1f\x7f]", "", line["text"]).strip()
            assert inside.replace("\r\n", " ").strip() == want, (line, inside)
        text.close()
        page.close()
        page = doc[i]
        assert tuple(round(v) for v in page.get_size()) == SIZES[i]  # the original page, same size
        layer = page.get_textpage().get_text_range().replace("\r\n", "\n")
        # PDFium puts a line break between the lines drawn; blank lines hold no text to draw, and
        # control characters (the random model writes some) no glyph
        expected = re.sub("[\x00-\x09\x0b-\x1f\x7f]", "", expected)
        assert [s.strip() for s in layer.split("\n") if s.strip()] == [s.strip() for s in expected.split("\n") if s.strip()]
        # the page image is there: the page renders as the scan, not blank (the text is invisible)
        rendered = np.asarray(page.render(scale=1).to_pil().convert("L"))
        original = np.asarray(Image.open(docs / f"p{i + 1}.png").convert("L"))
        assert np.abs(rendered.astype(int) - original.astype(int)).mean() < 3
        page.close()
    doc.close()
    # one file per document beside it without --out
    rc, _, _ = run_read(capsys, docs / "two.tif", "--model", ckpt, "--max_tokens", MAX_TOKENS, "--format", "pdf")
    doc = pdfium.PdfDocument(str(docs / "two.ocr.pdf"))
    assert rc == 0 and len(doc) == 2
    doc.close()


def test_read_images_records_carry_lines_and_the_api_shape(ckpt, docs):
    model, tok, meta = load_model(ckpt)
    recs = list(reader.read_images(model, tok, [str(docs / "p1.png"), Image.open(docs / "p2.png")], (32, 128),
                                   max_tokens=4))
    assert [r["page"] for r in recs] == [1, 1] and recs[0]["size"] == list(SIZES[0])
    line = recs[0]["lines"][0]
    assert set(line) >= {"text", "box", "confidence"}
    # an exact strip is one view: one line, boxed by the whole image
    strip = Image.new("RGB", (128, 32), "white")
    rec, = reader.read_images(model, tok, [strip], (32, 128), max_tokens=4)
    assert len(rec["lines"]) == 1 and rec["lines"][0]["box"] == [0, 0, 128, 32]


def test_the_python_api_reads_paths_pil_and_numpy_with_the_model_loaded_once(ckpt, docs, capsys, monkeypatch):
    import nanoocr
    from nanoocr import api
    loads = []
    real_open = reader.open_model
    monkeypatch.setattr(reader, "open_model", lambda *a, **k: loads.append(a) or real_open(*a, **k))
    monkeypatch.setattr(api, "_READERS", {})
    rc, printed, _ = run_read(capsys, docs / "p1.png", "--model", ckpt, "--max_tokens", MAX_TOKENS)
    loads.clear()
    pil = Image.open(docs / "p1.png")
    for src in (str(docs / "p1.png"), pil, np.asarray(pil.convert("RGB")), (docs / "p1.png").read_bytes()):
        page, = nanoocr.read(src, model=ckpt, max_tokens=int(MAX_TOKENS))
        assert page.text + "\n" == printed and page.page == 1 and page.size == SIZES[0] and page.error is None
        assert page.text == "\n".join(line.text for line in page.lines)
        assert all(isinstance(line, nanoocr.Line) and len(line.box) == 4 for line in page.lines)
    assert len(loads) == 1  # four calls, one model load
    pages = nanoocr.read(str(docs / "broken.pdf"), model=ckpt, max_tokens=int(MAX_TOKENS), dpi=72)
    assert [p.page for p in pages] == [1, 2, 3] and pages[1].error and not pages[0].error
    with pytest.raises(ValueError, match="not an image"):
        nanoocr.read(np.zeros((4, 4, 2), np.uint8), model=ckpt, max_tokens=int(MAX_TOKENS))
    with pytest.raises(ValueError, match="nowhere.png"):
        nanoocr.read("nowhere.png", model=ckpt, max_tokens=int(MAX_TOKENS))


def test_the_readmes_python_example_runs(ckpt, monkeypatch, capsys):
    """README "Using it from Python", as written, with the newest model of a base dir (the random one)."""
    import os

    from nanoocr import api
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme[readme.index("### Using it from Python"):]
    code = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python") + 9)]
    monkeypatch.setenv("NANOOCR_BASE_DIR", os.path.dirname(os.path.dirname(ckpt)))  # <base>/vis_tok_checkpoints/t
    monkeypatch.setattr(api, "_READERS", {})
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 (420, 110) ") and len(out) >= 3
