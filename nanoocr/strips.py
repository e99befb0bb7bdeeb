"""
Cutting a text image into the one-line strips a strip model reads.

The CPU recipe trains on 32x256 strips: one line of at most a few words, its letters ~0.6 of the
strip's height, left-aligned on plain paper. Any other image stretched to 32x256 is unreadable to
it: a long line is squashed sideways, a paragraph becomes grey mush. So before reading, an image
of another size is cleaned and cut the way the model saw text in training:

  0. clean it (clean_image): a photographed page flattened and sharpened (nanoocr/page.py), light
     text on dark paper inverted, uneven light divided out, specks dropped, the ink found by a
     bounded Otsu threshold, a page turned by 90 / 180 / 270 degrees turned back
     (layout.orientation; where it cannot tell upright from upside down, text_strips_turns cuts
     both and the reader keeps the way its model reads with more confidence), the page rotated
     level (deskew);
  1. find the columns (layout.find_columns), then the text lines of each column in reading order:
     rows with ink, separated by blank rows (a projection profile);
  2. scale each line so its ink is as tall as a training line's (font ~0.6 H);
  3. cut it at word gaps into pieces that fit the strip's width (and its word count, if the model
     trained with a cap), each pasted left-aligned onto a white strip, with the most characters
     it can hold (the reader cuts longer answers there: a strip never reads as a page).

The pieces' texts are joined with spaces and the lines' with newlines (join_lines). This is classic
projection-profile segmentation, not a learned layout model: it assumes columns of straight text
(found by blank gutters, layout.py), level to within MAX_SKEW degrees once turned upright; curved
text, or columns without a clear gutter, come out in the wrong order or merged.
OpenCV does the image work (morphology, median, Otsu, components, rotation): each is one call of a
well-tested C++ routine where numpy would need loops. Models trained on square views (tiny ...
gundam) never use this module.
"""

import cv2
import numpy as np
from PIL import Image

from nanoocr.layout import find_columns, orientation
from nanoocr.layout import runs as _runs
from nanoocr.page import unwarp_page_mapped

INK_FRAC = 0.92      # ink height of a line with ascenders and descenders, in font sizes (measured on
                     # DejaVu / Liberation: ascender + descender ink ~0.9-0.95 em)
FONT_FRAC = 0.6      # the renderer's font size as a fraction of the strip height (synth: 0.55-0.65)
LEFT_MARGIN = 3      # pixels before the text in a strip (synth: 1-6 at H = 32)
INK_MAX = 0.72       # ink is darker than this fraction of the paper's brightness (faded print ~0.6)
MAX_SKEW = 5.0       # degrees of tilt the deskew search covers
MIN_CHAR_EM = 0.25   # the narrowest characters ('i', 'l', '.', ' ') advance ~0.25 em: a strip's text
                     # can hold at most its ink width / (MIN_CHAR_EM * font size) characters
PHOTO_SHARPEN = (2.0, 1.0)  # unsharp mask (amount, sigma in px) for a page cut out of a photo: its strokes
                            # are soft (focus, JPEG), and faint thin ones fall above the ink threshold;
                            # realistic:photos validation seeds 1-9 read at CER 0.21 without, 0.14 with
                            # (0.12 with unwarp_page's edge trim too);
                            # on seeds 1-6 1.0/1.0 0.15, 1.0/2.0 0.13, 2.0/1.0 0.13, 2.0/2.0 0.18
MIN_WORD_GAP = 0.15  # word gaps are at least this many line heights wide (letter gaps of proportional
                     # fonts stay below ~0.15; spaces are 0.17-0.35, in monospaced fonts ~0.7)


def _odd(n):
    return int(n) | 1


