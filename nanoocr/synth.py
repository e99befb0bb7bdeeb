"""
The built-in synthetic document renderer: the training set that needs no download.

    img, prompt, answer = render(seed, index, kind, split="train", height=None, width=None, **overrides)

is a pure function of its arguments: it draws only the fonts shipped in nanoocr/fonts/, so the
same call gives the same pixels on every machine. Kinds:
- "line":      a tight one-line strip (default 32x256 H x W), font size ~0.6 H, small jitter: the data
               that first made a tiny model read on CPU (dev/design.md §9).
- "line_page": one line placed somewhere on a page (default 256x256).
- "page":      Fox-style paragraphs filling a page (default 1024x1024), 1 or 2 columns, optional title.
- "receipt":   a receipt on a table, rows laid out in columns (default 1024x768); the answer is its
               rows top to bottom, columns joined by as many spaces as the gap is wide in digits
               (so a monospaced receipt reads back exactly like its layout, as in tasks/tier1).
Answers: visual lines joined by "\n"; a vertical gap between blocks is an empty line; no leading
spaces. The prompt is modes.DEFAULT_PROMPT (the <image> marker is not part of it).

Splits: sample seeds live in disjoint ranges per split (sample_seed), and every text unit is hashed
to one split (synth_text.text_split), so train / val / test share neither seeds nor texts.
Degradations (geometry, paper, ink, blur, rescale, noise, tint, JPEG) have a level per split in
DEGRADATIONS and can be overridden per call with degrade={...} or degrade="none".
"""

import functools
import io
import math
import random
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nanoocr import synth_text as T
from nanoocr.modes import DEFAULT_PROMPT
from nanoocr.strips import text_strips
from nanoocr.typefaces import bold_sibling, choose_font, get_font

KINDS = ("line", "line_page", "block", "page", "receipt")
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = {"line": (32, 256), "line_page": (256, 256), "block": (256, 256), "page": (1024, 1024),
                "receipt": (1024, 768)}
# Smallest (H, W) each kind lays out correctly (lines also need W >= H); below, text cannot fit.
MIN_SIZE = {"line": (12, 12), "line_page": (32, 32), "block": (64, 64), "page": (64, 64), "receipt": (128, 128)}

# Each split's sample seeds live in their own 2^60-wide range: disjoint by construction.
SPLIT_SEED_BASE = {"train": 0, "val": 1 << 60, "test": 2 << 60}

# Degradation levels, one per split. *_p are probabilities, tuples are uniform ranges. Blur and down-scaling are
# capped by the font size in _compose so small text stays legible. val/test are a fixed, milder
# "realistic scan" distribution so their numbers are comparable across runs; train is wider.
DEGRADATIONS = {
    "train": dict(rotate_p=0.4, rotate_deg=3.0, shear_p=0.15, shear=0.08,
                  paper=(180, 255), ink=(0, 100), min_contrast=110, ink_opacity=(0.85, 1.0), invert_p=0.02,
                  gradient_p=0.3, gradient=35, texture_p=0.3, texture=12,
                  blur_p=0.3, blur_sigma=(0.3, 1.2), rescale_p=0.2, rescale=(0.5, 0.9),
                  noise_p=0.5, noise_sigma=(2.0, 14.0), speckle_p=0.25, speckle=(0.002, 0.01),
                  tint=0.06, jpeg_p=0.35, jpeg_quality=(20, 90)),
    "val": dict(rotate_p=0.2, rotate_deg=1.0, shear_p=0.0, shear=0.0,
                paper=(200, 255), ink=(0, 70), min_contrast=130, ink_opacity=(0.9, 1.0), invert_p=0.0,
                gradient_p=0.2, gradient=20, texture_p=0.2, texture=8,
                blur_p=0.2, blur_sigma=(0.3, 0.8), rescale_p=0.1, rescale=(0.6, 0.9),
                noise_p=0.3, noise_sigma=(2.0, 8.0), speckle_p=0.0, speckle=(0.0, 0.0),
                tint=0.04, jpeg_p=0.2, jpeg_quality=(50, 90)),
}
DEGRADATIONS["test"] = dict(DEGRADATIONS["val"])
NO_DEGRADATION = dict(DEGRADATIONS["val"], rotate_p=0.0, paper=(255, 255), ink=(0, 0), ink_opacity=(1.0, 1.0),
                      gradient_p=0.0, texture_p=0.0, blur_p=0.0, rescale_p=0.0, noise_p=0.0, tint=0.0, jpeg_p=0.0)

