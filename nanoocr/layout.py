"""
Cutting a text image into the one-line strips a strip model reads.

The CPU recipe trains on 32x256 strips: one line of at most a few words, its letters ~0.6 of the
strip's height, left-aligned on plain paper. Any other image stretched to 32x256 is unreadable to
it: a long line is squashed sideways, a paragraph becomes grey mush. So before reading, an image
of another size is cut the way the model saw text in training:

  1. find the text lines: rows with ink, separated by blank rows (a projection profile);
  2. scale each line so its ink is as tall as a training line's (font ~0.6 H);
  3. cut it at word gaps into pieces that fit the strip's width (and its word count, if the model
     trained with a cap), each pasted left-aligned onto a strip of the page's own background.

The pieces' texts are joined with spaces and the lines' with newlines (join_lines). This is classic
projection-profile segmentation, not a learned layout model: it assumes one column of level text on
a fairly even background (dark on light or light on dark); skewed, curved or multi-column text comes
out in the wrong order or merged. Models trained on square views (tiny ... gundam) never use it.
"""

import numpy as np
from PIL import Image

INK_FRAC = 0.92      # ink height of a line with ascenders and descenders, in font sizes (measured on
                     # DejaVu / Liberation: ascender + descender ink ~0.9-0.95 em)
FONT_FRAC = 0.6      # the renderer's font size as a fraction of the strip height (synth: 0.55-0.65)
LEFT_MARGIN = 3      # pixels before the text in a strip (synth: 1-6 at H = 32)
MIN_WORD_GAP = 0.15  # word gaps are at least this many line heights wide (letter gaps of proportional
                     # fonts stay below ~0.15; spaces are 0.17-0.35, in monospaced fonts ~0.7)


def _runs(flags):
    """[(start, end)] of the runs of True in a 1-D bool array (end exclusive)."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    d = np.flatnonzero(f[1:] != f[:-1])
    return list(zip(d[0::2].tolist(), d[1::2].tolist()))


def background_and_ink(img):
    """RGB PIL image -> (background RGB tuple, bool ink mask [h, w]). The background is the median
    of the border pixels; ink is what differs from it by more than a third of the strongest contrast
    in the image (and at least 32 grey levels, so paper texture and JPEG noise stay background)."""
    rgb = np.asarray(img.convert("RGB"))
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg_rgb = tuple(int(v) for v in np.median(border, axis=0))
    bg = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    diff = np.abs(grey - bg)
    thr = max(32.0, float(np.percentile(diff, 99.9)) / 3)
    return bg_rgb, diff > thr


def find_lines(ink):
    """Ink mask -> [(top, bottom)] row ranges of text lines, top to bottom. Rows with ink form runs;
    a thin run close to a neighbour (the dots over i and j, an accent, a stray speck line) joins it;
    a run much taller than the others (two lines touching) is split at its emptiest rows."""
    h, w = ink.shape
    counts = ink.sum(1)
    runs = [r for r in _runs(counts > 0) if ink[r[0]:r[1]].sum() >= 3]  # single specks are noise
    if not runs:
        return []
    med = float(np.median([b - t for t, b in runs]))
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
    return [(t, b) for t, b in lines if b > t]


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
    one piece of one text line scaled and placed like the renderer's one-line samples. An image with
    no ink gives []. A piece still wider than the strip after scaling (one very long word) is
    squeezed to fit, which the model reads worse but does not drop."""
    bg, ink = background_and_ink(img)
    lines = find_lines(ink)
    if not lines:
        return []
    # one scale for the whole image from the median line height: most lines of prose have both
    # ascenders and descenders, a single line of "one mean sum" does not and would be blown up
    line_h = float(np.median([b - t for t, b in lines]))
    scale = FONT_FRAC * INK_FRAC * height / line_h
    room = width - 2 * LEFT_MARGIN
    strips = []
    for li, (t, b) in enumerate(lines):
        words = find_words(ink[t:b])
        for l, r in _pieces(words, scale, room, max_words):
            nw = max(1, round((r - l) * scale))
            nh = max(1, round((b - t) * scale))
            if nw > room:  # one word wider than the strip: squeeze it (keeps its height)
                nw = room
            if nh > height - 2:
                nh = height - 2
            piece = img.resize((nw, nh), Image.BICUBIC, box=(l, t, r, b))
            canvas = Image.new("RGB", (width, height), bg)
            canvas.paste(piece, (LEFT_MARGIN, (height - nh) // 2))
            strips.append((li, canvas))
    return strips


def join_lines(texts, line_ids):
    """Texts of strips in reading order + their line indices -> one text: a line's pieces joined
    with spaces, lines with newlines."""
    lines = {}
    for text, li in zip(texts, line_ids):
        lines.setdefault(li, []).append(text.strip())
    return "\n".join(" ".join(t for t in parts if t) for _, parts in sorted(lines.items()))