def _normalised(img, page=False):
    """RGB PIL image -> (RGB array, grey uint8 array with paper ~255 everywhere and dark ink).
    Paper is most of the image, so a dark median means light text on dark paper (inverted here),
    unless page=True: a page page.find_page cut out of a photo is paper brighter than the surface
    around it, however dim the light it was photographed in (its median can be far below 110).
    Uneven light (a photo's shading, a scanner's gradient): the paper's brightness at each pixel is
    a grey-level closing of the image (dark strokes narrower than the kernel vanish), blurred, and
    the image is divided by it."""
    rgb = np.asarray(img.convert("RGB"))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if not page and np.median(grey) < 110:
        grey = 255 - grey
    k = _odd(min(61, max(9, min(grey.shape) // 4)))
    paper = cv2.morphologyEx(grey, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    paper = cv2.GaussianBlur(paper, (k, k), 0).astype(np.float32)
    return rgb, np.clip(grey.astype(np.float32) / np.maximum(paper, 1.0) * 255, 0, 255).astype(np.uint8)


def _ink(norm):
    """Normalised grey (paper ~255) -> bool ink mask: a 3x3 median first (salt-and-pepper and JPEG
    specks), then Otsu's threshold, but never above INK_MAX of the paper, so paper with noise alone
    has no ink (a blank or noise-only image reads as empty); components of 1-2 pixels are dropped.
    In a photo of a page on a table, the table next to the page's edge is dark against the page's
    brightness: such bands (touching the image border, longer than half the image side and than
    4 median component heights) are paper to the threshold, which is then found again without them."""
    smooth = cv2.medianBlur(norm, 3) if min(norm.shape) >= 3 else norm
    for _ in range(4):
        otsu, _ = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # OpenCV's Otsu threshold is the top of the dark class (THRESH_BINARY keeps v > t): on a
        # bilevel scan (only 0 and 255) it is 0 itself, so the ink is v <= t, never v < t
        ink = smooth <= min(otsu, INK_MAX * 255)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
        x, y, w, h, area = (stats[:, i] for i in range(5))
        H, W = ink.shape
        med_h = np.median(h[1:]) if n > 1 else 0
        border = (x == 0) | (y == 0) | (x + w >= W) | (y + h >= H)
        # in an image many lines tall, nothing touching its border is text worth reading (a page's
        # text sits inside margins); in a tight crop letters may touch it, so only long bands go
        long = np.maximum(w, h) > 4 * med_h
        band = border & (((w > 0.5 * W) | (h > 0.5 * H)) & long | (min(H, W) > 8 * med_h))
        # long thin strokes anywhere (a page's edge, a rule): not letters
        band[0] = False
        # long thin strokes anywhere (a page's edge, a rule), often broken into dashes: closed along
        # each axis first so the pieces join; letters close into blobs as tall as a line, not thin
        k = max(9, int(2 * med_h))
        strokes = np.zeros_like(ink)
        for kernel in ((1, k), (k, 1)):
            closed = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_CLOSE, np.ones(kernel, np.uint8))
            m, lab2, st2, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
            cw, ch = st2[:, 2], st2[:, 3]
            thin = (np.maximum(cw, ch) > 4 * med_h) & ((cw > 0.3 * W) | (ch > 0.3 * H)) & (np.minimum(cw, ch) < 0.5 * med_h)
            thin[0] = False
            strokes |= thin[lab2]
        drop = band | (area <= 2)
        drop[0] = False
        if not band.any() and not (strokes & ink).any():
            break
        smooth = smooth.copy()
        smooth[band[labels] | (strokes & ink)] = 255
    return ink & ~drop[labels] if drop.any() else ink


def background_and_ink(img):
    """RGB PIL image -> (paper RGB tuple, bool ink mask [h, w]) (_normalised, _ink)."""
    rgb, norm = _normalised(img)
    ink = _ink(norm)
    paper = rgb[~ink] if (~ink).any() else rgb.reshape(-1, 3)
    return tuple(int(v) for v in np.median(paper, axis=0)), ink


def _rot90_matrix(k, w, h):
    """The 3x3 matrix of np.rot90(a, k) on pixel coordinates of a w x h image (counter-clockwise
    quarter turns; (x, y) -> (y, w - x) for one turn)."""
    M = np.eye(3)
    for _ in range(k % 4):
        M = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]], np.float64) @ M
        w, h = h, w
    return M