OVERRIDES = ("font_px", "font_frac", "fonts", "text_mix", "max_words", "degrade", "prompt", "typeset_p", "columns",
             "cut_p", "cut_degrade")

# -----------------------------------------------------------------------------
# Layouts. Each returns a dict: runs [(x, y, text, font, answer_offset)] drawn with anchor "la"
# (top-left of the ascender line), rules [(x0, y0, x1, y1)] (ink that is not text), paper (a
# rectangle or None for a full-page paper), answer, units (text units, for the split check),
# fonts (names used), min_px (the smallest font size, to cap blur and down-scaling).

def _font_px(rng, opts, lo, hi):
    fp = opts.get("font_px")
    if fp is None:
        return max(6, round(rng.uniform(lo, hi)))
    return int(fp) if isinstance(fp, (int, float)) else max(6, round(rng.uniform(*fp)))


def _bbox(font, text):
    """font.getbbox, memoised: it costs ~0.2 ms (glyphs are loaded on every call), and a line is
    measured when fitted, when placed and when its ink box is needed for rotation."""
    return _bbox_cached(font.key, text)


@functools.lru_cache(maxsize=8192)
def _bbox_cached(key, text):
    return get_font(*key).getbbox(text)


def _advances(font):
    """{character: advance width} for the charset: summing these is ~10x cheaper than getlength."""
    return _advances_cached(font.key)


@functools.lru_cache(maxsize=2048)
def _advances_cached(key):
    font = get_font(*key)
    return {c: font.getlength(c) for c in T.CORE_CHARS + T.EXTRA_CHARS}


def _fit_words(font, text, avail):
    """Drop words from the end (or characters from a single long word) until the text's ink and
    advance fit in `avail` pixels; "" when not even one character fits."""
    words = text.split(" ")
    while True:
        t = " ".join(words).strip()
        if not t or _bbox(font, t)[2] <= avail:  # right end of ink or advance, whichever is further
            return t
        words = words[:-1] if len(words) > 1 else [words[0][:-1]]


def _v_extent(font):
    """(top, bottom) of any line's ink relative to the draw position: glyphs may overshoot the
    font's ascent / descent metrics, so pages and receipts keep this box, not the em box, inside."""
    _, t, _, b = _bbox(font, T.CORE_CHARS + T.EXTRA_CHARS)
    return t, b


