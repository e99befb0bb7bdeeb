"""
Documents -> pages: a PDF, a multi-page TIFF (or any multi-frame image) or a plain image becomes
the RGB page images the reader reads, one at a time.

    for page, image in open_pages("report.pdf", dpi=144):     # page numbers start at 1
        image: an RGB PIL image, or an ImageError naming the file and the page (a bad page of a
               PDF is its own error; the other pages still come)

PDF pages are rendered with pypdfium2 (Google's PDFium, the renderer inside Chrome, shipped inside
its wheel: no system package, no poppler/ghostscript to install) at `dpi` (DeepSeek-OCR renders at
144). A page's size is checked against max_pixels before it is rendered, as load_image checks an
image's header before decoding it. TIFF frames are decoded one by one through load_image's checks
(image_process._finish), so a frame that is corrupt is an error record for that frame only.
"""

import io
import os

from PIL import Image, ImageSequence

from nanoocr.image_process import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    _finish,
    _open_lazy,
    load_image,
)

DEFAULT_DPI = 144  # DeepSeek-OCR's own PDF scripts render at 144 dpi
MAX_PAGES = 10_000  # a guard, not a real limit: the server passes its own, much lower one


def is_pdf(head):
    """True when the bytes start like a PDF (the %PDF- header may follow a little junk: PDF readers
    look for it in the first 1024 bytes)."""
    return b"%PDF-" in head[:1024]


def _read_head(src, name):
    if isinstance(src, (str, os.PathLike)):
        try:
            with open(src, "rb") as f:
                return f.read(1024)
        except OSError as e:
            raise ImageError(f"{name}: cannot read the file ({e.strerror or e}); check the path") from e
    return bytes(src[:1024])


def open_pages(src, name=None, dpi=DEFAULT_DPI, max_pixels=DEFAULT_MAX_PIXELS, max_pages=MAX_PAGES):
    """A path, bytes or PIL image -> yields (page number from 1, RGB PIL image or ImageError). A file
    that cannot be opened at all raises ImageError (one error for the whole input); a page or frame
    that cannot be rendered is yielded as an ImageError and the next page follows. More pages than
    max_pages: the first max_pages, then one ImageError saying how many were left out."""
    if isinstance(src, Image.Image):
        yield 1, load_image(src, max_pixels=max_pixels, name=name)
        return
    name = name or (os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<bytes>")
    if not isinstance(src, (str, os.PathLike)):
        src = src.read() if hasattr(src, "read") else bytes(src)
    head = _read_head(src, name)
    if is_pdf(head):
        yield from _pdf_pages(src, name, dpi, max_pixels, max_pages)
        return
    try:
        im = _open_lazy(src if isinstance(src, (str, os.PathLike)) else io.BytesIO(src))
    except Exception:  # load_image says what the file is instead (empty, SVG, HTML, ...)
        yield 1, load_image(src, max_pixels=max_pixels, name=name)
        return
    with im:
        if getattr(im, "n_frames", 1) <= 1:
            yield 1, _finish(im, max_pixels, name)
            return
        for k, frame in enumerate(ImageSequence.Iterator(im), start=1):
            if k > max_pages:
                yield k, ImageError(f"{name}: more than {max_pages} frames; frames {k}..{im.n_frames} were not read")
                return
            try:
                yield k, _finish(frame, max_pixels, f"{name} frame {k}")
            except ImageError as e:
                yield k, e


def _pdf_pages(src, name, dpi, max_pixels, max_pages):
    import pypdfium2 as pdfium  # imported here: reading images never needs it
    try:
        doc = pdfium.PdfDocument(src)
    except pdfium.PdfiumError as e:
        raise ImageError(f"{name}: not a readable PDF ({e}); is it encrypted or truncated? "
                         f"re-export or repair it (e.g. `qpdf in.pdf out.pdf`)") from e
    try:
        n = len(doc)
        if n == 0:
            raise ImageError(f"{name}: the PDF has no pages")
        scale = dpi / 72.0  # PDF user space is 72 units per inch
        for i in range(n):
            k = i + 1
            if k > max_pages:
                yield k, ImageError(f"{name}: {n} pages, more than the limit of {max_pages}; pages {k}..{n} "
                                    f"were not read (split the PDF, or raise the page limit)")
                return
            try:
                page = doc[i]
            except pdfium.PdfiumError as e:
                yield k, ImageError(f"{name} page {k}: the page cannot be loaded ({e}); the PDF is damaged there")
                continue
            try:
                w, h = page.get_size()
                pw, ph = round(w * scale), round(h * scale)
                if max_pixels is not None and pw * ph > max_pixels:
                    yield k, ImageError(f"{name} page {k}: {pw}x{ph} pixels at {dpi} dpi exceeds the limit of "
                                        f"{max_pixels:,}; read it at a lower --dpi")
                    continue
                try:
                    image = page.render(scale=scale).to_pil().convert("RGB")
                except pdfium.PdfiumError as e:
                    yield k, ImageError(f"{name} page {k}: the page cannot be rendered ({e})")
                    continue
            finally:
                page.close()
            image.info["dpi"] = (dpi, dpi)
            yield k, image
    finally:
        doc.close()


def count_pages(src):
    """How many pages open_pages will yield for src, found cheaply (a PDF's page tree, an image's
    header), for a progress bar's total; 1 for anything it cannot tell (the read says why)."""
    try:
        head = _read_head(src, "") if not isinstance(src, Image.Image) else b""
        if is_pdf(head):
            import pypdfium2 as pdfium
            doc = pdfium.PdfDocument(src)
            try:
                return max(1, len(doc))
            finally:
                doc.close()
        if head[:4] in (b"II*\x00", b"MM\x00*") or head[:4] == b"GIF8":
            with Image.open(src if isinstance(src, (str, os.PathLike)) else io.BytesIO(src)) as im:
                return max(1, getattr(im, "n_frames", 1))
    except Exception:  # the read itself reports what is wrong with the file
        pass
    return 1