def box_back(H, box, size):
    """A box (left, top, right, bottom) in cleaned-image pixels -> the same box in the input image's
    pixels: its 4 corners through the inverse of H (input -> cleaned, clean_image_mapped), their
    axis-aligned bounding box, clipped to the input's size (w, h). Ints, right/bottom exclusive."""
    l, t, r, b = box
    pts = np.array([[[l, t]], [[r, t]], [[r, b]], [[l, b]]], np.float64)
    back = cv2.perspectiveTransform(pts, np.linalg.inv(H)).reshape(4, 2)
    w, h = size
    x0, y0 = np.clip(np.floor(back.min(0)), 0, [w, h])
    x1, y1 = np.clip(np.ceil(back.max(0)), 0, [w, h])
    return [int(x0), int(y0), int(x1), int(y1)]


def clean_image(img):
    """RGB PIL image -> (grey PIL image: paper 255, dark ink, level; its ink mask): what
    text_strips cuts. Pixels more than two away from ink are set to paper, so specks, shading and
    paper texture are gone while strokes keep their anti-aliased edges. A tilted image is rotated
    level by skew_angle(). A photographed page is first flattened (page.unwarp_page) and sharpened
    (PHOTO_SHARPEN)."""
    return clean_image_mapped(img)[:2]


def clean_image_mapped(img):
    """clean_image(img) + the 3x3 matrix H taking the input's pixel coordinates to the cleaned
    image's (flattening, a quarter turn, then the deskew's padding and rotation; identity for a level
    scan), so a box found in the cleaned image maps back to the user's pixels (box_back)."""
    flat, H = unwarp_page_mapped(img)
    _, norm = _normalised(flat, page=flat is not img)
    if flat is not img:  # a photographed page: its soft strokes sharpened to a scan's crisp ones
        amount, sigma = PHOTO_SHARPEN
        soft = cv2.GaussianBlur(norm.astype(np.float32), (0, 0), sigma)
        norm = np.clip(norm + amount * (norm - soft), 0, 255).astype(np.uint8)
    ink = _ink(norm)
    near = cv2.dilate(ink.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    norm[~near] = 255
    if ink.any():  # faint ink (a photo, a pencil, a worn ribbon) stretched to the dark ink training saw
        lo = float(np.percentile(norm[ink], 10))
        if lo > 10:
            norm = np.clip((norm.astype(np.float32) - lo) * (255 / max(1.0, 255 - lo)), 0, 255).astype(np.uint8)
    # a page turned by 90, 180 or 270 degrees is turned back first: deskew only levels a few degrees
    turned, sure = orientation(ink)
    if turned:
        H = _rot90_matrix(turned // 90, norm.shape[1], norm.shape[0]) @ H
        norm = np.ascontiguousarray(np.rot90(norm, turned // 90))
        ink = np.ascontiguousarray(np.rot90(ink, turned // 90))
    angle = skew_angle(ink)
    if abs(angle) >= 0.3:
        h, w = norm.shape
        pad = int(np.ceil(max(h, w) * np.sin(np.radians(abs(angle))))) + 2
        norm = cv2.copyMakeBorder(norm, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
        ink8 = cv2.copyMakeBorder(ink.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        M = cv2.getRotationMatrix2D((norm.shape[1] / 2, norm.shape[0] / 2), angle, 1.0)
        size = (norm.shape[1], norm.shape[0])
        norm = cv2.warpAffine(norm, M, size, flags=cv2.INTER_CUBIC, borderValue=255)
        ink = cv2.warpAffine(ink8, M, size, flags=cv2.INTER_NEAREST, borderValue=0) > 127
        shift = np.array([[1, 0, pad], [0, 1, pad], [0, 0, 1]], np.float64)
        H = np.vstack([M, [0, 0, 1]]) @ shift @ H
    out = Image.fromarray(norm)
    out.info["orientation"] = turned  # degrees the input was turned clockwise (layout.orientation)
    out.info["orientation_sure"] = sure  # False: upside down (turned + 180) is as likely (text_strips_turns)
    return out, ink, H


def skew_angle(ink):
    """Degrees to rotate (counter-clockwise, cv2's sign) so text lines are level: the angle in
    [-MAX_SKEW, MAX_SKEW] (steps of 0.25) under which the ink's row profile is most peaked (sum of
    squared row counts, per column: level lines pile their ink into few rows). Computed on up to
    4000 ink pixels' (per column) rotated coordinates, not by rotating the image (~0.5 ms instead
    of ~8 ms per line).
    0 for images with too little ink to tell; ties keep the smaller angle."""
    ys, xs = np.nonzero(ink)
    if len(xs) < 50:
        return 0.0
    # rows are counted per column (layout.find_columns): the lines of two columns are offset by
    # their paragraph gaps, and on the whole page a tilt that lines up one column's lines with
    # the other's can pile up more ink than level does. Each column's rows need as many sampled
    # pixels as one image's did, or the counts are mostly sampling noise.
    columns = find_columns(ink)
    step = max(1, len(xs) // (4000 * len(columns)))
    x, y = xs[::step].astype(np.float64), ys[::step].astype(np.float64)
    region = np.zeros(ink.shape, np.int64)
    for k, (x0, y0, x1, y1) in enumerate(columns):
        region[y0:y1, x0:x1] = k
    region = region[ys[::step], xs[::step]]
    best, best_a = -1.0, 0.0
    for a in sorted(np.arange(-MAX_SKEW, MAX_SKEW + 1e-6, 0.25), key=abs):
        r = np.radians(a)
        rows = np.rint(-np.sin(r) * x + np.cos(r) * y).astype(np.int64)
        rows -= rows.min()
        score = float((np.bincount(region * (rows.max() + 1) + rows).astype(np.float64) ** 2).sum())
        if score > best * (1 + 1e-9):
            best, best_a = score, float(a)
    return best_a


def find_lines(ink):
    """Ink mask -> [(top, bottom)] row ranges of text lines, top to bottom. Rows with ink form runs;
    a thin run close to a neighbour (the dots over i and j, an accent, a stray speck line) joins it;
    a run much taller than the others (two lines touching) is split at its emptiest rows."""
    h, w = ink.shape
    counts = ink.sum(1)
    runs = [r for r in _runs(counts > 0) if ink[r[0]:r[1]].sum() >= 3]  # single specks are noise
    if not runs:
        return []
    # a line's height: the median run height weighted by ink, so a one-line crop's few thin runs
    # (i-dots, accents: little ink) do not set the scale
    heights = np.array([b - t for t, b in runs], np.float64)
    inked = np.array([counts[t:b].sum() for t, b in runs], np.float64)
    order = np.argsort(heights)
    med = float(heights[order][np.searchsorted(np.cumsum(inked[order]), inked.sum() / 2)])
    merged = []
    for t, b in runs:  # join thin runs to a neighbour less than half a line away
        if merged and (b - t < 0.4 * med or merged[-1][1] - merged[-1][0] < 0.4 * med) and t - merged[-1][1] < 0.5 * med:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((t, b))
    # one line's height: the shortest run (a page may be mostly touching lines, so not the median)
    # that is not a fragment (the thin runs left unjoined above: rules, underlines, specks)
    med = float(np.median([b - t for t, b in merged]))
    one = min(b - t for t, b in merged if b - t >= 0.4 * med)
    lines = []
    for t, b in merged:
        k = int(round((b - t) / one))
        if k < 2 or (b - t) < 1.6 * one:
            lines.append((t, b))
            continue
        # cut near each expected boundary, at the row with the least ink -- if that row is nearly
        # empty: where lines touch only descenders meet ascenders, while the middle of one tall
        # line (a heading next to short lines of "one or so") is its dense x-height band
        cuts, step, win, peak = [t], (b - t) / k, max(1, int(0.25 * one)), counts[t:b].max()
        for i in range(1, k):
            c = int(t + i * step)
            lo, hi = max(cuts[-1] + 1, c - win), min(b - 1, c + win)
            if hi >= lo:
                cut = lo + int(np.argmin(counts[lo:hi + 1]))
                if counts[cut] < 0.3 * peak:
                    cuts.append(cut)
        cuts.append(b)
        lines.extend((cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1))
    lines = [(t, b) for t, b in lines if b > t]
    if len(lines) > 1:  # a row of thin marks on its own (a rule's remains, dashes of a page edge): no text
        lines = [(t, b) for t, b in lines if b - t >= 0.35 * med]
    return lines


def column_lines(ink):
    """Ink mask -> [(x0, top, x1, bottom)]: the text lines of each column region
    (layout.find_columns) in reading order, column by column, as the region's columns x0..x1 and
    the line's rows top..bottom in the mask's own pixels (ends exclusive). Without columns, the one
    region is the whole mask: find_lines(ink) with x0 = 0, x1 = width."""
    return [(x0, y0 + t, x1, y0 + b) for x0, y0, x1, y1 in find_columns(ink)
            for t, b in find_lines(ink[y0:y1, x0:x1])]


def word_gap(gaps, line_h):
    """The blank width (pixels) from which a gap between ink runs separates words. Gaps in a line
    are bimodal, between letters and between words, and where the modes sit depends on the font
    (a monospaced font's letter gaps are as wide as a proportional font's spaces), so the line's
    own gaps are split in two by the threshold that best separates them (Otsu's criterion). If
    they do not separate (one word, or one kind of gap), only gaps wider than 0.3 line heights count.
    Too high a threshold merges words, which costs little (pieces still fit the strip); too low
    splits words apart."""
    g = np.sort(np.asarray(gaps, dtype=np.float64))
    fallback = 0.3 * line_h
    if len(g) < 2:
        return fallback
    best, thr = -1.0, fallback
    for i in range(1, len(g)):
        if g[i] == g[i - 1]:
            continue
        lo, hi = g[:i], g[i:]
        between = len(lo) * len(hi) * (hi.mean() - lo.mean()) ** 2
        if between > best:
            best, thr, ratio = between, (g[i - 1] + g[i]) / 2, hi.mean() / max(lo.mean(), 0.5)
    if best < 0 or ratio < 1.6 or thr < MIN_WORD_GAP * line_h:
        return fallback
    return thr


def find_words(ink_line):
    """Ink mask of one line -> [(left, right)] column ranges of words: runs of inked columns
    joined across gaps narrower than word_gap()."""
    segs = _runs(ink_line.any(0))
    gaps = [segs[i + 1][0] - segs[i][1] for i in range(len(segs) - 1)]
    gap = word_gap(gaps, ink_line.shape[0])
    words = []
    for l, r in segs:
        if words and l - words[-1][1] < gap:
            words[-1] = (words[-1][0], r)
        else:
            words.append((l, r))
    return words


def _pieces(words, scale, width, max_words):
    """Greedily pack word column ranges into pieces whose scaled width fits `width` pixels and that
    hold at most max_words words (0 = no cap). A word too wide on its own becomes its own piece."""
    pieces = []
    for l, r in words:
        if pieces:
            pl, _, n = pieces[-1]
            if (r - pl) * scale <= width and (not max_words or n < max_words):
                pieces[-1] = (pl, r, n + 1)
                continue
        pieces.append((l, r, 1))
    return [(l, r) for l, r, _ in pieces]


def text_strips(img, height, width, max_words=0):
    """An RGB PIL image -> [(line index, strip)]: height x width RGB strips in reading order, each
    one piece of one text line, cut from clean_image() (level, paper white, specks gone) and scaled
    and placed like the renderer's one-line samples. An image with no ink gives []. A piece still
    wider than the strip after scaling (one very long word) is squeezed to fit, which the model
    reads worse but does not drop. Each strip's info["max_chars"] is the most characters its ink can
    hold (MIN_CHAR_EM): the reader cuts a longer answer there, so a strip never reads as a page.
    Each strip's info["box"] is its piece's ink box and info["line_box"] its whole line's, both
    [left, top, right, bottom] in the pixels of `img` as given (mapped back through the flattening
    and the deskew by box_back; a tilted line's box is the upright box around it)."""
    return text_strips_turns(img, height, width, max_words)[0]


def text_strips_turns(img, height, width, max_words=0):
    """(text_strips(img, ...), the other way up): where layout.orientation found the page's lines
    but could not tell upright from upside down (clean_image's info["orientation_sure"] False), the
    second value is the strips of the same cleaned page turned by a further 180 degrees (boxes
    still in the pixels of `img`), for a reader with a model to choose between
    (reader.settle_turn); None where the orientation is sure. Cleaning runs once either way."""
    grey, ink, H = clean_image_mapped(img)
    strips = _cut(grey, ink, H, img.size, height, width, max_words)
    if grey.info["orientation_sure"] or not strips:
        return strips, None
    h, w = ink.shape
    flipped = Image.fromarray(np.ascontiguousarray(np.asarray(grey)[::-1, ::-1]))
    flipped.info.update(grey.info, orientation=(grey.info["orientation"] + 180) % 360)
    H2 = _rot90_matrix(2, w, h) @ H
    return strips, _cut(flipped, np.ascontiguousarray(ink[::-1, ::-1]), H2, img.size, height, width, max_words)


def _cut(grey, ink, H, size, height, width, max_words):
    """text_strips on a cleaned page: grey (PIL L), its ink mask, H (input pixels -> these), size
    (w, h) of the input the boxes map back to."""
    lines = column_lines(ink)
    if not lines:
        return []
    # one scale for the whole image from the median line height: most lines of prose have both
    # ascenders and descenders, a single line of "one mean sum" does not and would be blown up
    line_h = float(np.median([b - t for _, t, _, b in lines]))
    scale = FONT_FRAC * INK_FRAC * height / line_h
    room = width - 2 * LEFT_MARGIN
    strips = []
    for li, (x0, t, x1, b) in enumerate(lines):
        words = [(l + x0, r + x0) for l, r in find_words(ink[t:b, x0:x1])]
        line_box = box_back(H, (words[0][0], t, words[-1][1], b), size) if words else None
        for l, r in _pieces(words, scale, room, max_words):
            nw = max(1, round((r - l) * scale))
            nh = max(1, round((b - t) * scale))
            cap = int(np.ceil(nw / (MIN_CHAR_EM * FONT_FRAC * height))) + 1
            if nw > room:  # one word wider than the strip: squeeze it (keeps its height)
                nw = room
            if nh > height - 2:
                nh = height - 2
            piece = grey.resize((nw, nh), Image.BICUBIC, box=(l, t, r, b))
            canvas = Image.new("L", (width, height), 255)
            canvas.paste(piece, (LEFT_MARGIN, (height - nh) // 2))
            canvas = canvas.convert("RGB")
            canvas.info["max_chars"] = cap
            rows = np.flatnonzero(ink[t:b, l:r].any(1))  # the piece's own ink rows: a word group's box is tight
            canvas.info["box"] = box_back(H, (l, t + rows[0], r, t + rows[-1] + 1), size)
            canvas.info["line_box"] = line_box
            strips.append((li, canvas))
    return strips


def join_lines(texts, line_ids):
    """Texts of strips in reading order + their line indices -> one text: a line's pieces joined
    with spaces, lines with newlines."""
    lines = {}
    for text, li in zip(texts, line_ids):
        lines.setdefault(li, []).append(text.strip())
    return "\n".join(" ".join(t for t in parts if t) for _, parts in sorted(lines.items()))