def _line_text(rng, split, spec, font, avail, opts, mix):
    """A text unit of this split that fits in `avail` pixels, typographic variants included."""
    cap = max(1, int(avail / (0.55 * font.size)))  # rough characters per line
    max_words = opts.get("max_words") or max(1, cap // 6)
    p = opts.get("typeset_p", 0.1)
    make = lambda: _fit_words(font, T.typeset(T.line_text(rng, mix, max_words), rng, spec.covers, p), avail)  # noqa: E731
    return T.pick_text(rng, split, make)


def layout_line(rng, split, W, H, opts):
    spec = choose_font(rng, opts.get("fonts"))
    size = _font_px(rng, opts, *(f * H for f in opts.get("font_frac", (0.55, 0.65))))
    size = min(size, int((W - 4) / 1.3))  # one wide glyph ("W", "@") must fit a narrow strip
    font = get_font(spec.name, size)
    asc, desc = font.getmetrics()
    if asc + desc > H - 2:  # tall fonts (script, display) shrink until the em box fits
        font = get_font(spec.name, max(6, int(size * (H - 2) / (asc + desc))))
        asc, desc = font.getmetrics()
    x = rng.randint(1, max(1, round(0.2 * H)))  # 1..6 px at H=32, as in the probe
    text = _line_text(rng, split, spec, font, W - x - 2, opts, opts.get("text_mix") or T.TEXT_MIX)
    # place by the font's em box (not the ink box), so the baseline does not give away which letters
    # have ascenders; then clamp so the ink stays inside the strip
    jit = max(1, round(H / 16))
    y = (H - asc - desc) // 2 + rng.randint(-jit, jit)
    l, t, r, b = _bbox(font, text)
    y = min(max(y, 1 - t), H - 1 - b)
    x = min(max(x, 1 - l), W - 1 - r)  # italic overhangs
    return dict(runs=[(x, y, text, font, 0)], rules=[], paper=None, answer=text, units=[text],
                fonts=[spec.name], min_px=font.size)


def layout_line_page(rng, split, W, H, opts):
    spec = choose_font(rng, opts.get("fonts"))
    font = get_font(spec.name, _font_px(rng, opts, max(10, H / 40), max(14, H / 10)))
    mx, my = round(0.05 * W), round(0.05 * H)
    text = _line_text(rng, split, spec, font, W - 2 * mx, opts, opts.get("text_mix") or T.TEXT_MIX)
    l, t, r, b = _bbox(font, text)
    x = rng.randint(mx, max(mx, W - mx - r))
    y = rng.randint(my - t, max(my - t, H - my - b))
    return dict(runs=[(x, y, text, font, 0)], rules=[], paper=None, answer=text, units=[text],
                fonts=[spec.name], min_px=font.size)


def layout_page(rng, split, W, H, opts, max_lines=0):
    """Paragraphs filling the page top to bottom (then the next column), wrapped at spaces; with
    max_lines, only that many lines of text (a block)."""
    spec = choose_font(rng, opts.get("fonts"))
    font = get_font(spec.name, _font_px(rng, opts, max(10, H / 64), max(12, H / 24)))
    mix = opts.get("text_mix") or T.PAGE_TEXT_MIX
    typeset_p = 1.0 if rng.random() < opts.get("typeset_p", 0.3) else 0.0  # book-like pages use it throughout
    asc, desc = font.getmetrics()
    top, bot = _v_extent(font)
    line_h = round((asc + desc) * rng.uniform(1.0, 1.35))
    mx, my = max(2, round(W * rng.uniform(0.04, 0.09))), max(2, round(H * rng.uniform(0.03, 0.07)))
    ncol = opts.get("columns") or (2 if W >= 640 and rng.random() < 0.25 else 1)
    gutter = round(0.04 * W)
    col_w = (W - 2 * mx - (ncol - 1) * gutter) // ncol
    indent_style = rng.random() < 0.5  # first-line indent and no gap, or a blank gap between paragraphs
    justify = rng.random() < 0.3
    space_w = font.getlength(" ")
    tspec = bold_sibling(spec)
    covers = spec.covers & tspec.covers  # typographic characters only where body and title font have them
    runs, lines, units, fonts = [], [], [], [spec.name]  # lines: answer lines ("" = blank line)
    y0 = max(my, 1 - top)  # first draw position: the tallest glyph's ink starts inside the margin
    col, y = 0, y0
    answer_len = 0

    wcache = {}

    adv = _advances(font)

    def width(w):  # word width as a sum of advances (no kerning; each line is checked once below)
        if w not in wcache:
            wcache[w] = sum(adv[c] if c in adv else font.getlength(c) for c in w)
        return wcache[w]

    def emit(x, y, words, extra=0.0):
        """One visual line; `extra` pixels are spread between words when justifying."""
        nonlocal answer_len
        text = " ".join(words)
        if extra <= 0 or len(words) < 2:
            runs.append((x, y, text, font, answer_len))
        else:
            step, wx, off = space_w + extra / (len(words) - 1), x, 0
            for w in words:
                runs.append((round(wx), y, w, font, answer_len + off))
                wx, off = wx + width(w) + step, off + len(w) + 1
        lines.append(text)
        answer_len += len(text) + 1

    if rng.random() < 0.35:  # a title in the bold sibling, bigger, with a gap under it
        tfont = get_font(tspec.name, round(font.size * rng.uniform(1.2, 1.8)))
        title = T.pick_text(rng, split, lambda: _fit_words(tfont, T.line_text(rng, {"prose": 1}, 7).rstrip(".,;:!?").title(), W - 2 * mx))
        ta, td = tfont.getmetrics()
        tt, tb = _v_extent(tfont)
        y = max(y, 1 - tt)
        if title and y + tb <= H - my:
            tx = (W - round(tfont.getlength(title))) // 2 if rng.random() < 0.5 else mx
            runs.append((tx, y, title, tfont, 0))
            lines += [title, ""]
            answer_len += len(title) + 2
            units.append(title)
            fonts.append(tspec.name)
            y += round((ta + td) * 1.3) + line_h // 2
            y0 = y  # every column starts below the title (not under it)
    full = False
    for _ in range(1000):  # paragraphs until the page is full (bounded: a too-narrow column never fills)
        if full:
            break
        words = []
        for _ in range(rng.randint(2, 7)):  # one paragraph
            sent = T.pick_text(rng, split, lambda: T.typeset(T.SOURCES[T.choose_source(rng, mix)](rng), rng, covers, typeset_p))
            units.append(sent)
            words += sent.split()
        first, i = True, 0
        while i < len(words):
            if width(words[i]) > col_w:  # never wider than a column (long URLs): left out
                del words[i]
                continue
            if y + bot > H - my:  # column full: next column, or the page is done
                col, y = col + 1, y0
                if col >= ncol:
                    full = True
                    break
            indent = round(2 * font.size) if (first and indent_style and width(words[i]) <= col_w - 2 * font.size) else 0
            avail, j, w = col_w - indent, i + 1, width(words[i])  # greedy wrap, widths summed
            while j < len(words) and w + space_w + width(words[j]) <= avail and width(words[j]) <= col_w:
                w, j = w + space_w + width(words[j]), j + 1
            while j > i + 1 and font.getlength(" ".join(words[i:j])) > avail:  # kerning can add a pixel
                j -= 1
            last = j >= len(words)
            extra = 0.0 if (last or not justify) else avail - sum(map(width, words[i:j])) - space_w * (j - i - 1)
            emit(mx + col * (col_w + gutter) + indent, y, words[i:j], extra)
            y += line_h
            i, first = j, False
            if max_lines and sum(1 for line in lines if line) >= max_lines:  # a block: stop after its lines
                full = True
                break
        if not full and not indent_style and lines:  # blank gap between paragraphs
            lines.append("")
            answer_len += 1
            y += line_h // 2
    while lines and lines[-1] == "":
        lines.pop()
    return dict(runs=runs, rules=[], paper=None, answer="\n".join(lines), units=units, fonts=fonts, min_px=font.size)


def layout_block(rng, split, W, H, opts):
    """A block of 2-12 lines of a page's paragraphs (its font, wrapping, title) at a random height on
    an otherwise empty page: how much text an image holds varies 6x, so one resolution mode reads
    it at many compression ratios (the page recipe, presets/pages_cpu.toml)."""
    n = rng.randint(2, 12)
    layout = layout_page(rng, split, W, H, opts, max_lines=n)
    runs = layout["runs"]
    if runs:
        font = runs[-1][3]
        bottom = runs[-1][1] + _v_extent(font)[1]
        margin = max(2, round(0.03 * H))
        dy = rng.randint(0, max(0, H - margin - bottom))
        layout["runs"] = [(x, y + dy, text, f, off) for x, y, text, f, off in runs]
    return layout


def layout_receipt(rng, split, W, H, opts):
    """A receipt strip, usually lying on a darker table; rows in columns, amounts right-aligned."""
    spec = choose_font(rng, opts.get("fonts"), mono_p=0.6)
    bspec = bold_sibling(spec)
    on_table = rng.random() < 0.7
    pw = round(W * rng.uniform(0.55, 0.9)) if on_table else W
    px0 = (W - pw) // 2 + (rng.randint(-(W - pw) // 4, (W - pw) // 4) if on_table else 0)
    py0 = rng.randint(0, round(0.05 * H)) if on_table else 0
    pad = round(pw * rng.uniform(0.05, 0.09))
    tx0, tx1 = px0 + pad, px0 + pw - pad
    digit = get_font(spec.name, 100).getlength("0") / 100  # width of a digit per pixel of size
    ncols = rng.randint(30, 46)  # characters across, as on real receipts
    size = round(min(max((tx1 - tx0) / (ncols * digit), max(8, H / 110)), max(10, H / 28)))
    if opts.get("font_px") is not None:
        size = _font_px(rng, opts, 0, 0)
    cur = rng.choice(("", "", "$", "RM ", "\u20ac" if "\u20ac" in spec.covers & bspec.covers else "$"))
    rows, units = T.receipt_rows(rng, split, cur)
    while True:  # narrow paper: shrink until amount + qty column + a short label fit side by side
        font, bfont = get_font(spec.name, size), get_font(bspec.name, size)
        cw = font.getlength("0")  # one "space" in the answer = one digit width of gap
        amounts_w = max(bfont.getbbox(r[-1])[2] for r in rows if r[0] in ("lr", "lmr", "lrb"))
        mids_w = max((font.getbbox(r[2])[2] for r in rows if r[0] == "lmr"), default=0)
        if size <= 6 or amounts_w + mids_w + 10 * cw <= tx1 - tx0:
            break
        size -= 1
    asc, desc = font.getmetrics()
    top, bot = min(_v_extent(font)[0], _v_extent(bfont)[0]), max(_v_extent(font)[1], _v_extent(bfont)[1])
    line_h = round((asc + desc) * rng.uniform(1.1, 1.4))
    mid_right = tx1 - amounts_w - 2 * cw  # the qty x price column ends here
    runs, rules, lines = [], [], []
    answer_len = 0
    y = max(py0 + pad // 2, 1 - top)
    bottom = H - max(2, round(0.02 * H))
    for row in rows:
        tag = row[0]
        if y + bot > bottom:
            break  # the rest is cut off by the photo's edge
        f = bfont if tag.endswith("b") else font
        if tag == "rule":
            yy = y + line_h // 2
            rules.append((tx0, yy, tx1, yy + max(1, size // 14)))
            y += line_h
            continue
        if tag == "blank":
            lines.append("")
            answer_len += 1
            y += line_h
            continue
        if tag.startswith("c"):
            text = _fit_words(f, row[1], tx1 - tx0)
            segs = [((tx0 + tx1 - round(f.getlength(text))) // 2, text)]
        elif tag == "l":
            segs = [(tx0, _fit_words(f, row[1], tx1 - tx0))]
        else:
            right = row[-1]
            rx = tx1 - round(f.getlength(right))
            left_end = rx - 2 * cw
            segs = []
            if tag == "lmr":
                mx0 = round(mid_right - f.getlength(row[2]))
                segs.append((mx0, row[2]))
                left_end = mx0 - 2 * cw
            indent = len(row[1]) - len(row[1].lstrip())  # indented sub-rows: leading spaces -> pixels
            lx = tx0 + round(indent * cw)
            segs = [(lx, _fit_words(f, row[1].strip(), left_end - lx))] + segs + [(rx, right)]
        segs = [(x, s) for x, s in segs if s and x >= tx0 - 1]  # what did not fit is not drawn
        if not segs:
            y += line_h
            continue
        # answer: segments left to right, joined by as many spaces as the gap holds digit widths
        text, offs = "", []
        prev_end = None
        for x, s in segs:
            if prev_end is not None:
                text += " " * max(1, round((x - prev_end) / cw))
            offs.append(len(text))
            text += s
            prev_end = x + f.getlength(s)
        for (x, s), o in zip(segs, offs):
            runs.append((x, y, s, f, answer_len + o))
        lines.append(text)
        answer_len += len(text) + 1
        y += line_h
    while lines and lines[-1] == "":
        lines.pop()
    paper = (px0, py0, px0 + pw, min(H, y + pad)) if on_table else None
    return dict(runs=runs, rules=rules, paper=paper, answer="\n".join(lines), units=units,
                fonts=sorted({spec.name, bspec.name}), min_px=size)


LAYOUTS = {"line": layout_line, "line_page": layout_line_page, "block": layout_block, "page": layout_page,
           "receipt": layout_receipt}


# -----------------------------------------------------------------------------
# Geometry and degradations

def _ink_boxes(layout):
    boxes = []
    for x, y, text, font, _ in layout["runs"]:
        l, t, r, b = _bbox(font, text)
        boxes.append((x + l, y + t, x + r, y + b))
    return boxes + [tuple(r) for r in layout["rules"]]


def _affine(rng, deg, W, H, layout):
    """A small rotation + shear about the text's centre, shifted so the text stays inside the canvas
    (halved up to 4 times when it cannot). Returns (A 2x2, centre, shift) or None."""
    angle = rng.uniform(-1, 1) * deg["rotate_deg"] if rng.random() < deg["rotate_p"] else 0.0
    shear = rng.uniform(-1, 1) * deg["shear"] if rng.random() < deg["shear_p"] else 0.0
    if angle == 0 and shear == 0:
        return None
    boxes = _ink_boxes(layout)  # only measured when needed: ~0.1 ms per run
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)) \
        if boxes else (0, 0, W, H)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], float) - (cx, cy)
    for _ in range(4):
        if angle == 0 and shear == 0:
            return None
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        A = np.array([[c, c * shear - s], [s, s * shear + c]])
        p = corners @ A.T + (cx, cy)
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        if x1 - x0 <= W - 3 and y1 - y0 <= H - 3:
            dx = max(0.0, 1 - x0) - max(0.0, x1 - (W - 2))
            dy = max(0.0, 1 - y0) - max(0.0, y1 - (H - 2))
            return A, np.array([cx, cy]), np.array([dx, dy])
        angle, shear = angle / 2, shear / 2
    return None


def _apply(aff, pts):
    A, c, d = aff
    return (np.asarray(pts, float) - c) @ A.T + c + d


def _warp(img, aff):
    """PIL wants the inverse map: output pixel -> input pixel."""
    A, c, d = aff
    Ai = np.linalg.inv(A)
    off = c - Ai @ (c + d)
    return img.transform(img.size, Image.AFFINE, (Ai[0, 0], Ai[0, 1], off[0], Ai[1, 0], Ai[1, 1], off[1]),
                         resample=Image.BILINEAR)


_NOISE_BANK = None


def _noise(nrng, n):
    """n standard-normal values: a random window of a fixed 4M-value bank (drawing fresh normals
    costs ~15 ms per 1024^2 image, a window ~1 ms); larger images draw fresh ones."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(20261129).standard_normal(1 << 22, dtype=np.float32)
    if n > _NOISE_BANK.size // 2:
        return nrng.standard_normal(n, dtype=np.float32)
    o = int(nrng.integers(0, _NOISE_BANK.size - n))
    return _NOISE_BANK[o:o + n]


def _compose(rng, nrng, layout, W, H, deg):
    """Ink mask -> geometry -> paper and ink levels -> blur -> rescale -> noise -> tint -> JPEG."""
    aff = _affine(rng, deg, W, H, layout)
    mask = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(mask)
    for x, y, text, font, _ in layout["runs"]:
        draw.text((x, y), text, font=font, fill=255)
    for r in layout["rules"]:
        draw.rectangle(r, fill=255)
    pmask = None
    if layout["paper"] is not None:
        pmask = Image.new("L", (W, H), 0)
        ImageDraw.Draw(pmask).rectangle(layout["paper"], fill=255)
    if aff is not None:
        mask = _warp(mask, aff)
        pmask = _warp(pmask, aff) if pmask is not None else None

    paper = rng.uniform(*deg["paper"])
    ink = max(0.0, min(rng.uniform(*deg["ink"]), paper - deg["min_contrast"]))
    opacity = rng.uniform(*deg["ink_opacity"])
    invert = rng.random() < deg["invert_p"]
    bg = 0.0  # paper variation around `paper`, a float array when there is any
    if rng.random() < deg["gradient_p"]:  # uneven lighting: a linear ramp in a random direction
        th, g = rng.uniform(0, 2 * math.pi), rng.uniform(-1, 1) * deg["gradient"]
        xs = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :] * math.cos(th)
        ys = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None] * math.sin(th)
        bg = g * (xs + ys)
    if rng.random() < deg["texture_p"]:  # paper grain: low-resolution noise, upsampled
        small = nrng.standard_normal((H // 16 + 2, W // 16 + 2), dtype=np.float32) * deg["texture"]
        bg = bg + np.asarray(Image.fromarray(small, "F").resize((W, H), Image.BILINEAR))
    if pmask is None and isinstance(bg, float):
        # uniform paper: the composite is a function of the mask value alone, so one lookup table
        lut = paper + (ink - paper) * opacity * np.arange(256, dtype=np.float32) / 255
        lut = np.clip(np.rint(255 - lut if invert else lut), 0, 255).astype(np.uint8)
        im = Image.fromarray(lut[np.asarray(mask)], "L")
    else:
        bg = paper + (bg if isinstance(bg, np.ndarray) else np.zeros((H, W), np.float32))
        if pmask is not None:  # the table around the receipt
            table = rng.uniform(30, 170)
            bg = table + (bg - table) * (np.asarray(pmask, np.float32) / 255)
        m = np.asarray(mask, np.float32) * (opacity / 255)
        img = bg + (ink - bg) * m
        if invert:
            img = 255 - img
        im = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "L")
    min_px = layout["min_px"]
    if rng.random() < deg["blur_p"]:  # capped by font size: a 10 px font survives sigma ~0.8 at most
        im = im.filter(ImageFilter.GaussianBlur(min(rng.uniform(*deg["blur_sigma"]), min_px / 12)))
    if rng.random() < deg["rescale_p"]:  # low-resolution scan; text stays >= ~9 px tall
        f = max(rng.uniform(*deg["rescale"]), 9 / min_px)
        if f < 0.97:
            im = im.resize((max(1, round(W * f)), max(1, round(H * f))), Image.BILINEAR).resize((W, H), Image.BILINEAR)
    if rng.random() < deg["noise_p"]:
        noise = _noise(nrng, H * W).reshape(H, W) * rng.uniform(*deg["noise_sigma"])
        im = Image.fromarray(np.clip(np.asarray(im, np.float32) + noise + 0.5, 0, 255).astype(np.uint8), "L")
    if rng.random() < deg["speckle_p"]:  # salt and pepper: dust, toner specks, a fax
        a = np.array(im)
        u = nrng.random(a.shape, dtype=np.float32)
        amount = rng.uniform(*deg["speckle"])
        a[u < amount / 2] = 0
        a[u > 1 - amount / 2] = 255
        im = Image.fromarray(a, "L")
    # grey-ish colour: one lookup table per channel (much cheaper than float RGB arrays)
    tint = np.array([1 + rng.uniform(-1, 1) * deg["tint"] for _ in range(3)], np.float32)
    luts = np.clip(np.rint(np.arange(256, dtype=np.float32)[:, None] * tint), 0, 255).astype(np.uint8)  # (256, 3)
    im = Image.fromarray(luts[np.asarray(im)], "RGB")
    if rng.random() < deg["jpeg_p"]:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=rng.randint(*deg["jpeg_quality"]))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return im, aff


def _char_boxes(layout, aff):
    """{answer index: (x0, y0, x1, y1)} for every inked answer character, in image pixels."""
    out = {}
    for x, y, text, font, off in layout["runs"]:
        for i, ch in enumerate(text):
            l, t, r, b = font.getbbox(ch)
            if ch.isspace() or r <= l:
                continue
            adv = font.getlength(text[:i])
            box = (x + adv + l, y + t, x + adv + r, y + b)
            if aff is not None:
                p = _apply(aff, [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])])
                box = (*p.min(0), *p.max(0))
            out[off + i] = tuple(float(v) for v in box)
    return out


# -----------------------------------------------------------------------------
# Public entry points

def sample_seed(seed, index, split):
    """The integer every random choice of a sample derives from; split ranges never overlap."""
    assert split in SPLITS, f"split must be one of {SPLITS}, got {split!r}"
    assert 0 <= seed < 1 << 24 and 0 <= index < 1 << 36, f"seed {seed} / index {index} out of range"
    return SPLIT_SEED_BASE[split] + (seed << 36) + index


def _degradation(split, degrade):
    if degrade is None:
        return DEGRADATIONS[split]
    if isinstance(degrade, str):
        assert degrade == "none" or degrade in DEGRADATIONS, f"degrade={degrade!r}: use 'none', a split or a dict"
        return NO_DEGRADATION if degrade == "none" else DEGRADATIONS[degrade]
    unknown = set(degrade) - set(NO_DEGRADATION)
    assert not unknown, f"unknown degradation keys {sorted(unknown)}; known: {sorted(NO_DEGRADATION)}"
    return dict(DEGRADATIONS[split], **degrade)


def render_annotated(seed, index, kind, split="train", height=None, width=None, boxes=True, **overrides):
    """render() plus an info dict: units (text units drawn, each of this split), fonts (names used),
    boxes ({answer index: glyph box in pixels} for every inked answer character)."""
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"render() got unknown options {sorted(unknown)}; known: {OVERRIDES}")
    H, W = height or DEFAULT_SIZE[kind][0], width or DEFAULT_SIZE[kind][1]
    assert H >= MIN_SIZE[kind][0] and W >= MIN_SIZE[kind][1] and (kind != "line" or W >= H), \
        f"{kind} of {H}x{W} (HxW) is too small: at least {MIN_SIZE[kind]}" + (", and W >= H" if kind == "line" else "")
    s = sample_seed(seed, index, split)
    rng = random.Random(f"{s}:{kind}")  # str seeds hash with SHA-512: same stream on every machine
    nrng = np.random.default_rng([s, zlib.crc32(kind.encode())])
    layout = LAYOUTS[kind](rng, split, W, H, overrides)
    img, aff = _compose(rng, nrng, layout, W, H, _degradation(split, overrides.get("degrade")))
    info = dict(units=layout["units"], fonts=layout["fonts"], boxes=_char_boxes(layout, aff) if boxes else None)
    return img, overrides.get("prompt", DEFAULT_PROMPT), layout["answer"], info


def render(seed, index, kind, split="train", height=None, width=None, **overrides):
    """(PIL RGB image, prompt, answer) for sample `index` of `kind` in `split`; a pure function of
    its arguments. height / width default to DEFAULT_SIZE[kind]. Options (OVERRIDES):
    font_px (int or (lo, hi)), font_frac ((lo, hi) x height, line kind), fonts (names / families /
    paths to draw from), text_mix ({"prose", "random", "entity": weight}), max_words (line kinds),
    degrade (None = the split's level, "none", a split name, or a dict of overrides of it),
    prompt, typeset_p (chance of curly quotes / dashes), columns (page kind), cut_p (line kind: the
    chance that the line is drawn 1-2.5x larger and cut back to the strip by strips.text_strips,
    exactly as `nanoocr read` cuts a user's crop: the model then trains on the reader's own input,
    cleaned, deskewed, scaled by its ink height; a line the cutter splits in two is resized instead),
    cut_degrade (the degradations of those cut lines, default: degrade's)."""
    cut_p = overrides.pop("cut_p", 0.0)
    cut_degrade = overrides.pop("cut_degrade", None)
    if kind == "line" and cut_p > 0:
        rng = random.Random(f"cut:{seed}:{split}:{index}")  # its own stream: the other draws stay as they were
        if rng.random() < cut_p:
            H, W = height or DEFAULT_SIZE["line"][0], width or DEFAULT_SIZE["line"][1]
            f = rng.uniform(1.0, 2.5)
            opts = dict(overrides, degrade=cut_degrade) if cut_degrade else overrides
            img, prompt, answer, _ = render_annotated(seed, index, kind, split, round(H * f), round(W * f), boxes=False, **opts)
            strips = text_strips(img, H, W)
            return (strips[0][1] if len(strips) == 1 else img.resize((W, H), Image.BICUBIC)), prompt, answer
    img, prompt, answer, _ = render_annotated(seed, index, kind, split, height, width, boxes=False, **overrides)
    return img, prompt, answer

