"""
The Python API: read images and documents from your own code, the model loaded once.

    from nanoocr import read
    for page in read("scan.pdf"):                 # a path, bytes, a PIL image or a numpy array
        print(page.page, page.text)
        for line in page.lines:
            print(line.box, line.confidence, line.text)

    from nanoocr import Reader                    # choose the model, mode, dpi... once
    ocr = Reader("exported/cpu", max_tokens=64)
    pages = ocr.read(numpy_image)

read() keeps one Reader per model argument for the process's lifetime (the first call loads the
model, later calls reuse it). It is `nanoocr read` underneath (reader.read_images): same defaults,
same cutting into lines, same boxes and confidences.
"""

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from nanoocr import reader
from nanoocr.documents import DEFAULT_DPI
from nanoocr.image_process import ImageError
from nanoocr.modes import DEFAULT_PROMPT, resolve_mode


@dataclass
class Line:
    """One line of text (or one word group of a line, in Line.words): its text, its box
    [left, top, right, bottom] in the pixels of the page as given, and the model's confidence in
    [0, 1] (reader.line_confidence; None for a line it wrote nothing for)."""
    text: str
    box: list
    confidence: float | None
    words: list = field(default_factory=list)  # the word groups read separately, where the line was cut


@dataclass
class Page:
    """One page (an image is one page; a PDF or a TIFF one per page): its number from 1, text (the
    lines joined by newlines), lines, size (w, h) and the input's name. error: why this page could
    not be read (a damaged page of a PDF); text is then "" and lines []."""
    page: int
    text: str
    lines: list
    size: tuple
    source: str
    error: str | None = None


def _line(d):
    return Line(d["text"], list(d["box"]), d["confidence"], [_line(w) for w in d.get("words", [])])


def _as_input(src):
    """A numpy array (H x W grey, H x W x 3 RGB or x 4 RGBA, uint8) becomes a PIL image; paths,
    bytes and PIL images pass as they are."""
    if isinstance(src, np.ndarray):
        if src.dtype != np.uint8 or src.ndim not in (2, 3) or (src.ndim == 3 and src.shape[2] not in (1, 3, 4)):
            raise ImageError(f"<numpy array>: shape {src.shape} dtype {src.dtype} is not an image; give uint8 "
                             f"H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)")
        return Image.fromarray(src[..., 0] if src.ndim == 3 and src.shape[2] == 1 else src)
    if isinstance(src, (str, os.PathLike, bytes, bytearray, Image.Image)):
        return src
    raise TypeError(f"nanoocr.read takes a path, bytes, a PIL image or a numpy array, not {type(src).__name__}")


class Reader:
    """A loaded model and the reading settings: Reader(model=None, device="", mode=None, ...).
    model: a checkpoint or export directory (default: the newest trained model under the base dir,
    as `nanoocr read`). Raises reader.MODEL_ERRORS' exceptions (no model, a broken checkpoint)."""

    def __init__(self, model=None, device="", mode=None, prompt=DEFAULT_PROMPT, max_tokens=None, batch_size=8,
                 dpi=DEFAULT_DPI):
        self.model_dir, self.model, self.tokenizer, self.meta, self.device_type = reader.open_model(model, device)
        self.mode = resolve_mode(self.model.encoder.config, self.meta, mode)
        self.prompt, self.max_tokens, self.batch_size, self.dpi = prompt, max_tokens, batch_size, dpi

    def read(self, src):
        """One input, or a list of them -> [Page], every page of every input in order. An input
        that cannot be opened at all raises ImageError (its message names it and says why)."""
        items = [_as_input(s) for s in (src if isinstance(src, list) else [src])]
        pages = []
        for rec in reader.read_images(self.model, self.tokenizer, items, self.mode, self.prompt,
                                      batch_size=self.batch_size, max_words=reader.trained_max_words(self.meta),
                                      max_tokens=self.max_tokens, dpi=self.dpi,
                                      autocast_dtype=reader.read_autocast_dtype(self.device_type)):
            if "error" in rec:
                if rec["page"] is None:
                    raise ImageError(rec["error"])
                pages.append(Page(rec["page"], "", [], (), rec["image"], error=rec["error"]))
            else:
                pages.append(Page(rec["page"], rec["text"], [_line(d) for d in rec["lines"]], tuple(rec["size"]),
                                  rec["image"]))
        return pages

    __call__ = read


_READERS = {}  # model argument -> Reader: read() loads each model once


def read(src, model=None, **settings):
    """Read a path, bytes, PIL image or numpy array (or a list of them) -> [Page]. model and
    settings as Reader's; the Reader is kept and reused by later calls with the same arguments."""
    key = (model, tuple(sorted(settings.items())))
    if key not in _READERS:
        _READERS[key] = Reader(model, **settings)
    return _READERS[key].read(src)
