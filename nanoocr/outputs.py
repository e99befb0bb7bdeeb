"""
What the reader found, written as documents other tools read: hOCR and a searchable PDF.

    pages = [{"image": "scan.pdf", "page": 1, "size": [w, h], "lines": [...], "picture": PIL image}, ...]
    write_hocr(pages, "scan.hocr")          # XHTML: ocr_page / ocr_line / ocrx_word, bbox, x_wconf
    write_pdf(pages, "scan.ocr.pdf")        # the page images + an invisible text layer on the lines

A page is a reader record (reader.read_images: "lines" with boxes in the page's pixels and a
confidence each) plus "picture", the page image itself (the PDF needs it; hOCR only its size).

hOCR (the format Tesseract, OCRmyPDF and hocr-tools read): one ocr_page per page, one ocr_line per
line, one ocrx_word per word group the reader read -- a whole line when the cutter did not split it,
so an ocrx_word may hold several words (the model reads word groups, not words; their boxes are
not invented). x_wconf is the confidence in percent.

The searchable PDF is written with fpdf2 (pure Python): each page is its image, full size, with
each line's text drawn over its box in text render mode 3 (invisible: neither filled nor stroked),
sized to the box's height and stretched to its width, so a viewer's search highlights the line
and copy gives its text. The text is set in DejaVu Sans from nanoocr/fonts (embedded, so any
character the font draws is searchable; fpdf2's built-in fonts are Latin-1 only). Control
characters a model may write are left out of the text layer; hOCR shows them as U+FFFD.
"""

import os
import re
from xml.sax.saxutils import escape, quoteattr

FONT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fonts", "dejavu", "DejaVuSans.ttf")


# -----------------------------------------------------------------------------
# hOCR

# characters XML 1.0 cannot hold at all, even escaped (C0 controls but tab / newline / CR, lone
# surrogates, U+FFFE / U+FFFF): a model can write them, an XML parser would reject the whole file
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _xml_text(text):
    """Text for an XML document: the characters XML cannot hold become U+FFFD, the rest escaped."""
    return escape(_NOT_XML.sub("\ufffd", text))


def _title(box, conf=None, extra=""):
    t = "bbox " + " ".join(str(int(v)) for v in box)
    if conf is not None:
        t += f"; x_wconf {int(round(100 * conf))}"
    return t + extra


def hocr(pages):
    """Pages (see the module doc) -> one hOCR document (a str of XHTML 1.0) holding all of them."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
           '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
           '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">',
           '<head>', '<title>nanoocr</title>',
           '<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />',
           '<meta name="ocr-system" content="nanoocr" />',
           '<meta name="ocr-capabilities" content="ocr_page ocr_line ocrx_word" />',
           '</head>', '<body>']
    for pi, p in enumerate(pages, start=1):
        w, h = p["size"]
        title = _title([0, 0, w, h], extra=f'; image {_quoted(_NOT_XML.sub("?", p["image"]))}; '
                                          f'ppageno {(p.get("page") or 1) - 1}')
        out.append(f'<div class="ocr_page" id="page_{pi}" title={quoteattr(title)}>')
        for li, line in enumerate(p["lines"], start=1):
            if not line["text"]:
                continue
            title = quoteattr(_title(line["box"], line["confidence"]))
            out.append(f'<span class="ocr_line" id="line_{pi}_{li}" title={title}>')
            for wi, word in enumerate(line.get("words") or [line], start=1):
                if word["text"]:
                    title = quoteattr(_title(word["box"], word["confidence"]))
                    out.append(f'<span class="ocrx_word" id="word_{pi}_{li}_{wi}" title={title}>'
                               f'{_xml_text(word["text"])}</span>')
            out.append('</span>')
        out.append('</div>')
    out += ['</body>', '</html>', '']
    return "\n".join(out)


def _quoted(name):
    """hOCR's image property is a double-quoted string."""
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_hocr(pages, path):
    with open(path, "w", encoding="utf-8") as f:
        f.write(hocr(pages))


# -----------------------------------------------------------------------------
# Searchable PDF

def _dpi(picture):
    """The page's resolution: a rendered PDF page's (documents.open_pages records it), a scan's own
    (its file says), else 72 -- one pixel per point."""
    dpi = picture.info.get("dpi")
    try:
        d = float(dpi[0]) if dpi else 72.0
    except (TypeError, ValueError):
        d = 72.0
    return d if d >= 1 else 72.0


def searchable_pdf(pages):
    """Pages (each with its "picture") -> the bytes of a PDF: every page image with its lines'
    text invisible on top (module doc)."""
    from fpdf import FPDF  # imported here: reading never needs it
    pdf = FPDF(unit="pt")
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.add_font("dejavu", fname=FONT_PATH)
    pdf.set_creator("nanoocr")
    for p in pages:
        picture = p["picture"]
        k = 72.0 / _dpi(picture)  # points per pixel
        w, h = picture.size
        pdf.add_page(format=(w * k, h * k))
        pdf.image(picture, x=0, y=0, w=w * k, h=h * k)
        pdf.text_mode = 3  # invisible: searchable and copyable, never drawn over the scan
        for line in p["lines"]:
            text = _CONTROL.sub("", line["text"])  # no glyph, no meaning on a page
            if not text.strip():
                continue
            l, t, r, b = (v * k for v in line["box"])
            size = max(1.0, (b - t) * 0.8)  # most of a line's ink height is the font's body
            pdf.set_font("dejavu", size=size)
            pdf.set_stretching(100.0)
            natural = pdf.get_string_width(text)
            if natural > 0:  # squeeze or stretch the text to the line's width
                pdf.set_stretching(100.0 * max(1.0, r - l) / natural)
            pdf.text(l, b - 0.2 * size, text)  # the baseline sits a descender's depth above the box's bottom
        pdf.set_stretching(100.0)
        pdf.text_mode = 0
    return bytes(pdf.output())


def write_pdf(pages, path):
    data = searchable_pdf(pages)
    with open(path, "wb") as f:
        f.write(data)
